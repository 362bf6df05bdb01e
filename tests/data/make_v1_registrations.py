"""Record what a previous version of the program registers, for tests/test_hetzner.py's upgrade checks.

    python tests/data/make_v1_registrations.py COMMIT > tests/data/v1-registrations.json

Exports COMMIT's tree from this repository's git history into a temporary directory and runs THAT
tree's ``__main__.py`` under THAT tree's own mock engine (components/mockengine.py) in a child Python,
once per config below (built from that tree's Pulumi.example.yaml). Recorded per registration: type,
name, URN, parent, inputs and options; secret inputs (the user-data) as ``[secret]``: a mock host key
differs between processes, so a secret's value is never compared (ignoreChanges must cover it).
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Runs inside the exported tree: only its own modules and the shared venv's SDKs.
CHILD = r"""
import copy, json, sys
import yaml
from cloudinit import stackconfig
from components import mockengine

plain, _ = stackconfig.from_stack_file(yaml.safe_load(open("Pulumi.example.yaml")))
rebuild = copy.deepcopy(plain)
rebuild["servers"][0]["rebuild"] = True
fleet = copy.deepcopy(plain)
fleet["servers"] += [{"name": n, "labels": {"role": "web"}} for n in ("web-2", "web-3")]
out = {}
for name, config in {"example": plain, "example-rebuild": rebuild, "fleet": fleet}.items():
    run = mockengine.run(config)
    out[name] = {
        "config": config,
        "registrations": [
            {"type": r.type, "name": r.name, "urn": r.urn, "parent": r.parent, "custom": r.custom,
             "inputs": mockengine.redact(r.inputs), "options": r.options}
            for r in sorted(run.registrations, key=lambda r: r.urn)  # registration order varies between runs
        ],
    }
json.dump(out, sys.stdout, indent=1, sort_keys=True)
"""


def main(commit: str) -> None:
    def git(*args: str) -> bytes:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, check=True).stdout

    full = git("rev-parse", commit).decode().strip()
    date = git("show", "-s", "--format=%cI", full).decode().strip()
    archive = git("archive", "--format=tar", full)
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        done = subprocess.run([sys.executable, "-c", CHILD], cwd=tmp, env={"PYTHONPATH": tmp, "PATH": "/usr/bin:/bin"},
                              capture_output=True, text=True, check=False, timeout=300)
    if done.returncode != 0:
        sys.exit(f"the program at {full[:12]} failed under its mock engine:\n{done.stderr}")
    result = {
        "origin": {
            "commit": full,
            "committed": date,
            "recorded": datetime.date.today().isoformat(),
            "how": f"python tests/data/make_v1_registrations.py {full[:7]} (that tree's program under that tree's mock engine)",
        },
        "configs": json.loads(done.stdout),
    }
    json.dump(result, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
