"""The report: one summary table (figure, bar, verdict) plus a detail section per benchmark."""

from __future__ import annotations

import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Row:
    """One figure of the summary table."""

    what: str
    measured: str
    bar: str = ""
    ok: bool | None = None
    """True/False against the bar; None: no bar, or not measured."""

    @property
    def verdict(self) -> str:
        return {True: "pass", False: "**FAIL**", None: "-"}[self.ok]


@dataclass
class Section:
    """What one benchmark reports."""

    title: str
    rows: list[Row] = field(default_factory=list)
    detail: list[str] = field(default_factory=list)
    """Markdown lines shown under the summary (method, per-run figures)."""
    available: bool = True
    """False: the thing to measure does not exist yet here (the reason is in ``detail``)."""


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def machine() -> str:
    import os

    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def load() -> str:
    """The 1-minute load average: above the CPU count, something else competed for the CPUs."""
    import os

    return f"{os.getloadavg()[0]:.1f}"


def render(sections: Sequence[Section], header: Sequence[str]) -> str:
    lines = [*header, ""]
    summary = [(f"{i}. {s.title}: {r.what}" if r.what else f"{i}. {s.title}", r.measured, r.bar or "-", r.verdict)
               for i, s in enumerate(sections, 1) for r in s.rows]
    lines += table(("Benchmark", "Measured", "Bar", "Verdict"), summary)
    for i, s in enumerate(sections, 1):
        lines += ["", f"### {i}. {s.title}", "", *s.detail]
    return "\n".join(lines) + "\n"
