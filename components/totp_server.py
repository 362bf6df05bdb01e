"""TotpServer: one hardened Hetzner server whose SSH needs a key AND a TOTP code.

Children (all ``parent=self``, names derived from the instance name and never changed afterwards):
per admin a seed and backup-code ``random.RandomBytes`` (stateful, so ``pulumi up`` never changes
them), the pinned host key (``tls.PrivateKey``), the ``hcloud.Firewall`` and the ``hcloud.Server``
(firewall attached at creation). The user-data comes from the pure renderer in ``cloudinit``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_hcloud as hcloud
import pulumi_random as random
import pulumi_tls as tls

from agent import state as agent_state
from cloudinit import desired, enrollment, render
from cloudinit.hardening import SEED_BYTES
from cloudinit.model import ConfigError, Server
from cloudinit.secrets import (
    BYTES_PER_CODE,
    AdminSecrets,
    KeyPair,
    backup_codes_from_bytes,
    check_seed,
    known_hosts_line,
    seed_from_bytes,
)

TYPE = "totp-vps:index:TotpServer"
WAIVER_PREFIX = "totp-vps.waive/"  # policy/policies.py reads these labels
ANYWHERE = ("0.0.0.0/0", "::/0")
# Egress preset: once any outbound rule exists Hetzner denies the rest, so list what a server needs.
EGRESS_PRESET = (
    ("udp", "53", "DNS"),
    ("tcp", "53", "DNS over TCP"),
    ("udp", "123", "NTP: TOTP needs a synced clock"),
    ("tcp", "80", "HTTP: package mirrors"),
    ("tcp", "443", "HTTPS"),
    ("icmp", None, "ICMP: path MTU discovery, ping"),
)


@dataclass(frozen=True, kw_only=True)
class TotpServerArgs:
    """Inputs of one TotpServer, validated at construction."""

    server: Server
    """The validated server description (cloudinit.model.Server)."""
    ssh_key_names: Sequence[str]
    """Hetzner names of the admins' uploaded keys (without any, Hetzner mails a root password)."""
    signer: pulumi.Input[str] | None
    """Public half of the stack's state-signing key: the server applies only changes it signed (None while
    the program validates, before any resource exists)."""
    seed_overrides: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Admin -> existing base32 seed to carry over an enrollment (plain here, made secret inside)."""

    def __post_init__(self) -> None:
        if not isinstance(self.server, Server):
            raise ConfigError("server", type(self.server).__name__, "must be a cloudinit.model.Server")
        if not self.ssh_key_names:
            raise ConfigError(f"{self.server.where}.admins", [], "needs at least one hcloud SSH key")
        for admin in self.seed_overrides:
            if admin not in self.server.admin_names:
                raise ConfigError(f"seedOverrides.{admin}", admin, f"is not an admin of {self.server.name}")
        normalised = {a: check_seed(s, f"seedOverrides.{a}") for a, s in self.seed_overrides.items()}
        object.__setattr__(self, "seed_overrides", normalised)  # frozen: normalise once, here
        render.check_fits(self.server)


def firewall_rules(server: Server) -> list[hcloud.FirewallRuleArgs]:
    """Inbound: SSH from the allowed networks, optional ICMP; nothing else (no UDP 123: NTP is outbound)."""
    rules = [
        hcloud.FirewallRuleArgs(
            direction="in",
            protocol="tcp",
            port=str(server.ssh_port),
            source_ips=list(server.allowed_cidrs),
            description="SSH (key + TOTP)",
        )
    ]
    if server.allow_icmp:
        rules.append(hcloud.FirewallRuleArgs(direction="in", protocol="icmp", source_ips=list(ANYWHERE), description="ICMP"))
    if server.restrict_egress:
        rules += [
            hcloud.FirewallRuleArgs(direction="out", protocol=proto, port=port, destination_ips=list(ANYWHERE), description=why)
            for proto, port, why in EGRESS_PRESET
        ]
    return rules


def waiver_labels(spec: Server, resource: str) -> dict[str, str]:
    """The server's labels plus the policy waivers its config opts into, so the policy pack (which
    sees resources, not config) reports those as waived advisories instead of violations."""
    labels = dict(spec.labels)
    if resource == "firewall" and spec.allow_ssh_from_anywhere:
        labels[f"{WAIVER_PREFIX}fw-01"] = "allowSshFromAnywhere"
    if resource == "server" and spec.rebuild:
        labels[f"{WAIVER_PREFIX}srv-03"] = "rebuild"
    return labels


class TotpServer(pulumi.ComponentResource):
    """A Hetzner server, its firewall, its pinned host key and its admins' TOTP secrets."""

    ipv4: pulumi.Output[str]
    ipv6: pulumi.Output[str]
    known_hosts: pulumi.Output[str]
    """``known_hosts`` lines (IPv4 and IPv6) for the pinned host key: no trust on first use."""
    host_public_key: pulumi.Output[str]
    ssh_commands: pulumi.Output[dict[str, str]]
    enrollment: pulumi.Output[dict[str, dict[str, object]]]
    """Secret. Admin -> otpauth URI, terminal QR, manual key, backup codes (and the same for sudo: totp)."""
    previous_seeds: pulumi.Output[dict[str, str]]
    """Secret. Admin -> the seed before the last rotation: a server not synced since still has it, and the sync
    logs in with it there."""
    desired_state: pulumi.Output[dict[str, Any]]
    """Secret. What the server's agent applies (agent/state.py); ``vpsctl sync`` sends it."""
    desired_serial: pulumi.Output[str]
    """The desired state's serial: a digest, not secret, that changes exactly when the desired state does."""

    def __init__(self, name: str, args: TotpServerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE, name, None, opts)
        if args.signer is None:
            raise ValueError("TotpServerArgs.signer: the stack's state-signing public key is needed")
        spec = args.server
        child = pulumi.ResourceOptions(parent=self)

        host_key = tls.PrivateKey(f"{name}-host-key", algorithm="ED25519", opts=child)
        host_public = host_key.public_key_openssh.apply(str.strip)
        # Plain loops, not comprehensions or helpers: the SDK records the Python stack at every
        # registration, at a cost per frame (see bench/).
        randomness: list[pulumi.Output[str] | None] = []
        previous: dict[str, pulumi.Output[str]] = {}
        for admin in spec.admins:
            keepers = {"rotation": str(admin.rotation)}  # bumping it replaces all of the admin's secrets
            seed = None  # an overridden seed needs no resource
            if admin.name not in args.seed_overrides:
                seed, before = _seed_slots(name, admin.name, admin.rotation, child)
                if before is not None:
                    previous[admin.name] = before.base64
            codes = random.RandomBytes(
                f"{name}-{admin.name}-backup-codes",
                length=spec.backup_codes * BYTES_PER_CODE,
                keepers={**keepers, "count": str(spec.backup_codes)},
                opts=child,
            )
            randomness += [seed.base64 if seed else None, codes.base64]
            if admin.sudo == "totp":  # sudo's own seed: a stolen login code does not open sudo
                sudo_seed = random.RandomBytes(f"{name}-{admin.name}-sudo-seed", length=SEED_BYTES, keepers=keepers, opts=child)
                sudo_codes = random.RandomBytes(
                    f"{name}-{admin.name}-sudo-backup-codes",
                    length=spec.backup_codes * BYTES_PER_CODE,
                    keepers={**keepers, "count": str(spec.backup_codes)},
                    opts=child,
                )
                randomness += [sudo_seed.base64, sudo_codes.base64]
        # Every secret of this server in ONE Output: the SDK's cost is per Output node, and a fleet has
        # thousands; the user-data, the desired state and the enrollment all derive from this bundle.
        bundle: pulumi.Output[tuple[KeyPair, dict[str, AdminSecrets], str]] = pulumi.Output.secret(
            pulumi.Output.all(host_key.private_key_openssh, host_key.public_key_openssh, args.signer, *randomness).apply(
                lambda v: _bundle(spec, args.seed_overrides, v)
            )
        )

        firewall = hcloud.Firewall(
            f"{name}-firewall", name=spec.name, rules=firewall_rules(spec), labels=waiver_labels(spec, "firewall"), opts=child
        )

        user_data = bundle.apply(lambda b: render.render_user_data(spec, b[1], b[0], b[2]))  # secret, as the bundle

        server = hcloud.Server(
            f"{name}-server",
            name=spec.name,
            image=spec.image,
            server_type=spec.server_type,
            location=spec.location,
            ssh_keys=list(args.ssh_key_names),
            firewall_ids=[firewall.id.apply(int)],
            user_data=user_data,
            labels=waiver_labels(spec, "server"),
            public_nets=[hcloud.ServerPublicNetArgs(ipv4_enabled=spec.ipv4, ipv6_enabled=spec.ipv6)],
            delete_protection=spec.protection,
            rebuild_protection=spec.protection,
            opts=pulumi.ResourceOptions(
                parent=self,
                protect=spec.protection,
                # cloud-init runs once, at first boot, and Hetzner REPLACES a server whose user-data or
                # key list changes: a template upgrade must never destroy a running server.
                ignore_changes=None if spec.rebuild else ["user_data", "ssh_keys"],
                additional_secret_outputs=["userData"],
            ),
        )

        self.ipv4 = server.ipv4_address
        self.ipv6 = server.ipv6_address
        self.host_public_key = host_public
        addresses = [a for a, on in ((server.ipv4_address, spec.ipv4), (server.ipv6_address, spec.ipv6)) if on]
        self.known_hosts = pulumi.Output.all(host_public, *addresses).apply(
            lambda v: "\n".join(known_hosts_line(a, spec.ssh_port, v[0]) for a in v[1:])
        )
        target = server.ipv4_address if spec.ipv4 else server.ipv6_address
        self.ssh_commands = target.apply(
            lambda ip: {a: f"ssh -p {spec.ssh_port} {a}@{ip}" for a in spec.admin_names}
        )
        self.enrollment = bundle.apply(lambda b: {a: _enrollment(spec, a, secrets) for a, secrets in b[1].items()})
        self.previous_seeds = pulumi.Output.secret(pulumi.Output.all(*previous.values()).apply(
            lambda v: {a: seed_from_bytes(base64.b64decode(s)) for a, s in zip(previous, v, strict=True)}))
        self.desired_state = bundle.apply(lambda b: desired.desired_state(spec, b[1], b[2]))
        # A digest over 160-bit seeds gives nothing away: shown in plain, so a preview says which servers change.
        self.desired_serial = pulumi.Output.unsecret(self.desired_state.apply(agent_state.serial))
        self.register_outputs(
            {
                "ipv4": self.ipv4,
                "ipv6": self.ipv6,
                "knownHosts": self.known_hosts,
                "hostPublicKey": self.host_public_key,
                "sshCommands": self.ssh_commands,
                "enrollment": self.enrollment,
                "desiredState": self.desired_state,
                "desiredSerial": self.desired_serial,
                "previousSeeds": self.previous_seeds,
            }
        )


def _seed_slots(name: str, admin: str, rotation: int, child: pulumi.ResourceOptions) -> tuple[random.RandomBytes,
                                                                                                random.RandomBytes | None]:
    """(current seed, the seed before the last rotation). Two resources take turns (even and odd rotations):
    a rotation replaces only the slot of the new number, so the other still holds the previous seed, which a
    server not synced since the rotation still has. The current slot carries 0.1's name as an alias, so a stack
    written by 0.1 keeps its seed."""

    def slot(parity: int) -> random.RandomBytes:
        number = rotation if rotation % 2 == parity else rotation - 1
        opts = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
            aliases=[pulumi.Alias(name=f"{name}-{admin}-totp-seed")] if number == rotation else None))
        return random.RandomBytes(f"{name}-{admin}-totp-seed-{'ab'[parity]}", length=SEED_BYTES,
                                  keepers={"rotation": str(number)}, opts=opts)

    current = slot(rotation % 2)
    return current, slot(1 - rotation % 2) if rotation > 0 else None


def _bundle(spec: Server, overrides: Mapping[str, str], values: list[Any]) -> tuple[KeyPair, dict[str, AdminSecrets], str]:
    """(host key, admin -> secrets, signer) from the resolved resource outputs, in TotpServer's order."""
    host_key = KeyPair(private_openssh=values[0], public_openssh=values[1].strip())
    rest = iter(values[3:])
    admins = {}
    for admin in spec.admins:
        seed_b64, codes_b64 = next(rest), next(rest)
        seed = overrides[admin.name] if seed_b64 is None else seed_from_bytes(base64.b64decode(seed_b64))
        sudo = None
        if admin.sudo == "totp":
            sudo_seed, sudo_codes = next(rest), next(rest)
            sudo = AdminSecrets(seed=seed_from_bytes(base64.b64decode(sudo_seed)),
                                backup_codes=backup_codes_from_bytes(base64.b64decode(sudo_codes), spec.backup_codes))
        codes = backup_codes_from_bytes(base64.b64decode(codes_b64), spec.backup_codes)
        admins[admin.name] = AdminSecrets(seed=seed, backup_codes=codes, sudo=sudo)
    return host_key, admins, str(values[2]).strip()


def _enrollment(spec: Server, admin: str, s: AdminSecrets) -> dict[str, object]:
    out = _totp_enrollment(spec.issuer, enrollment.account(admin, spec.name), s)
    if s.sudo is not None:
        out["sudo"] = _totp_enrollment(spec.issuer, enrollment.account(admin, spec.name, sudo=True), s.sudo)
    return out


def _totp_enrollment(issuer: str, account: str, s: AdminSecrets) -> dict[str, object]:
    uri = enrollment.otpauth_uri(s.seed, issuer, account)
    return {
        "account": account,
        "otpauthUri": uri,
        "manualKey": enrollment.manual_key(s.seed),
        "qr": enrollment.terminal_qr(uri),
        "backupCodes": list(s.backup_codes),
        "totpFile": desired.totp_file(s),
    }
