"""SharedFirewalls: one Hetzner firewall per distinct rule set, attached to its servers at creation.

Hetzner allows 50 firewalls per project, 50 rules per firewall and 100 networks per rule, so a
firewall per server capped a stack at 50 servers and a long ``allowedCidrs`` failed at apply time.
Here servers with the same rules share a firewall, an SSH rule is split into rules of at most 100
networks, and a plan over the limits is refused before anything is registered.

Identity. A firewall is named after its rules' *shape* (ports, protocols, egress preset, waivers:
``tcp22-icmp-3f9a1c``) plus an ordinal for rule sets that differ only in their source networks. Not
after the networks themselves: the hcloud provider updates a server's ``firewall_ids`` by removing
firewalls first and applying new ones after, so a server moved to another firewall is unprotected
between two API calls. Editing ``allowedCidrs`` therefore updates the same firewall's rules in place
(atomic, no gap); only a server whose shape changes moves.

Upgrading from a firewall per server (``totp-vps:keepLegacyFirewalls: true`` for one ``pulumi up``):
the first server of each rule set hands its old firewall over to the group (an alias: same Hetzner
firewall, renamed, never detached), every other server keeps its old firewall attached next to the
shared one; the next run without the setting detaches the old ones, which Pulumi deletes last.

The plan is pure (``vpsctl preflight`` counts and names firewalls with it); the component converts it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_hcloud as hcloud

from cloudinit.model import ConfigError, Server
from components.naming import WAIVER_PREFIX, resource_name

TYPE = "totp-vps:index:SharedFirewalls"
MAX_NETWORKS_PER_RULE = 100
MAX_RULES_PER_FIREWALL = 50
MAX_FIREWALLS_PER_PROJECT = 50
TRANSITION_KEY = "totp-vps:keepLegacyFirewalls"
ANYWHERE = ("0.0.0.0/0", "::/0")
SSH_DESCRIPTION = "SSH (key + TOTP)"
# Egress preset: once any outbound rule exists Hetzner denies the rest, so list what a server needs.
EGRESS_PRESET = (
    ("udp", "53", "DNS"),
    ("tcp", "53", "DNS over TCP"),
    ("udp", "123", "NTP: TOTP needs a synced clock"),
    ("tcp", "80", "HTTP: package mirrors"),
    ("tcp", "443", "HTTPS"),
    ("icmp", None, "ICMP: path MTU discovery, ping"),
)


@dataclass(frozen=True)
class Rule:
    """One Hetzner firewall rule, as plain data."""

    direction: str
    protocol: str
    port: str | None = None
    source_ips: tuple[str, ...] = ()
    destination_ips: tuple[str, ...] = ()
    description: str = ""

    def args(self) -> hcloud.FirewallRuleArgs:
        return hcloud.FirewallRuleArgs(
            direction=self.direction,
            protocol=self.protocol,
            port=self.port,
            source_ips=list(self.source_ips) if self.direction == "in" else None,
            destination_ips=list(self.destination_ips) if self.direction == "out" else None,
            description=self.description,
        )


def rules_for(server: Server, port: int | None = None) -> tuple[Rule, ...]:
    """Inbound: SSH (on ``port``, default the server's) from the allowed networks (in rules of at most 100
    networks), optional ICMP; no inbound UDP 123 (NTP is outbound). Outbound: nothing (Hetzner then allows
    all) or the preset."""
    cidrs = server.allowed_cidrs
    rules = [
        Rule("in", "tcp", str(port or server.ssh_port), source_ips=cidrs[i : i + MAX_NETWORKS_PER_RULE],
             description=SSH_DESCRIPTION)
        for i in range(0, len(cidrs), MAX_NETWORKS_PER_RULE)
    ]
    if server.allow_icmp:
        rules.append(Rule("in", "icmp", source_ips=ANYWHERE, description="ICMP"))
    if server.restrict_egress:
        rules += [Rule("out", proto, port, destination_ips=ANYWHERE, description=why) for proto, port, why in EGRESS_PRESET]
    return tuple(rules)


def labels_for(server: Server) -> dict[str, str]:
    """The policy waivers a firewall carries: the server's ``totp-vps.waive/fw-*`` labels and the one
    ``allowSshFromAnywhere`` implies (the server's other labels stay on the server)."""
    labels = {k: v for k, v in server.labels.items() if k.startswith(f"{WAIVER_PREFIX}fw-")}
    if server.allow_ssh_from_anywhere:
        labels[f"{WAIVER_PREFIX}fw-01"] = "allowSshFromAnywhere"
    return labels


@dataclass(frozen=True)
class FirewallSpec:
    """One shared firewall of the plan."""

    key: str
    """Stable identity: the child resource is ``<component>-<key>``."""
    name: str
    """Hetzner name (unique in the project: it carries project and stack)."""
    rules: tuple[Rule, ...]
    labels: Mapping[str, str]
    servers: tuple[str, ...]
    """Members, in config order; the first one hands its previous-version firewall over."""


@dataclass(frozen=True)
class FirewallPlan:
    firewalls: tuple[FirewallSpec, ...]
    legacy: tuple[str, ...] = ()
    """Servers whose previous-version firewall stays attached for this run (transition only)."""
    by_server: Mapping[str, tuple[FirewallSpec, ...]] = field(default_factory=dict, repr=False)
    """A server's firewalls: its rule set's; while its SSH port changes (previousSshPort) also the old port's,
    so neither step of the change detaches a firewall before the other is attached."""

    @property
    def count(self) -> int:
        """Firewalls this stack holds in the project during the run."""
        return len(self.firewalls) + len(self.legacy)


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=dataclasses.astuple).encode()).hexdigest()


def _shape_key(rules: tuple[Rule, ...], labels: Mapping[str, str]) -> str:
    """Readable shape plus a digest of everything but the SSH rules' source networks."""
    shape = sorted({json.dumps([r.direction, r.protocol, r.port, r.destination_ips, r.description,
                                [] if (r.direction, r.protocol) == ("in", "tcp") else r.source_ips]) for r in rules})
    parts: list[str] = []
    for r in rules:
        part = f"{r.protocol}{r.port or ''}" if r.direction == "in" else "egress"
        if part not in parts:
            parts.append(part)
    return f"{'-'.join(parts)}-{_digest([shape, sorted(labels.items())])[:6]}"


def plan(servers: Sequence[Server], project: str, stack: str, *, keep_legacy: bool = False) -> FirewallPlan:
    """Group ``servers`` by rule set; raise ConfigError (naming the setting) over Hetzner's limits."""
    groups: dict[str, list[Server]] = {}
    content: dict[str, tuple[tuple[Rule, ...], dict[str, str]]] = {}
    memberships: dict[str, list[str]] = {}
    for server in servers:
        if keep_legacy and server.previous_ssh_port is not None:
            raise ConfigError(server.key("previousSshPort"), server.previous_ssh_port,
                              f"cannot change the port during the {TRANSITION_KEY} transition; change it after")
        labels = labels_for(server)
        for port in server.ssh_ports:
            rules = rules_for(server, port)
            if len(rules) > MAX_RULES_PER_FIREWALL:
                raise ConfigError(
                    server.key("allowedCidrs"), f"{len(server.allowed_cidrs)} networks",
                    f"needs {len(rules)} firewall rules at {MAX_NETWORKS_PER_RULE} networks per rule, over Hetzner's "
                    f"{MAX_RULES_PER_FIREWALL} per firewall; merge networks into wider prefixes",
                )  # fmt: skip
            full = _digest([rules, sorted(labels.items())])
            groups.setdefault(full, []).append(server)
            content[full] = (rules, labels)
            memberships.setdefault(server.name, []).append(full)
    specs: list[FirewallSpec] = []
    by_digest: dict[str, FirewallSpec] = {}
    ordinal: dict[str, int] = {}
    for full, members in groups.items():  # insertion order: the order of each group's first server
        rules, labels = content[full]
        shape = _shape_key(rules, labels)
        ordinal[shape] = ordinal.get(shape, 0) + 1
        key = shape if ordinal[shape] == 1 else f"{shape}-{ordinal[shape]}"
        spec = FirewallSpec(key, resource_name(project, stack, f"fw-{key}"), rules, labels, tuple(s.name for s in members))
        specs.append(spec)
        by_digest[full] = spec
    if len(specs) > MAX_FIREWALLS_PER_PROJECT:
        raise ConfigError(
            "servers", f"{len(specs)} rule sets",
            f"need {len(specs)} firewalls, over Hetzner's {MAX_FIREWALLS_PER_PROJECT} per project; servers with the same "
            "sshPort, allowedCidrs, allowIcmp, restrictEgress and fw- waivers share one",
        )  # fmt: skip
    legacy = tuple(name for spec in specs for name in spec.servers[1:]) if keep_legacy else ()
    result = FirewallPlan(tuple(specs), legacy, {name: tuple(by_digest[d] for d in ds) for name, ds in memberships.items()})
    if result.count > MAX_FIREWALLS_PER_PROJECT:
        raise ConfigError(
            TRANSITION_KEY, True,
            f"the transition keeps {len(legacy)} old firewalls next to {len(specs)} shared ones, over Hetzner's "
            f"{MAX_FIREWALLS_PER_PROJECT} per project; add new servers after the transition",
        )  # fmt: skip
    return result


def legacy_urn(project: str, stack: str, server: str) -> str:
    """The URN the previous version gave ``server``'s own firewall (a child of its TotpServer)."""
    return f"urn:pulumi:{stack}::{project}::totp-vps:index:TotpServer$hcloud:index/firewall:Firewall::{server}-firewall"


@dataclass(frozen=True, kw_only=True)
class SharedFirewallsArgs:
    """Inputs of SharedFirewalls."""

    plan: FirewallPlan
    """The validated plan (:func:`plan`)."""
    labels: Mapping[str, str]
    """Labels every firewall carries (the stack's ownership label)."""


class SharedFirewalls(pulumi.ComponentResource):
    """One hcloud.Firewall per plan entry; ``ids_for(server)`` is what the server attaches at creation."""

    ids: dict[str, pulumi.Output[int]]
    """Plan key -> firewall id."""
    firewalls: dict[str, hcloud.Firewall]
    """Plan key -> the firewall itself (what a later step waits for: a port change opens there first)."""

    def __init__(self, name: str, args: SharedFirewallsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE, name, None, opts)
        project, stack = pulumi.get_project(), pulumi.get_stack()
        self._plan = args.plan
        self.ids = {}
        self.firewalls = {}
        for spec in args.plan.firewalls:
            firewall = hcloud.Firewall(
                f"{name}-{spec.key}",
                name=spec.name,
                rules=[r.args() for r in spec.rules],
                labels={**spec.labels, **args.labels},
                # The group's first server hands its previous-version firewall over (same Hetzner
                # firewall: never detached); where that URN is not in the state the alias is a no-op.
                opts=pulumi.ResourceOptions(parent=self, aliases=[legacy_urn(project, stack, spec.servers[0])]),
            )
            self.firewalls[spec.key] = firewall
            self.ids[spec.key] = firewall.id.apply(int)
        self.register_outputs({"firewallIds": self.ids})

    def ids_for(self, server: str) -> list[pulumi.Output[int]]:
        return [self.ids[spec.key] for spec in self._plan.by_server[server]]

    def firewalls_for(self, server: str) -> list[hcloud.Firewall]:
        return [self.firewalls[spec.key] for spec in self._plan.by_server[server]]
