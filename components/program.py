"""What ``__main__.py`` does, as functions: read the stack config through ``pulumi.Config``, validate
all of it, then register resources and return the stack outputs."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pulumi
import pulumi_tls as tls
from pulumi.runtime import config as runtime_config

from cloudinit import stackconfig
from cloudinit.model import ConfigError
from components.admin_keys import AdminKeys, AdminKeysArgs, key_names
from components.totp_server import TotpServer, TotpServerArgs

NS = stackconfig.NAMESPACE


def read_config() -> tuple[stackconfig.StackConfig, dict[str, str]]:
    """(validated config, admin -> seed override). Raises ConfigError on any bad value."""
    config = pulumi.Config(NS)
    # Every key set in our namespace, so a misspelt one is an error rather than silently ignored.
    every_key = {*runtime_config.CONFIG.get(), *runtime_config.get_config_env()}
    present = {k.partition(":")[2] for k in every_key if k.startswith(f"{NS}:")}
    plain = {key: _value(config.get(key)) for key in sorted(present - stackconfig.SECRET_KEYS)}
    parsed = stackconfig.parse(plain)
    overrides: dict[str, str] = {}
    if "seedOverrides" in present:
        if not runtime_config.is_config_secret(f"{NS}:seedOverrides"):
            raise ConfigError(f"{NS}:seedOverrides", "[secret]", "holds TOTP seeds: set it with `pulumi config set --secret`")
        # Read plainly only to validate; the component wraps each seed in Output.secret at once.
        raw = _value(config.get("seedOverrides"))
        if not isinstance(raw, dict):
            raise ConfigError(f"{NS}:seedOverrides", "[secret]", "must map admin names to base32 seeds")
        overrides = {str(k): v for k, v in raw.items()}
        admins = {a.name for s in parsed.servers for a in s.admins}
        for name in overrides:
            if name not in admins:
                raise ConfigError(f"{NS}:seedOverrides.{name}", name, f"is not an admin (admins: {sorted(admins)})")
    return parsed, overrides


def _value(raw: str | None) -> Any:
    """Pulumi hands objects, numbers and booleans over as JSON text, and strings as themselves."""
    try:
        return json.loads(raw) if raw is not None else None
    except json.JSONDecodeError:
        return raw


def build() -> dict[str, Any]:
    """Validate everything, then register; returns the stack outputs to export."""
    parsed, overrides = read_config()
    plans = [
        TotpServerArgs(
            server=server,
            ssh_key_names=[n for admin in server.admins for n in key_names(admin)],
            seed_overrides={a: s for a, s in overrides.items() if a in server.admin_names},
            signer=None,
        )
        for server in parsed.servers
    ]
    # Nothing is registered before this line: every bad value has already been reported.
    every_admin = {a.name: a for plan in plans for a in plan.server.admins}
    keys = AdminKeys("admins", AdminKeysArgs(admins=tuple(every_admin.values()), labels={"managed-by": "totp-vps"}))
    # One key per stack signs every desired state sent to a running server (vpsctl sync, pulumi up's
    # converge): the servers trust it from their first boot, so a stolen admin session cannot apply one.
    signing = tls.PrivateKey("state-signing-key", algorithm="ED25519")
    servers = {}
    for plan in plans:  # a loop, not a comprehension: one stack frame less at every registration
        final = dataclasses.replace(plan, signer=signing.public_key_openssh)
        servers[plan.server.name] = TotpServer(plan.server.name, final, pulumi.ResourceOptions(depends_on=[keys]))
    return {
        "servers": {
            name: {
                "ipv4": s.ipv4,
                "ipv6": s.ipv6,
                "sshPort": plan.server.ssh_port,
                "previousSshPort": plan.server.previous_ssh_port,
                "knownHosts": s.known_hosts,
                "hostPublicKey": s.host_public_key,
                "sshCommands": s.ssh_commands,
                "desiredSerial": s.desired_serial,
                "converge": "pulumi up" if parsed.operator else "vpsctl sync",
            }
            for plan, (name, s) in zip(plans, servers.items(), strict=True)
        },
        "enrollment": {name: s.enrollment for name, s in servers.items()},
        "desiredState": {name: s.desired_state for name, s in servers.items()},
        "sync": pulumi.Output.secret({"signingKey": signing.private_key_openssh,
                                      "previousSeeds": {name: s.previous_seeds for name, s in servers.items()}}),
        "operator": parsed.operator and {"admin": parsed.operator.admin, "identityFile": parsed.operator.identity_file},
    }
