"""TotpServer: one hardened Hetzner server whose SSH needs a key AND a TOTP code.

Children (all ``parent=self``, names derived from the instance name and never changed afterwards):
per admin a seed and backup-code ``random.RandomBytes`` (stateful, so ``pulumi up`` never changes
them), the pinned host key (``tls.PrivateKey``) and the ``hcloud.Server``, created with the stack's
bootstrap key and its shared firewall attached (components/bootstrap_key.py, components/firewalls.py);
during the upgrade transition also the server's own firewall of the previous version. The user-data
comes from the pure renderer in ``cloudinit``.
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
from components.firewalls import rules_for
from components.naming import WAIVER_PREFIX

TYPE = "totp-vps:index:TotpServer"


@dataclass(frozen=True, kw_only=True)
class TotpServerArgs:
    """Inputs of one TotpServer, validated at construction."""

    server: Server
    """The validated server description (cloudinit.model.Server)."""
    ssh_key_ids: Sequence[pulumi.Input[str]] = ()
    """The stack's bootstrap key (without a key, Hetzner mails a root password; admins' keys come from the
    user-data). Empty while the program validates; required by TotpServer."""
    firewall_ids: Sequence[pulumi.Input[int]] = ()
    """The shared firewall of the server's rule set, attached at creation. Required by TotpServer."""
    keep_legacy_firewall: bool = False
    """Upgrade transition: keep the previous version's firewall of this server attached as well."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Labels for the Hetzner resources on top of the server's own (the stack's ownership label)."""
    signer: pulumi.Input[str] | None = None
    """Public half of the stack's state-signing key: the server applies only changes it signed (None while
    the program validates, before any resource exists; required by TotpServer)."""
    seed_overrides: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Admin -> existing base32 seed to carry over an enrollment (plain here, made secret inside)."""

    def __post_init__(self) -> None:
        if not isinstance(self.server, Server):
            raise ConfigError("server", type(self.server).__name__, "must be a cloudinit.model.Server")
        for admin in self.seed_overrides:
            if admin not in self.server.admin_names:
                raise ConfigError(f"seedOverrides.{admin}", admin, f"is not an admin of {self.server.name}")
        normalised = {a: check_seed(s, f"seedOverrides.{a}") for a, s in self.seed_overrides.items()}
        object.__setattr__(self, "seed_overrides", normalised)  # frozen: normalise once, here
        render.check_fits(self.server)


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
    """A Hetzner server, its pinned host key and its admins' TOTP secrets."""

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
        if not args.ssh_key_ids or not args.firewall_ids or args.signer is None:
            # A wiring mistake in the program, caught before this server registers anything.
            raise ValueError(f"TotpServer {name}: ssh_key_ids, firewall_ids and signer are required "
                             "(a key and a firewall at creation, the key that signs later changes)")
        super().__init__(TYPE, name, None, opts)
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

        firewall_ids = list(args.firewall_ids)
        if args.keep_legacy_firewall:
            # The previous version's firewall of this server, under its old URN, name and rules,
            # attached next to the shared one for one run: the provider detaches before it attaches, so
            # only a later run (without it) may drop it, and Pulumi deletes it after that detach.
            legacy = hcloud.Firewall(
                f"{name}-firewall",
                name=spec.name,
                rules=[r.args() for r in rules_for(spec)],
                labels={**waiver_labels(spec, "firewall"), **args.labels},
                opts=child,
            )
            firewall_ids.append(legacy.id.apply(int))

        user_data = bundle.apply(lambda b: render.render_user_data(spec, b[1], b[0], b[2]))  # secret, as the bundle

        server = hcloud.Server(
            f"{name}-server",
            name=spec.name,
            image=spec.image,
            server_type=spec.server_type,
            location=spec.location,
            ssh_keys=list(args.ssh_key_ids),
            firewall_ids=firewall_ids,
            user_data=user_data,
            labels={**waiver_labels(spec, "server"), **args.labels},
            public_nets=[hcloud.ServerPublicNetArgs(ipv4_enabled=spec.ipv4, ipv6_enabled=spec.ipv6)],
            delete_protection=spec.protection,
            rebuild_protection=spec.protection,
            opts=pulumi.ResourceOptions(
                parent=self,
                protect=spec.protection,
                # cloud-init runs once, at first boot, and Hetzner REPLACES a server whose user-data or
                # key list changes: a template upgrade must never destroy a running server. Ignored
                # inputs keep their old value even in a replacement (the engine takes them from the
                # state), so a rebuild lifts both: the new server gets the current user-data and key.
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
