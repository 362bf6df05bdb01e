"""`make lab`'s entry point on bad input: one line naming the setting, exit 2, no traceback, no VM."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_missing_config_is_one_line_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "Pulumi.nope.yaml"
    done = subprocess.run([sys.executable, "-m", "lab", "--config", str(missing)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"lab: error: --config: cannot read {missing}: No such file or directory"]
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_bad_setting_is_one_line_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "Pulumi.bad.yaml"
    config.write_text((ROOT / "Pulumi.example.yaml").read_text().replace("sshPort: 22", "sshPort: 70000"))
    done = subprocess.run([sys.executable, "-m", "lab", "--config", str(config)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "servers[0].sshPort" in done.stderr and "70000" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
