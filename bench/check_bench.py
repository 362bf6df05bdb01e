"""3. ``vpsctl check`` on the example stack, end to end (a fresh interpreter each run)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bench.report import Row, Section, median

ROOT = Path(__file__).resolve().parent.parent
BAR_S = 3.0
COMMAND = ("-m", "vpsctl", "check", "--config", "Pulumi.example.yaml")


def run(runs: int) -> Section:
    section = Section("`vpsctl check` on the example stack")
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, *COMMAND], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
        times.append(time.perf_counter() - start)
        if done.returncode not in (0, 1) or "NotImplementedError" in done.stderr:
            section.available = False
            section.rows = [Row("end to end", "not available yet", f"<= {BAR_S:g} s")]
            last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
            section.detail = [f"`python {' '.join(COMMAND)}` exited {done.returncode}: `{last}`"]
            return section
    took = median(times)
    section.rows = [Row("end to end", f"{took:.2f} s", f"<= {BAR_S:g} s", took <= BAR_S)]
    section.detail = [
        f"`python {' '.join(COMMAND)}` as a subprocess from the repository root, median of {runs} runs",
        f"(interpreter start, imports, the program under the mock engine, the policy pack): "
        f"{', '.join(f'{t:.2f}' for t in times)} s. Exit status of the last run: {done.returncode}.",
    ]
    return section
