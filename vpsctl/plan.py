"""What applying the stack's desired state would change on a server, in the operator's words:
``web-1: -bob +carol ~alice(rotated, keys +1) sshd: allowForwarding no->yes``.

One function for the plan ``vpsctl sync`` shows before it changes anything and for the drift report of
``--dry-run``: it compares the record the server's agent keeps of its applied state (``status``) with the
record of the desired state (agent/state.py ``record``). Both are fingerprints: nothing secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Settings the plan names under "sshd:" (the rest of the summary under "settings:").
SSHD_SETTINGS = ("sshPort", "allowForwarding", "penaltyExemptCidrs", "hardening")


@dataclass
class Plan:
    server: str
    items: list[str] = field(default_factory=list)
    """What changes, one item each: ``-bob``, ``+carol``, ``~alice(rotated)``, ``sshd: sshPort 22->2222``."""
    drift: list[str] = field(default_factory=list)
    """How the server differs from what it last applied (edits by hand): also repaired by applying."""

    @property
    def changes(self) -> bool:
        return bool(self.items or self.drift)

    def line(self) -> str:
        if not self.changes:
            return f"{self.server}: in sync"
        return f"{self.server}: " + " ".join(self.items + [f"drift: {d}" for d in self.drift])


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    return str(value)


def _keys(old: list[str], new: list[str]) -> str:
    added, removed = len(set(new) - set(old)), len(set(old) - set(new))
    return " ".join(p for p in (f"+{added}" if added else "", f"-{removed}" if removed else "") if p)


def _person(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    what = []
    if "totp" in new and old.get("totp") != new["totp"]:
        what.append("rotated")
    if new.get("sudoTotp") and old.get("sudoTotp") != new["sudoTotp"] and old.get("sudo") == new.get("sudo"):
        what.append("sudo code rotated")
    if old.get("keys") != new.get("keys"):
        what.append(f"keys {_keys(old.get('keys', []), new['keys'])}")
    for setting in ("sudo", "shell", "fromCidrs", "command"):
        if setting in new and old.get(setting) != new[setting]:
            what.append(f"{setting} {_fmt(old.get(setting))}->{_fmt(new[setting])}")
    return what


def compute(server: str, applied: Mapping[str, Any] | None, desired: Mapping[str, Any], drift: list[str] | None = None,
            agent_differs: bool = False) -> Plan:
    """The plan for ``server``: ``applied`` is the server's record (None: nothing applied yet), ``desired``
    the desired state's record."""
    plan = Plan(server, drift=list(drift or []))
    if applied is None:
        plan.items.append("(no state applied yet)")
        return plan
    if applied.get("serial") == desired["serial"] and not agent_differs:
        return plan
    for kind, prefix in (("admins", ""), ("serviceAccounts", "service ")):
        old, new = applied.get(kind, {}), desired[kind]
        plan.items += [f"-{prefix}{name}" for name in sorted(set(old) - set(new))]
        plan.items += [f"+{prefix}{name}" for name in sorted(set(new) - set(old))]
        for name in sorted(set(old) & set(new)):
            what = _person(old[name], new[name])
            if what:
                plan.items.append(f"~{prefix}{name}({', '.join(what)})")
    old_summary, new_summary = applied.get("summary", {}), desired["summary"]
    for group, keys in (("sshd", SSHD_SETTINGS), ("settings", tuple(k for k in new_summary if k not in SSHD_SETTINGS))):
        changed = [f"{k} {_fmt(old_summary.get(k))}->{_fmt(new_summary.get(k))}" for k in keys
                   if old_summary.get(k) != new_summary.get(k)]
        if changed:
            plan.items.append(f"{group}: {', '.join(changed)}")
    explained = bool(plan.items)
    files = [p for p in desired["files"] if applied.get("files", {}).get(p) != desired["files"][p]]
    if files and not explained:  # the same settings, other file contents: a template or hardening update
        plan.items.append(f"files: {', '.join(files)}")
    if applied.get("removeHome") != desired.get("removeHome"):
        plan.items.append(f"offboarding: removeHome {_fmt(applied.get('removeHome'))}->{_fmt(desired.get('removeHome'))}")
    if agent_differs:
        plan.items.append("agent: update")
    if not plan.items:
        plan.items.append("(same settings; the state differs in detail)")
    return plan
