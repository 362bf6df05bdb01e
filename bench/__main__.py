"""``python -m bench [--runs N] [--only NAME ...] [--out FILE]``: measure, print the Markdown report,
and write it to FILE (default: ``totp-vps-bench.md`` in the system temp directory)."""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import check_bench, login_bench, program_eval, render_bench, suite_bench, sync_bench, vm_bench
from bench.report import Row, Section, load, machine, render

NAMES = ("program", "render", "check", "login", "sync", "vm", "suite")
DEFAULT = ("program", "render", "check", "login", "sync", "vm")  # the suite only on request: minutes, VM boots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (fresh processes for 1 and 3; default 5)")
    parser.add_argument("--boots", type=int, default=1, help="VM boots to take the median of (default 1)")
    parser.add_argument("--build-image", action="store_true", help="also time a lab image build into a fresh cache")
    parser.add_argument("--wait-idle", type=float, default=300, metavar="SECONDS",
                        help="before a VM boot and the sync runs, wait up to this long for other qemu processes to end "
                        "(default 300)")
    parser.add_argument("--only", nargs="+", choices=NAMES, help=f"run only these (default: {' '.join(DEFAULT)})")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "totp-vps-bench.md")
    args = parser.parse_args(argv)
    wanted = args.only or list(DEFAULT)
    started = time.monotonic()
    load_before = load()

    render_section, user_data_bytes = render_bench.run(renders=max(200, args.runs * 40))
    steps: dict[str, Callable[[], Section]] = {
        "program": lambda: program_eval.run(args.runs, user_data_bytes),
        "render": lambda: render_section,
        "check": lambda: check_bench.run(args.runs),
        "login": login_bench.run,
        "sync": lambda: sync_bench.run(max(sync_bench.MIN_RUNS, args.runs), wait_idle=args.wait_idle),
        "vm": lambda: vm_bench.run(args.boots, args.build_image, args.wait_idle),
        "suite": suite_bench.run if args.only and "suite" in args.only else suite_bench.skipped,
    }
    sections = []
    for name in [n for n in NAMES if n in wanted or n == "suite"]:  # the suite row says how to measure it
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        try:
            sections.append(steps[name]())
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            error = f"error: {type(exc).__name__}: {exc}".splitlines()[0][:120]
            sections.append(Section(name, [Row("", error)], available=False))

    given = list(argv if argv is not None else sys.argv[1:])
    if "--out" in given:  # where the report goes is not part of how it was measured
        del given[given.index("--out") : given.index("--out") + 2]
    shown = " ".join(a for a in given if not a.startswith("--out="))
    header = [
        f"Measured {datetime.date.today().isoformat()} on {machine()} with `python -m bench{' ' + shown if shown else ''}`"
        f" (`make bench`), {time.monotonic() - started:.0f} s; load average before / after: {load_before} / {load()}.",
    ]
    text = render(sections, header)
    print(text)
    args.out.write_text(text)
    print(f"bench: report written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
