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
from cloudinit.model import NOT_SHOWN, ConfigError, printable
from components import firewalls
from components.bootstrap_key import BootstrapKey, BootstrapKeyArgs
from components.converge import Converge, ConvergeArgs
from components.firewalls import SharedFirewalls, SharedFirewallsArgs
from components.naming import owner_labels, resource_name
from components.totp_server import TotpServer, TotpServerArgs

NS = stackconfig.NAMESPACE


def read_config() -> tuple[stackconfig.StackConfig, dict[str, str]]:
    """(validated config, admin -> seed override). Raises ConfigError on any bad value."""
    config = pulumi.Config(NS)
    # Every key set in our namespace, so a misspelt one is an error rather than silently ignored.
    every_key = {*runtime_config.CONFIG.get(), *runtime_config.get_config_env()}
    present = {k.partition(":")[2] for k in every_key if k.startswith(f"{NS}:")}
    plain = {key: _value(config.get(key), key) for key in sorted(present - stackconfig.SECRET_KEYS)}
    parsed = stackconfig.parse(plain)
    overrides: dict[str, str] = {}
    if "seedOverrides" in present:
        if not runtime_config.is_config_secret(f"{NS}:seedOverrides"):
            raise ConfigError(f"{NS}:seedOverrides", "[secret]", "holds TOTP seeds: set it with `pulumi config set --secret`")
        # Read plainly only to validate; the component wraps each seed in Output.secret at once.
        raw = _value(config.get("seedOverrides"), "seedOverrides")
        if not isinstance(raw, dict):
            raise ConfigError(f"{NS}:seedOverrides", "[secret]", "must map admin names to base32 seeds")
        overrides = {str(k): v for k, v in raw.items()}
        admins = {a.name for s in parsed.servers for a in s.admins}
        for name in overrides:
            if name not in admins:
                # The name goes into the setting's path only when it is a plain label (the value shows it escaped).
                at = f"{NS}:seedOverrides.{name}" if printable(name) and len(name) <= 64 else f"{NS}:seedOverrides"
                raise ConfigError(at, name, f"is not an admin (admins: {sorted(admins)})")
    return parsed, overrides


def _value(raw: str | None, key: str) -> Any:
    """Pulumi hands objects, numbers and booleans over as JSON text, and strings as themselves."""
    try:
        return json.loads(raw) if raw is not None else None
    except json.JSONDecodeError:
        return raw
    except RecursionError:  # the decoder's limit (about 1000 levels); Pulumi's YAML reader allows ten times that
        raise ConfigError(f"{NS}:{key}", NOT_SHOWN, "is nested too deeply to be a setting") from None


def build() -> dict[str, Any]:
    """Validate everything, then register; returns the stack outputs to export."""
    parsed, overrides = read_config()
    project, stack = pulumi.get_project(), pulumi.get_stack()
    transition = parsed.keep_legacy_firewalls
    firewall_plan = firewalls.plan(parsed.servers, project, stack, keep_legacy=transition)
    legacy = set(firewall_plan.legacy)
    labels = owner_labels(project, stack)
    plans = []
    for server in parsed.servers:
        if transition and server.rebuild:
            # A replacement takes ignored inputs from the state: mid-transition that would be the
            # previous version's admin key names, which this run deletes from Hetzner.
            reason = f"cannot rebuild while {firewalls.TRANSITION_KEY} is set; rebuild after the transition"
            raise ConfigError(f"{server.where}.rebuild", True, reason)
        plans.append(
            TotpServerArgs(
                server=server,
                keep_legacy_firewall=server.name in legacy,
                labels=labels,
                seed_overrides={a: s for a, s in overrides.items() if a in server.admin_names},
                signer=None,
            )
        )
    # Nothing is registered before this line: every bad value has already been reported.
    key = BootstrapKey("bootstrap", BootstrapKeyArgs(key_name=resource_name(project, stack, "bootstrap"), labels=labels))
    shared = SharedFirewalls("firewalls", SharedFirewallsArgs(plan=firewall_plan, labels=labels))
    # One key per stack signs every desired state sent to a running server (vpsctl sync, pulumi up's
    # converge): the servers trust it from their first boot, so a stolen admin session cannot apply one.
    signing = tls.PrivateKey("state-signing-key", algorithm="ED25519")
    servers = {}
    for plan in plans:  # a loop, not a comprehension: one stack frame less at every registration
        # The validated arguments, now with the resources they reference.
        wired = dataclasses.replace(plan, ssh_key_ids=[key.key_id], firewall_ids=shared.ids_for(plan.server.name),
                                    signer=signing.public_key_openssh)
        servers[plan.server.name] = TotpServer(plan.server.name, wired)
    operator = parsed.operator
    converged: dict[str, Converge] = {}
    if operator is not None:
        for plan in plans:
            name = plan.server.name
            converged[name] = Converge(name, ConvergeArgs(server=plan.server, target=servers[name],
                                                          firewalls=shared.firewalls_for(name),
                                                          signing_key=signing.private_key_openssh, operator=operator))
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
                **_convergence(name, stack, converged.get(name)),
            }
            for plan, (name, s) in zip(plans, servers.items(), strict=True)
        },
        # Without an operator pulumi up never logs in to a server, so it cannot tell which of them run an older
        # state than desiredSerial (the program cannot read the state, nor the servers): it names every one.
        "syncNeeded": [] if operator else sorted(servers),
        "enrollment": {name: s.enrollment for name, s in servers.items()},
        "desiredState": {name: s.desired_state for name, s in servers.items()},
        "sync": pulumi.Output.secret({"signingKey": signing.private_key_openssh,
                                      "previousSeeds": {name: s.previous_seeds for name, s in servers.items()}}),
        "operator": operator and {"admin": operator.admin, "identityFile": operator.identity_file},
    }


def _convergence(name: str, stack: str, converge: Converge | None) -> dict[str, Any]:
    """What brings a server to its desiredSerial: pulumi up (and what its last sync proved), or the command to run."""
    if converge is None:
        return {"converge": f".venv/bin/python -m vpsctl sync --stack {stack} --server {name}"}
    return {"converge": "pulumi up", "converged": converge.converged, "convergedSerial": converge.converged_serial}
