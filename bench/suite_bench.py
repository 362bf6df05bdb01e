"""7. The whole test suite (`make test`: ruff, mypy, pytest with the VM boots), timed once.

Not part of a default run (it takes minutes and boots VMs): ``python -m bench --only suite``."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from bench.report import Row, Section

ROOT = Path(__file__).resolve().parent.parent
# With cached VM images, on the 2-CPU machines the project's CI runs on (four guests under software emulation).
BAR_S = 12 * 60
BAR = f"<= {BAR_S // 60} min"


def skipped() -> Section:
    return Section("Whole test suite (`make test`)", [Row("with cached VM images", "not measured in this run", BAR)],
                   ["Takes minutes and boots VMs: measure it on its own with `python -m bench --only suite`",
                    "(or `time make test`), with the lab images already cached and nothing else running."])


def run() -> Section:
    start = time.perf_counter()
    done = subprocess.run(["make", "test"], cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False,
                          env={**os.environ, "CI": "true"})
    took = time.perf_counter() - start
    tail = [line for line in done.stdout.splitlines() if line.startswith("=")][-1:] or ["(no pytest summary)"]
    section = Section("Whole test suite (`make test`)")
    section.rows = [Row("with cached VM images", f"{took / 60:.1f} min (exit {done.returncode})", BAR, took <= BAR_S)]
    section.detail = [f"`make test` with CI=true (a skipped real test fails), once: {tail[0]}"]
    return section
