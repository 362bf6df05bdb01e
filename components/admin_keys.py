"""AdminKeys: the admins' public keys uploaded once to Hetzner, shared by every server of the stack.

Hetzner refuses the same key (by fingerprint) twice in a project, so keys cannot be per server.
Servers get them so Hetzner does not set and e-mail a root password; SSH access itself comes from the
user-data (root login is off).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_hcloud as hcloud

from cloudinit.model import Admin, ConfigError, key_blob

TYPE = "totp-vps:index:AdminKeys"


@dataclass(frozen=True, kw_only=True)
class AdminKeysArgs:
    """Inputs of AdminKeys."""

    admins: tuple[Admin, ...]
    """Every admin of the stack (validated cloudinit.model.Admin)."""
    labels: Mapping[str, str]
    """Hetzner labels for the keys."""

    def __post_init__(self) -> None:
        if not self.admins:
            raise ConfigError("admins", [], "needs at least one admin")


def _short(key: str) -> str:
    # Named by key, not position: reordering an admin's keys replaces nothing.
    return hashlib.sha256(key_blob(key).encode()).hexdigest()[:10]


def key_names(admin: Admin) -> list[str]:
    """The Hetzner names of ``admin``'s keys: known before anything is registered, so a server's
    arguments can be complete (and validated) before the keys exist."""
    return [f"{pulumi.get_project()}-{pulumi.get_stack()}-{admin.name}-{_short(k)}" for k in admin.ssh_keys]


class AdminKeys(pulumi.ComponentResource):
    """One hcloud.SshKey per admin key, named by :func:`key_names`."""

    def __init__(self, name: str, args: AdminKeysArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE, name, None, opts)
        names: dict[str, list[str]] = {}
        for admin in args.admins:
            names[admin.name] = key_names(admin)
            for key, key_name in zip(admin.ssh_keys, names[admin.name], strict=True):
                hcloud.SshKey(
                    f"{name}-{admin.name}-{_short(key)}",
                    name=key_name,
                    public_key=key,
                    labels=dict(args.labels),
                    opts=pulumi.ResourceOptions(parent=self),
                )
        self.register_outputs({"keyNames": names})
