"""One measurement in a fresh interpreter: ``python -m bench.child PROGRAM SERVERS ADMINS MEMORY``.

PROGRAM is ``ours`` (the real ``__main__.py``) or ``baseline`` (bench/baseline.py); MEMORY is ``rss``
(time the run; report the process's peak resident set), ``tracemalloc`` (trace the run's Python
allocations; tracing slows the run, so its time is not used) or ``nogc`` (time the run with the cyclic
garbage collector off: the cost of the code alone, without CPython's full collections). Prints one
JSON object.

Both programs run through the same ``components.mockengine.run``. Everything both need is imported
before the clock starts (the mock engine lives in ``components``, so that includes our modules), so
the time is the program evaluation itself: config, validation, registration, rendering, outputs.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time
import tracemalloc
from typing import Any


def shape(registrations: list[Any]) -> list[list[Any]]:
    """What must be equal between the two programs: per (type, parent's type, secret outputs asked
    for, custom?) the number of registrations."""
    type_of = {r.urn: r.type for r in registrations}
    counts: dict[tuple[str, str, str, bool], int] = {}
    for r in registrations:
        key = (r.type, type_of.get(r.parent, "pulumi:pulumi:Stack"), ",".join(r.options["additionalSecretOutputs"]), r.custom)
        counts[key] = counts.get(key, 0) + 1
    return [[*k, n] for k, n in sorted(counts.items())]


def _time_calls(spent: dict[str, float]) -> None:
    """Accumulate the time spent in our two heavy pure functions (looked up through their modules at
    call time, so wrapping the module attribute catches every call, the size check's render too)."""
    from cloudinit import enrollment, render

    def timed(module: Any, attr: str, label: str) -> None:
        inner = getattr(module, attr)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - start

        setattr(module, attr, wrapper)

    timed(enrollment, "terminal_qr", "qr")
    timed(render, "render_user_data", "render")


def measure(program: str, servers: int, admins: int, memory: str, user_data_bytes: int) -> dict[str, Any]:
    from bench import baseline
    from components import mockengine
    from tests.configs import fleet

    config: dict[str, Any] = {}
    body = None
    spent: dict[str, float] = {}
    if program == "ours":
        config = fleet(servers, admins)
        _time_calls(spent)
    elif program == "baseline":
        body = baseline.program(servers, admins, user_data_bytes)
    else:
        raise SystemExit(f"unknown program {program!r}")
    if memory == "tracemalloc":
        tracemalloc.start()
    elif memory == "nogc":
        gc.disable()
    wall, cpu = time.perf_counter(), time.process_time()
    run = mockengine.run(config, program=body)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = tracemalloc.get_traced_memory()[1] if memory == "tracemalloc" else None
    tracemalloc.stop()
    return {
        "program": program,
        "servers": servers,
        "admins": admins,
        "memory": memory,
        "registrations": len(run.registrations),
        "shape": shape(run.registrations),
        "wall_s": wall,
        "cpu_s": cpu,
        "tracemalloc_peak_bytes": peak,
        "spent_s": spent,
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,  # Linux: KiB
    }


def main(argv: list[str]) -> int:
    program, servers, admins, memory = argv[0], int(argv[1]), int(argv[2]), argv[3]
    user_data_bytes = int(argv[4]) if len(argv) > 4 else 0
    print(json.dumps(measure(program, servers, admins, memory, user_data_bytes)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
