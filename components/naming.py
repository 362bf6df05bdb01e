"""Hetzner-side names and the ownership label of a stack's resources.

Pure (no Pulumi import): the program names and labels what it creates with these, and
``vpsctl preflight`` recognises the stack's own resources in a project by the same label.
Hetzner names are unique per project, so every name carries the project and stack.
"""

from __future__ import annotations

import hashlib
import re

OWNER_LABEL = "totp-vps/stack"
WAIVER_PREFIX = "totp-vps.waive/"  # policy/policies.py reads these labels
MAX_NAME = 63  # the shortest name limit among the resources we create (servers: a hostname label)
_LABEL_VALUE = re.compile(r"[a-zA-Z0-9]([-a-zA-Z0-9_.]{0,61}[a-zA-Z0-9])?")


def stack_id(project: str, stack: str) -> str:
    """``project.stack`` when that is a valid Hetzner label value, else a digest of it (a Pulumi stack
    name may be longer than a label value allows)."""
    plain = f"{project}.{stack}"
    if _LABEL_VALUE.fullmatch(plain):
        return plain
    return "stack-" + hashlib.sha256(plain.encode()).hexdigest()[:16]


def owner_labels(project: str, stack: str) -> dict[str, str]:
    """The label every resource the stack creates carries."""
    return {OWNER_LABEL: stack_id(project, stack)}


def resource_name(project: str, stack: str, suffix: str) -> str:
    """A project-unique Hetzner name for a stack-wide resource (``suffix`` says which)."""
    name = f"{project}-{stack}-{suffix}"
    if len(name) <= MAX_NAME and re.fullmatch(r"[a-zA-Z0-9][-a-zA-Z0-9_.]*", name):
        return name
    return f"tv-{hashlib.sha256(f'{project}/{stack}'.encode()).hexdigest()[:10]}-{suffix}"[:MAX_NAME]
