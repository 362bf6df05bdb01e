"""1. Program evaluation under the mock engine: ours against the bare baseline (bench/baseline.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.report import Row, Section, median, table

ROOT = Path(__file__).resolve().parent.parent
SIZES = (1, 10, 100)
ADMINS = 3
TIME_RATIO_BAR = 1.3
MEMORY_RATIO_BAR = 1.5
LINEAR_BAR = 12.0


def child(program: str, servers: int, memory: str, user_data_bytes: int, without: tuple[str, ...] = ()) -> dict[str, Any]:
    """One measurement in a fresh interpreter (nothing shared: imports, caches, heap)."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.child", program, str(servers), str(ADMINS), memory, str(user_data_bytes),
         ",".join(without)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench.child {program} {servers} failed:\n{out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(runs: int, user_data_bytes: int) -> Section:
    section = Section("Program evaluation (mock engine)")
    timed: dict[tuple[str, int], list[dict[str, Any]]] = {}
    traced: dict[tuple[str, int], list[dict[str, Any]]] = {}
    nogc: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for servers in SIZES:
        for _ in range(runs):  # interleaved, so drift in machine load hits both programs alike
            for program in ("ours", "baseline"):
                timed.setdefault((program, servers), []).append(child(program, servers, "rss", user_data_bytes))
        for _ in range(max(1, runs // 2)):
            for program in ("ours", "baseline"):
                traced.setdefault((program, servers), []).append(child(program, servers, "tracemalloc", user_data_bytes))
                nogc.setdefault((program, servers), []).append(child(program, servers, "nogc", user_data_bytes))
        if timed[("ours", servers)][0]["shape"] != timed[("baseline", servers)][0]["shape"]:
            raise RuntimeError(f"baseline registers other resources than the program at {servers} servers")

    def med(table_: dict[tuple[str, int], list[dict[str, Any]]], program: str, servers: int, key: str) -> float:
        return median([m[key] for m in table_[(program, servers)]])

    rows: list[tuple[object, ...]] = []
    memory_rows: list[tuple[object, ...]] = []
    for servers in SIZES:
        t_ours, t_base = med(timed, "ours", servers, "wall_s"), med(timed, "baseline", servers, "wall_s")
        c_ours, c_base = med(timed, "ours", servers, "cpu_s"), med(timed, "baseline", servers, "cpu_s")
        r_ours, r_base = med(timed, "ours", servers, "maxrss_kib"), med(timed, "baseline", servers, "maxrss_kib")
        h_ours = med(traced, "ours", servers, "tracemalloc_peak_bytes")
        h_base = med(traced, "baseline", servers, "tracemalloc_peak_bytes")
        g_ours, g_base = med(nogc, "ours", servers, "wall_s"), med(nogc, "baseline", servers, "wall_s")
        qr = median([m["spent_s"].get("qr", 0.0) for m in timed[("ours", servers)]])
        rendering = median([m["spent_s"].get("render", 0.0) for m in timed[("ours", servers)]])
        size = f"{servers} x {ADMINS} ({timed[('ours', servers)][0]['registrations']} resources)"
        rows.append((
            size, f"{t_ours:.3f}", f"{t_base:.3f}", f"{t_ours / t_base:.2f}", f"{c_ours / c_base:.2f}",
            f"{qr:.3f}", f"{rendering:.3f}", f"{g_ours:.3f}", f"{g_base:.3f}", f"{g_ours / g_base:.2f}",
        ))
        memory_rows.append((
            size, f"{h_ours / 2**20:.1f}", f"{h_base / 2**20:.1f}", f"{h_ours / h_base:.2f}",
            f"{r_ours / 1024:.0f}", f"{r_base / 1024:.0f}", f"{r_ours / r_base:.2f}",
        ))
        if servers == SIZES[-1]:
            time_ratio, heap_ratio, rss_ratio = t_ours / t_base, h_ours / h_base, r_ours / r_base
    t10, t100 = med(timed, "ours", 10, "wall_s"), med(timed, "ours", 100, "wall_s")
    b10, b100 = med(timed, "baseline", 10, "wall_s"), med(timed, "baseline", 100, "wall_s")
    g10, g100 = med(nogc, "ours", 10, "wall_s"), med(nogc, "ours", 100, "wall_s")
    section.rows = [
        Row("1 / 10 / 100 servers x 3 admins, wall time",
            " / ".join(f"{med(timed, 'ours', s, 'wall_s'):.2f} s" for s in SIZES)),
        Row("time vs baseline at 100 servers", f"{time_ratio:.2f} x", f"<= {TIME_RATIO_BAR}", time_ratio <= TIME_RATIO_BAR),
        Row("peak heap (tracemalloc) vs baseline at 100", f"{heap_ratio:.2f} x", f"<= {MEMORY_RATIO_BAR}",
            heap_ratio <= MEMORY_RATIO_BAR),
        Row("peak RSS vs baseline at 100", f"{rss_ratio:.2f} x", f"<= {MEMORY_RATIO_BAR}", rss_ratio <= MEMORY_RATIO_BAR),
        Row("100-server time / 10-server time",
            f"{t100 / t10:.1f} x (baseline {b100 / b10:.1f} x; ours with GC off: {g100 / g10:.1f} x)",
            f"<= {LINEAR_BAR:g}", t100 / t10 <= LINEAR_BAR),
    ]
    section.detail = [
        f"Medians of {runs} fresh interpreters per program and size for time and RSS, "
        f"{max(1, runs // 2)} more for the heap (tracing slows a run, so those are not timed); "
        "ours and the baseline alternate, so a change in machine load hits both.",
        "",
        *table(
            ("servers x admins", "ours s", "baseline s", "time ratio", "CPU ratio", "of ours: QR s", "of ours: render s",
             "GC off: ours s", "GC off: baseline s", "GC off: ratio"),
            rows,
        ),
        "",
        *table(("servers x admins", "ours heap MiB", "baseline heap MiB", "heap ratio", "ours RSS MiB", "baseline RSS MiB",
                "RSS ratio"), memory_rows),
        "",
        "- Time: wall time of `mockengine.run()` in the child, after the imports both programs share.",
        "  \"of ours\": time inside `enrollment.terminal_qr` (zxing-cpp) and `render.render_user_data` (the",
        "  size check's render included). \"GC off\": the same runs with `gc.disable()` in both children",
        f"  ({max(1, runs // 2)} each): the code's own cost; 100/10 with GC off: ours {g100 / g10:.1f} x.",
        "- Heap: `tracemalloc` peak over the run, the Python memory the evaluation itself needs; the bar is",
        "  judged on it and on RSS. RSS (`ru_maxrss` of the child) is what the machine sees, but ~60 MiB",
        "  of it is the interpreter and the SDKs, common to both, which would hide a heap that doubled.",
        f"- Baseline: `bench/baseline.py`, the same {timed[('ours', 100)][0]['registrations']} registrations at 100 servers",
        "  (type tokens, parents, `depends_on`, secret outputs: checked equal per run), constant inputs and",
        f"  a constant {user_data_bytes}-byte user-data, no outputs; it runs through the same mock engine.",
    ]
    section.detail += ["", *_ablation(runs, user_data_bytes)]
    return section


# What each part of our work costs at 100 servers: the same program with that part replaced by a
# constant (bench/child.py). "outputs": no component outputs and no stack exports, as in the baseline.
ABLATIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ours", ()),
    ("without the terminal QR codes", ("qr",)),
    ("without rendering (size check + user-data)", ("render",)),
    ("without outputs and exports", ("outputs",)),
    ("without all three", ("qr", "render", "outputs")),
)


def _ablation(runs: int, user_data_bytes: int) -> list[str]:
    servers = SIZES[-1]
    measured: dict[str, list[dict[str, Any]]] = {}
    for _ in range(runs):  # interleaved, like the main table
        for label, without in ABLATIONS:
            measured.setdefault(label, []).append(child("ours", servers, "rss", user_data_bytes, without))
        measured.setdefault("baseline", []).append(child("baseline", servers, "rss", user_data_bytes))

    def med(label: str, key: str) -> float:
        return median([m[key] for m in measured[label]])

    base, ours = med("baseline", "wall_s"), med("ours", "wall_s")
    ours_cpu, base_cpu = med("ours", "main_cpu_s"), med("baseline", "main_cpu_s")
    rows = [
        (label, f"{med(label, 'wall_s'):.3f}", f"{med(label, 'wall_s') - ours:+.3f}",
         f"{med(label, 'main_cpu_s'):.3f}", f"{med(label, 'main_cpu_s') - ours_cpu:+.3f}")
        for label, _ in ABLATIONS
    ]
    rows.append(("bare baseline", f"{base:.3f}", f"{base - ours:+.3f}", f"{base_cpu:.3f}", f"{base_cpu - ours_cpu:+.3f}"))
    return [
        f"Where the time goes at {servers} servers (medians of {runs} fresh interpreters each, interleaved; GC on): "
        "our program with one part of its work replaced by a constant of the same size. The differences",
        "are what a part costs in place, its garbage collection included; the time ratio is the table above's.",
        "Main-thread CPU is the program's own thread (the mock engine's monitor calls run in a thread pool).",
        "",
        *table(("program", "wall s", "vs ours", "main-thread CPU s", "vs ours"), rows),
    ]
