"""One measurement in a fresh interpreter: ``python -m bench.child PROGRAM SERVERS ADMINS MEMORY [BYTES [WITHOUT]]``.

PROGRAM is ``ours`` (the real ``__main__.py``) or ``baseline`` (bench/baseline.py); MEMORY is ``rss``
(time the run; report the process's peak resident set), ``tracemalloc`` (trace the run's Python
allocations; tracing slows the run, so its time is not used) or ``nogc`` (time the run with the cyclic
garbage collector off: the cost of the code alone, without CPython's full collections). WITHOUT
(``ours`` only, comma-separated): parts of our work replaced by constants, to see what each costs (an
ablation; such a run is never a result, only a difference against the real one). Prints one JSON object.

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
from collections.abc import Sequence
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


def _without(parts: Sequence[str], user_data_bytes: int) -> None:
    """Replace parts of our work by constants of the same size (an ablation, see the module doc)."""
    if not parts:  # the real program: nothing to prepare
        return
    import pulumi

    from cloudinit import enrollment, render
    from components import bootstrap_key, firewalls, program, totp_server

    qr = enrollment.terminal_qr(enrollment.otpauth_uri("A" * 32, "fleet", "admin0@srv-0"))
    user_data = "#cloud-config\n" + "#" * max(0, user_data_bytes - 14)
    build = program.build
    constants: dict[str, list[tuple[Any, str, Any]]] = {
        # the terminal QR codes
        "qr": [(enrollment, "terminal_qr", lambda uri: qr)],
        # both renders: the pre-registration size check and the user-data
        "render": [(render, "check_fits", lambda server: None), (render, "render_user_data", lambda *args: user_data)],
        # no component outputs and no stack exports, as in the baseline
        "outputs": [
            (program, "build", lambda: (build(), {})[1]),
            *((component, "register_outputs", lambda self, outputs: pulumi.ComponentResource.register_outputs(self, {}))
              for component in (totp_server.TotpServer, firewalls.SharedFirewalls, bootstrap_key.BootstrapKey)),
        ],
    }
    for part in parts:
        if part not in constants:
            raise SystemExit(f"unknown part {part!r}: one of {', '.join(constants)}")
        for owner, attr, constant in constants[part]:
            setattr(owner, attr, constant)


def measure(
    program: str, servers: int, admins: int, memory: str, user_data_bytes: int, without: Sequence[str] = ()
) -> dict[str, Any]:
    from bench import baseline
    from components import mockengine
    from tests.configs import fleet

    config: dict[str, Any] = {}
    body = None
    spent: dict[str, float] = {}
    if program == "ours":
        config = fleet(servers, admins)
        _without(without, user_data_bytes)
        _time_calls(spent)
    elif program == "baseline":
        body = baseline.program(servers, admins, user_data_bytes)
    else:
        raise SystemExit(f"unknown program {program!r}")
    if memory == "tracemalloc":
        tracemalloc.start()
    elif memory == "nogc":
        gc.disable()
    wall, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
    run = mockengine.run(config, program=body)
    wall, cpu, main = time.perf_counter() - wall, time.process_time() - cpu, time.thread_time() - main
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
        "main_cpu_s": main,  # the program's own thread; the mock engine's monitor calls run in a pool
        "tracemalloc_peak_bytes": peak,
        "spent_s": spent,
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,  # Linux: KiB
    }


def main(argv: list[str]) -> int:
    program, servers, admins, memory = argv[0], int(argv[1]), int(argv[2]), argv[3]
    user_data_bytes = int(argv[4]) if len(argv) > 4 else 0
    without = [p for p in argv[5].split(",") if p] if len(argv) > 5 else []
    print(json.dumps(measure(program, servers, admins, memory, user_data_bytes, without)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
