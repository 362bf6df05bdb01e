"""Read YAML that may be hostile (stack files, user-data) the way PyYAML's safe loader does, within bounds.

A few hundred bytes of nested aliases expand to gigabytes ("billion laughs"), and deep nesting exhausts
the recursion limit; both are refused before anything is built. The document is first walked as a stream
of parser events (libyaml when present: fast, no objects built), which also finds duplicate mapping keys:
PyYAML and cloud-init keep the last one silently, so whoever judges a document must at least know.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

MAX_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 100_000

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlError(ValueError):
    """One line: what was read, where, and why it is refused."""


@dataclass
class Document:
    """A parsed document and what the event walk noticed."""

    data: Any
    duplicate_keys: list[str] = field(default_factory=list)
    """``line N: key`` for every mapping key written again (at line N; the value read is the last one)."""
    merge_keys: list[str] = field(default_factory=list)
    """``line N`` for every merge key (``<<``): its settings are read into the mapping it sits in, where a
    reader of the text does not look for them and where the duplicate-key walk cannot see them."""


def load(text: str | bytes, what: str) -> Document:
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > MAX_BYTES:
        raise YamlError(f"{what}: {len(raw)} bytes is larger than the {MAX_BYTES}-byte limit")
    try:
        duplicates, merges = _walk(raw, what)
        data = yaml.load(raw, Loader=_LOADER)  # noqa: S506 - a safe loader (CSafeLoader or SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise YamlError(f"{what}{where} is not valid YAML: {_one_line(str(problem))}") from None
    return Document(data=data, duplicate_keys=duplicates, merge_keys=merges)


def _walk(raw: bytes, what: str) -> tuple[list[str], list[str]]:
    depth = 0
    nodes = 0
    # Per open collection: (is mapping, keys seen, expecting a key next).
    stack: list[tuple[bool, set[str], list[bool]]] = []
    duplicates: list[str] = []
    merges: list[str] = []
    for ev in yaml.parse(raw, Loader=_LOADER):
        if isinstance(ev, yaml.AliasEvent) or getattr(ev, "anchor", None):
            raise YamlError(f"{what} {_at(ev)}: YAML anchors and aliases are not accepted")
        if isinstance(ev, yaml.NodeEvent):
            nodes += 1
            if nodes > MAX_NODES:
                raise YamlError(f"{what}: more than {MAX_NODES} values")
            if stack and stack[-1][0]:
                is_key = stack[-1][2][0]
                stack[-1][2][0] = not is_key
                if is_key and isinstance(ev, yaml.ScalarEvent):
                    # The safe loader merges a plain `<<` key, or any key tagged !!merge.
                    if (ev.value == "<<" and ev.implicit[0]) or ev.tag == _MERGE_TAG:
                        merges.append(_at(ev))
                    if ev.value in stack[-1][1]:  # named where it is written again: that value is the one read
                        duplicates.append(f"{_at(ev)}: {ev.value}")
                    stack[-1][1].add(ev.value)
        if isinstance(ev, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise YamlError(f"{what} {_at(ev)}: nested deeper than {MAX_DEPTH} levels")
            stack.append((isinstance(ev, yaml.MappingStartEvent), set(), [True]))
        elif isinstance(ev, yaml.CollectionEndEvent):
            depth -= 1
            stack.pop()
    return duplicates, merges


def _at(ev: Any) -> str:
    return f"line {ev.start_mark.line + 1}" if ev.start_mark else "line ?"


def _one_line(text: str) -> str:
    return " ".join(text.split())[:160]
