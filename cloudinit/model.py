"""The typed, validated description of a server, its admins and its service accounts.

Everything here is pure: no Pulumi, no I/O. Every check raises ConfigError naming the setting by the
path the user wrote (``servers[0].allowedCidrs[1]``, or ``defaults.allowedCidrs[1] (inherited by web-1)``
for a value a server inherited), so one error message serves the Pulumi program, ``vpsctl`` and direct
Python use alike. Values are type-checked before anything else looks at them, patterns are matched with
``fullmatch`` (``$`` would let a trailing newline through), and text meant for humans must be printable.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

from agent import state
from cloudinit import catalogue, gate, hardening

HETZNER_USER_DATA_LIMIT = 32 * 1024
MAX_BACKUP_CODES = 10  # pam_google_authenticator reads at most ten scratch codes
MAX_LIST = 1000  # no setting needs longer lists; a hostile file gets one line instead of minutes of work
SUDO_MODES = ("nopasswd", "totp", "none")
# A network list that covers this much of the public address space of its family counts as "anywhere".
ANYWHERE_SHARE = 1 / 16

_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_USERNAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_LABEL_PART = r"[a-zA-Z0-9]([-a-zA-Z0-9_.]{0,61}[a-zA-Z0-9])?"
_LABEL_KEY = re.compile(rf"({_LABEL_PART}(\.{_LABEL_PART})*/)?{_LABEL_PART}")
_LABEL_VALUE = re.compile(rf"({_LABEL_PART})?")
# A sudo command line: an absolute program and plain words. sudoers gives , : = \ ( ) ! # and quotes special
# meanings (and sudo-rs parses some of them differently), so they are refused rather than escaped.
_SUDO_COMMAND = re.compile(r"/[A-Za-z0-9/._@%+-]+( [A-Za-z0-9/._@%+-]+)*")
_FLAGS = (
    "allow_ssh_from_anywhere", "allow_icmp", "restrict_egress", "allow_forwarding", "ipv4", "ipv6", "protection",
    "rebuild", "offboard_remove_home",
)  # fmt: skip
_SHELLS = frozenset({"/bin/bash", "/bin/sh", "/usr/bin/bash", "/usr/bin/zsh", "/bin/zsh", "/usr/bin/fish"})

# Names the images already use for system accounts or groups (a group is created per user, so a group
# name here would collide too), the images' default login names, and the groups totp-vps creates.
RESERVED_NAMES = frozenset(
    """
    root daemon bin sys sync games man lp mail news uucp proxy www-data backup list irc gnats nobody
    nogroup _apt _chrony messagebus sshd syslog uuidd tcpdump tss landscape pollinate lxd polkitd
    systemd-network systemd-resolve systemd-timesync systemd-coredump usbmux dnsmasq chrony ntp
    admin sudo adm wheel staff users operator debian ubuntu cloud-user totp-vps totp-vps-probe
    """.split()  # noqa: SIM905 - a word list reads best as words
)

# Key types an admin may use; the minimum bits apply where the type's strength depends on size.
SSH_KEY_TYPES = {
    "ssh-ed25519": 0,
    "sk-ssh-ed25519@openssh.com": 0,
    "ecdsa-sha2-nistp256": 0,
    "ecdsa-sha2-nistp384": 0,
    "ecdsa-sha2-nistp521": 0,
    "sk-ecdsa-sha2-nistp256@openssh.com": 0,
    "ssh-rsa": 3072,
}


NOT_SHOWN = object()
"""Pass as a ConfigError's value to name the setting without quoting anything (unknown keys, possible secrets)."""


class ConfigError(ValueError):
    """A setting with a bad value: the message names the setting and the value, on one line."""

    def __init__(self, key: str, value: object, reason: str, *, secret: bool = False) -> None:
        shown = "" if value is NOT_SHOWN else " (got [secret])" if secret else f" (got {_short(value)})"
        super().__init__(f"{key}: {reason}{shown}")
        self.key = key


def _short(value: object) -> str:
    # repr() escapes control characters, so a hostile value cannot break the one-line message.
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def printable(value: object) -> bool:
    """A human label: a non-empty string of printable characters (no control, line or paragraph separators)."""
    return isinstance(value, str) and value != "" and value.isprintable()


def _bool(value: object) -> bool:
    return isinstance(value, bool)


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _strings(value: object) -> bool:
    return isinstance(value, tuple | list) and all(isinstance(v, str) for v in value)


@dataclass(frozen=True, kw_only=True)
class Admin:
    """One person who may log in: a Linux user with SSH keys, a TOTP secret and a sudo mode."""

    name: str
    """Linux user name (also the TOTP account label)."""
    ssh_keys: tuple[str, ...]
    """OpenSSH public key lines (``ssh-ed25519 AAAA... comment``)."""
    shell: str = "/bin/bash"
    """Login shell."""
    rotation: int = 0
    """Bump to generate a new TOTP seed and backup codes for this admin."""
    sudo: str = "nopasswd"
    """``nopasswd`` (sudo without asking), ``totp`` (sudo asks for a code of a second, root-held seed), ``none``."""
    where: str = field(default="admins[?]", compare=False, repr=False)
    """Config path of this admin, used in error messages."""

    def __post_init__(self) -> None:
        w = self.where
        check_user_name(self.name, f"{w}.name")
        check_keys(self.ssh_keys, f"{w}.sshKeys")
        if not isinstance(self.shell, str) or self.shell not in _SHELLS:
            raise ConfigError(f"{w}.shell", self.shell, f"must be one of {sorted(_SHELLS)}")
        if not _int(self.rotation) or self.rotation < 0:
            raise ConfigError(f"{w}.rotation", self.rotation, "must be a whole number >= 0")
        if not isinstance(self.sudo, str) or self.sudo not in SUDO_MODES:
            raise ConfigError(f"{w}.sudo", self.sudo, f"must be one of {', '.join(SUDO_MODES)}")


@dataclass(frozen=True, kw_only=True)
class ServiceAccount:
    """An account for automation (deploys, backups): a key, no code, only from named networks, no TTY."""

    name: str
    """Linux user name; never an admin's."""
    ssh_keys: tuple[str, ...]
    """OpenSSH public key lines."""
    from_cidrs: tuple[str, ...]
    """The only networks it may connect from (each inside every server's allowedCidrs)."""
    command: str | None = None
    """A forced command (sshd ForceCommand): the only thing the account can run."""
    sudo_commands: tuple[str, ...] = ()
    """Exact command lines it may run as root without a password; none: no sudo at all."""
    where: str = field(default="serviceAccounts[?]", compare=False, repr=False)
    """Config path of this account, used in error messages."""

    def __post_init__(self) -> None:
        w = self.where
        check_user_name(self.name, f"{w}.name")
        check_keys(self.ssh_keys, f"{w}.sshKeys")
        networks = check_networks(self.from_cidrs, lambda s: f"{w}.fromCidrs{s}", anywhere_ok=False)
        if not networks:
            raise ConfigError(f"{w}.fromCidrs", list(self.from_cidrs), "needs the networks the account connects from")
        if self.command is not None and (not printable(self.command) or not state.COMMAND.fullmatch(self.command)):
            raise ConfigError(f"{w}.command", self.command,
                              "must be an absolute program path and its arguments, printable, without quotes, \\ or #")
        if not isinstance(self.sudo_commands, tuple | list):
            raise ConfigError(f"{w}.sudoCommands", self.sudo_commands, "must be a list of command lines")
        for i, command in enumerate(self.sudo_commands):
            if not isinstance(command, str):
                raise ConfigError(f"{w}.sudoCommands[{i}]", command, "must be a command line (a string)")
            if len(command) > 256 or not _SUDO_COMMAND.fullmatch(command):
                raise ConfigError(
                    f"{w}.sudoCommands[{i}]", command,
                    "must be an absolute program path and plain arguments (letters, digits, / . _ @ % + -)",
                )  # fmt: skip
            if gate.shell_like(command):
                raise ConfigError(f"{w}.sudoCommands[{i}]", command,
                                  "gives a root shell (a shell, an interpreter, an editor or a pager as root): "
                                  "name the exact program the automation needs")


@dataclass(frozen=True, kw_only=True)
class Server:
    """One Hetzner server: where it runs, who may log in, and from where."""

    name: str
    """Server name and hostname (RFC 1123 label)."""
    admins: tuple[Admin, ...]
    """Who may log in (each with key + TOTP)."""
    allowed_cidrs: tuple[str, ...]
    """Networks (IPv4 and IPv6) allowed to reach the SSH port."""
    service_accounts: tuple[ServiceAccount, ...] = ()
    """Key-only accounts for automation, each limited to its own networks."""
    image: str = "debian-12"
    """Hetzner image name."""
    server_type: str = catalogue.DEFAULT_SERVER_TYPE
    """Hetzner server type."""
    location: str = "fsn1"
    """Hetzner location."""
    ssh_port: int = 22
    """TCP port sshd listens on."""
    previous_ssh_port: int | None = None
    """While the port changes: the old port, which the firewall keeps open and the sync logs in on."""
    penalty_exempt_cidrs: tuple[str, ...] = ()
    """Networks sshd never penalises for failed logins (PerSourcePenaltyExemptList; OpenSSH >= 9.8)."""
    allow_ssh_from_anywhere: bool = False
    """Explicit opt-in to let (most of) the whole internet reach SSH."""
    allow_icmp: bool = True
    """Allow inbound ICMP (ping, path MTU discovery)."""
    restrict_egress: bool = False
    """Deny outbound traffic except DNS, NTP, HTTP(S) and ICMP."""
    allow_forwarding: bool = False
    """Let admins use TCP, agent and socket forwarding."""
    ipv4: bool = True
    """Give the server a public IPv4 address."""
    ipv6: bool = True
    """Give the server a public IPv6 address."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Hetzner labels."""
    protection: bool = False
    """Hetzner delete/rebuild protection and Pulumi protect."""
    rebuild: bool = False
    """Let a changed user-data replace this server on the next `pulumi up`."""
    offboard_remove_home: bool = False
    """Delete a removed admin's home directory (default: keep it, locked, for its data)."""
    issuer: str = "totp-vps"
    """Issuer shown in the authenticator app."""
    backup_codes: int = 5
    """Backup (scratch) codes per admin."""
    where: str = field(default="servers[?]", compare=False, repr=False)
    """Config path of this server, used in error messages."""
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    """camelCase setting -> the config path where it was written, when not ``{where}.{setting}``
    (``defaults.allowedCidrs``, ``issuer``): errors name the place the user can fix."""

    def key(self, setting: str, suffix: str = "") -> str:
        """The config path of ``setting`` (plus an index or sub-key) as the user wrote it."""
        origin = self.origins.get(setting)
        if origin is None:
            return f"{self.where}.{setting}{suffix}"
        inherited = "" if origin.startswith(self.where) or "." not in origin else f" (inherited by {self.name})"
        return f"{origin}{suffix}{inherited}"

    def __post_init__(self) -> None:
        k = self.key
        if not isinstance(self.name, str) or not _HOSTNAME.fullmatch(self.name):
            raise ConfigError(k("name"), self.name, "must be a hostname label: [a-z0-9-], 1-63 chars")
        if problem := catalogue.location_problem(self.location):
            raise ConfigError(k("location"), self.location, problem)
        if problem := catalogue.server_type_problem(self.server_type, self.location):
            raise ConfigError(k("serverType"), self.server_type, problem)
        if problem := catalogue.image_problem(self.image, self.server_type):
            raise ConfigError(k("image"), self.image, problem)
        for setting, port in (("sshPort", self.ssh_port), ("previousSshPort", self.previous_ssh_port)):
            if port is None and setting == "previousSshPort":
                continue
            if not _int(port) or not 1 <= port <= 65535:  # type: ignore[operator]
                raise ConfigError(k(setting), port, "must be a TCP port 1-65535")
        if self.previous_ssh_port == self.ssh_port:
            raise ConfigError(k("previousSshPort"), self.previous_ssh_port, "is the same as sshPort; remove it")
        for flag in _FLAGS:
            if not _bool(getattr(self, flag)):
                raise ConfigError(k(camel(flag)), getattr(self, flag), "must be true or false")
        if not (self.ipv4 or self.ipv6):
            raise ConfigError(k("ipv4"), self.ipv4, "ipv4 and ipv6 cannot both be off: the server is unreachable")
        self._check_people()
        allowed = check_networks(self.allowed_cidrs, lambda s: k("allowedCidrs", s), anywhere_ok=self.allow_ssh_from_anywhere)
        if not allowed:
            raise ConfigError(k("allowedCidrs"), [], "needs at least one network allowed to reach SSH")
        for account in self.service_accounts:
            nets = [ipaddress.ip_network(c) for c in account.from_cidrs]
            for i, net in enumerate(nets):
                if not _inside(net, allowed):
                    raise ConfigError(f"{account.where}.fromCidrs[{i}]", str(net),
                                      f"is not inside {self.name}'s allowedCidrs: the firewall would drop it")
            if covers(nets, allowed):
                raise ConfigError(f"{account.where}.fromCidrs", list(account.from_cidrs),
                                  f"covers all of {self.name}'s allowedCidrs: a key-only account must be narrower than "
                                  "the admins' networks (name the automation's own hosts)")
        self._check_penalties(allowed)
        if not isinstance(self.labels, Mapping):
            raise ConfigError(k("labels"), self.labels, "must be a mapping of label keys to values")
        for label, value in self.labels.items():
            if not isinstance(label, str) or not _LABEL_KEY.fullmatch(label):
                raise ConfigError(k("labels"), label, "label key must be [a-zA-Z0-9._-], <= 63 chars, optional prefix/")
            if not isinstance(value, str) or not _LABEL_VALUE.fullmatch(value):
                raise ConfigError(k("labels", f".{label}"), value, "label value must be [a-zA-Z0-9._-], <= 63 chars")
        if not printable(self.issuer) or len(self.issuer) > 64 or ":" in self.issuer:
            raise ConfigError(k("issuer"), self.issuer, "must be 1-64 printable characters without ':'")
        codes = self.backup_codes
        if not _int(codes) or not 1 <= codes <= MAX_BACKUP_CODES:
            raise ConfigError(k("backupCodes"), self.backup_codes, f"must be 1-{MAX_BACKUP_CODES}")

    def _check_people(self) -> None:
        k = self.key
        if not self.admins:
            raise ConfigError(k("admins"), [], "needs at least one admin")
        names = [a.name for a in self.admins]
        if len(set(names)) != len(names):
            raise ConfigError(k("admins"), names, "has duplicate admin names")
        for account in self.service_accounts:
            if account.name in names:
                raise ConfigError(f"{account.where}.name", account.name, "is also an admin name")
        accounts = [a.name for a in self.service_accounts]
        if len(set(accounts)) != len(accounts):
            raise ConfigError(k("serviceAccounts"), accounts, "lists a service account twice")
        people: tuple[Admin | ServiceAccount, ...] = (*self.admins, *self.service_accounts)
        blobs = [key_blob(key) for person in people for key in person.ssh_keys]
        if len(set(blobs)) != len(blobs):
            raise ConfigError(k("admins"), names + accounts, "two accounts share an SSH key")

    def _check_penalties(self, allowed: list[Network]) -> None:
        if not self.penalty_exempt_cidrs:
            return
        setting = self.key("penaltyExemptCidrs")
        if hardening.IMAGES[self.image] < hardening.PER_SOURCE_PENALTIES:
            have = ".".join(map(str, hardening.IMAGES[self.image]))
            raise ConfigError(setting, list(self.penalty_exempt_cidrs),
                              f"needs OpenSSH >= 9.8 (PerSourcePenalties); {self.image} has {have}")
        at = lambda s: self.key("penaltyExemptCidrs", s)  # noqa: E731 - a one-line path builder
        for i, net in enumerate(check_networks(self.penalty_exempt_cidrs, at, anywhere_ok=False)):
            if not _inside(net, allowed):
                raise ConfigError(self.key("penaltyExemptCidrs", f"[{i}]"), str(net), "must lie inside allowedCidrs")

    @property
    def admin_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.admins)

    @property
    def service_account_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.service_accounts)

    @property
    def ssh_ports(self) -> tuple[int, ...]:
        """Ports the firewall opens: the SSH port, and the previous one while it changes."""
        return (self.ssh_port,) if self.previous_ssh_port is None else (self.ssh_port, self.previous_ssh_port)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p.capitalize() for p in rest)


def check_user_name(name: object, key: str) -> None:
    if not isinstance(name, str) or not _USERNAME.fullmatch(name):
        raise ConfigError(key, name, "must be a Linux user name: [a-z_][a-z0-9_-]{0,31}")
    if name in RESERVED_NAMES:
        raise ConfigError(key, name, "is a system account or group name on the images")


def check_keys(keys: object, key: str) -> None:
    if not isinstance(keys, tuple | list):
        raise ConfigError(key, keys, "needs a list of public key lines")
    if not keys:
        raise ConfigError(key, [], "needs at least one public key")
    if len(keys) > MAX_LIST:
        raise ConfigError(key, f"{len(keys)} keys", f"lists more than {MAX_LIST} keys")
    for i, line in enumerate(keys):
        check_ssh_public_key(line, f"{key}[{i}]")
    if len({key_blob(k) for k in keys}) != len(keys):
        raise ConfigError(key, NOT_SHOWN, "lists the same key twice")


def check_networks(cidrs: object, at: Callable[[str], str], *, anywhere_ok: bool) -> list[Network]:
    """The parsed networks of a CIDR list setting (network addresses, no host bits, no duplicates).

    ``at(suffix)``: the setting's config path with ``suffix`` (``[2]``) in its place."""
    key = at("")
    if not isinstance(cidrs, tuple | list):
        raise ConfigError(key, cidrs, "must be a list of networks such as 198.51.100.0/24")
    if len(cidrs) > MAX_LIST:
        raise ConfigError(key, f"{len(cidrs)} networks", f"lists more than {MAX_LIST} networks")
    networks: list[Network] = []
    for i, cidr in enumerate(cidrs):
        if not isinstance(cidr, str) or not cidr.isascii() or not cidr.isprintable():
            raise ConfigError(at(f"[{i}]"), cidr, "is not a network address such as 198.51.100.0/24")
        try:
            networks.append(ipaddress.ip_network(cidr, strict=True))
        except ValueError as exc:
            raise ConfigError(at(f"[{i}]"), cidr, f"is not a network address ({exc})") from None
    if len(set(networks)) != len(networks):
        raise ConfigError(key, list(cidrs), "lists a network twice")
    if not anywhere_ok:
        for version, share in public_share(networks).items():
            if share < ANYWHERE_SHARE:
                continue
            # Name the one network that is "anywhere" by itself, else the list whose union is.
            alone = [i for i, n in enumerate(networks) if public_share([n]).get(version, 0) >= ANYWHERE_SHARE]
            where, shown = (at(f"[{alone[0]}]"), cidrs[alone[0]]) if alone else (key, list(cidrs))
            raise ConfigError(where, shown, f"opens SSH to {share:.0%} of the public IPv{version} internet; "
                              "set allowSshFromAnywhere: true to mean it")
    return networks


def _inside(net: Network, allowed: Iterable[Network]) -> bool:
    return any(net.version == a.version and net.subnet_of(a) for a in allowed)  # type: ignore[arg-type]


def covers(networks: Iterable[Network], others: Iterable[Network]) -> bool:
    """Whether the union of ``networks`` holds every one of ``others`` (adjacent networks merged first)."""
    nets = list(networks)
    merged: list[Network] = [*ipaddress.collapse_addresses([n for n in nets if n.version == 4]),
                             *ipaddress.collapse_addresses([n for n in nets if n.version == 6])]
    return all(_inside(o, merged) for o in others)


# The address space that is not the public internet (RFC 6890 and friends): private, loopback, link-local,
# documentation, benchmarking, CGNAT, multicast and reserved ranges. IPv6's public space is 2000::/3.
_NON_PUBLIC: dict[int, tuple[Network, ...]] = {
    4: tuple(ipaddress.ip_network(n) for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
        "203.0.113.0/24", "224.0.0.0/3",
    )),
    6: tuple(ipaddress.ip_network(n) for n in ("2001:db8::/32", "2001::/32", "2002::/16", "3fff::/20")),
}  # fmt: skip
_UNIVERSE: dict[int, Network] = {4: ipaddress.ip_network("0.0.0.0/0"), 6: ipaddress.ip_network("2000::/3")}


def _public_size(version: int) -> int:
    return _UNIVERSE[version].num_addresses - sum(_overlap(n, _UNIVERSE[version]) for n in _NON_PUBLIC[version])


def _overlap(a: Network, b: Network) -> int:
    """Addresses two CIDR networks share (one holds the other, or they are disjoint)."""
    if a.subnet_of(b):  # type: ignore[arg-type]
        return a.num_addresses
    if b.subnet_of(a):  # type: ignore[arg-type]
        return b.num_addresses
    return 0


def public_share(networks: Iterable[Network]) -> dict[int, float]:
    """IP version -> the share of that version's public address space the union of ``networks`` covers.

    Judged by coverage, not by prefix length: 0.0.0.0/1 plus 128.0.0.0/1, or 2000::/3, are the whole internet."""
    out: dict[int, float] = {}
    every = list(networks)
    for version in (4, 6):
        nets = ipaddress.collapse_addresses([n for n in every if n.version == version])  # type: ignore[type-var]
        covered = 0
        for net in nets:
            covered += _overlap(net, _UNIVERSE[version]) - sum(_overlap(net, special) for special in _NON_PUBLIC[version])
        if covered:
            out[version] = covered / _public_size(version)
    return out


def key_blob(line: str) -> str:
    """The base64 part of a public key line: what identifies the key, whatever its comment."""
    parts = line.split()
    return parts[1] if len(parts) > 1 else line


def check_ssh_public_key(line: object, key: str) -> None:
    """Raise ConfigError unless ``line`` is one strong OpenSSH public key without options, whose comment is a
    printable label (sshd and the agent write it to authorized_keys: no line breaks of any kind)."""
    if not isinstance(line, str) or len(line) > 16384:
        raise ConfigError(key, NOT_SHOWN, "must be one OpenSSH public key line")
    if "PRIVATE KEY" in line or line.lstrip().startswith("-----BEGIN"):
        # Never echoed: it is (part of) a private key.
        raise ConfigError(key, NOT_SHOWN, "is a private key: give the public half (the .pub file's line)")
    if not line.isprintable():
        raise ConfigError(key, line, "must be one line of printable characters (no control or line-break characters)")
    parts = line.split(" ")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ConfigError(key, line, "must be 'TYPE BASE64 [comment]'")
    kind, b64 = parts[0], parts[1]
    if kind not in SSH_KEY_TYPES:
        raise ConfigError(key, kind[:40], f"key type not accepted; use one of {sorted(SSH_KEY_TYPES)}")
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(key, b64[:20] + "...", "key data is not base64") from None
    if _ssh_string(blob, 0)[0] != kind.encode():
        raise ConfigError(key, kind, "key type does not match the key data")
    if kind.startswith("sk-"):
        return  # security-key types: fixed-size curves, the structure check above is all there is
    try:
        loaded = load_ssh_public_key(f"{kind} {b64}".encode())
    except (ValueError, TypeError) as exc:
        raise ConfigError(key, f"{kind} {b64[:20]}...", f"is not a valid key ({exc})") from None
    minimum = SSH_KEY_TYPES[kind]
    if isinstance(loaded, rsa.RSAPublicKey) and loaded.key_size < minimum:
        raise ConfigError(key, f"{kind} ({loaded.key_size} bits)", f"RSA keys need at least {minimum} bits")


def _ssh_string(blob: bytes, offset: int) -> tuple[bytes, int]:
    if len(blob) < offset + 4:
        return b"", offset
    (n,) = struct.unpack(">I", blob[offset : offset + 4])
    return blob[offset + 4 : offset + 4 + n], offset + 4 + n
