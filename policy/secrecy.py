"""Which properties the engine sent as secrets.

The engine sends a secret as an object marked with Pulumi's secret signature; CrossGuard's Python
analyzer unwraps those marks before any policy runs (pulumi_policy.policy.deserialize_properties), so a
policy could not tell ``Output.secret(seed)`` from a plain seed, and the secret scans had to trust output
NAMES. The pack keeps the engine's own answer instead: it wraps that one deserializer so the result also
holds the paths of every marked value under :data:`KEY`, which the validators read (and skip when they
walk properties). The servicer, the policies and what they report are otherwise unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pulumi_policy.policy as _analyzer

KEY = "__totp_vps_secret_paths__"
_SIG_KEY, _SECRET_SIG = "4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270"  # pulumi rpc
_original = _analyzer.deserialize_properties


def _marked(tree: Any, path: str) -> Iterator[str]:
    if isinstance(tree, Mapping):
        if tree.get(_SIG_KEY) == _SECRET_SIG:
            yield path
            return
        for key, value in tree.items():
            yield from _marked(value, f"{path}.{key}" if path else str(key))
    elif isinstance(tree, Sequence) and not isinstance(tree, str):
        for i, value in enumerate(tree):
            yield from _marked(value, f"{path}[{i}]")


def _keeping_marks(props: dict[str, Any], proxy_secrets: bool = False) -> dict[str, Any]:
    result = _original(props, proxy_secrets)
    paths = sorted(_marked(props, ""))
    if paths:
        result[KEY] = paths
    return result


def install() -> None:
    """Have the analyzer record secret marks (idempotent)."""
    _analyzer.deserialize_properties = _keeping_marks


def secret_paths(props: Mapping[str, Any]) -> list[str]:
    return list(props[KEY]) if KEY in props else []


def under(path: str, secrets: Sequence[str]) -> bool:
    """Whether ``path`` (``a.b[0]``) is a secret value or inside one."""
    return any(path == s or path.startswith((f"{s}.", f"{s}[")) for s in secrets)
