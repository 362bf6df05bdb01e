"""The typed, validated description of a server and its admins.

Everything here is pure: no Pulumi, no I/O. Every check raises ConfigError naming the setting by the
same path a user writes in the stack config (``servers[0].allowedCidrs[1]``), so one error message
serves the Pulumi program, ``vpsctl`` and direct Python use alike.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

from cloudinit import catalogue

HETZNER_USER_DATA_LIMIT = 32 * 1024
MAX_BACKUP_CODES = 10  # pam_google_authenticator reads at most ten scratch codes

_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_USERNAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_LABEL_PART = r"[a-zA-Z0-9]([-a-zA-Z0-9_.]{0,61}[a-zA-Z0-9])?"
_LABEL_KEY = re.compile(rf"^({_LABEL_PART}(\.{_LABEL_PART})*/)?{_LABEL_PART}$")
_LABEL_VALUE = re.compile(rf"^({_LABEL_PART})?$")
_FLAGS = ("allow_ssh_from_anywhere", "allow_icmp", "restrict_egress", "allow_forwarding", "ipv4", "ipv6", "protection", "rebuild")
_SHELLS = frozenset({"/bin/bash", "/bin/sh", "/usr/bin/bash", "/usr/bin/zsh", "/bin/zsh", "/usr/bin/fish"})

# Names the images already use for system accounts or groups (cloud-init also creates a group named
# after each user, so a group name here would collide too), plus the images' default login names.
RESERVED_NAMES = frozenset(
    """
    root daemon bin sys sync games man lp mail news uucp proxy www-data backup list irc gnats nobody
    nogroup _apt _chrony messagebus sshd syslog uuidd tcpdump tss landscape pollinate lxd polkitd
    systemd-network systemd-resolve systemd-timesync systemd-coredump usbmux dnsmasq chrony ntp
    admin sudo adm wheel staff users operator debian ubuntu cloud-user
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


class ConfigError(ValueError):
    """A setting with a bad value: the message names the setting and the value, on one line."""

    def __init__(self, key: str, value: object, reason: str, *, secret: bool = False) -> None:
        shown = "[secret]" if secret else _short(value)
        super().__init__(f"{key}: {reason} (got {shown})")
        self.key = key


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True, kw_only=True)
class Admin:
    """One person who may log in: a Linux user with sudo, SSH keys and a TOTP secret."""

    name: str
    """Linux user name (also the TOTP account label)."""
    ssh_keys: tuple[str, ...]
    """OpenSSH public key lines (``ssh-ed25519 AAAA... comment``)."""
    shell: str = "/bin/bash"
    """Login shell."""
    rotation: int = 0
    """Bump to generate a new TOTP seed and backup codes for this admin."""
    where: str = field(default="admins[?]", compare=False, repr=False)
    """Config path of this admin, used in error messages."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _USERNAME.match(self.name):
            raise ConfigError(f"{self.where}.name", self.name, "must be a Linux user name: [a-z_][a-z0-9_-]{0,31}")
        if self.name in RESERVED_NAMES:
            raise ConfigError(f"{self.where}.name", self.name, "is a system account or group name on the images")
        if not self.ssh_keys:
            raise ConfigError(f"{self.where}.sshKeys", list(self.ssh_keys), "needs at least one public key")
        for i, key in enumerate(self.ssh_keys):
            check_ssh_public_key(key, f"{self.where}.sshKeys[{i}]")
        if len(set(map(key_blob, self.ssh_keys))) != len(self.ssh_keys):
            raise ConfigError(f"{self.where}.sshKeys", self.name, "lists the same key twice")
        if self.shell not in _SHELLS:
            raise ConfigError(f"{self.where}.shell", self.shell, f"must be one of {sorted(_SHELLS)}")
        if not isinstance(self.rotation, int) or isinstance(self.rotation, bool) or self.rotation < 0:
            raise ConfigError(f"{self.where}.rotation", self.rotation, "must be a whole number >= 0")


@dataclass(frozen=True, kw_only=True)
class Server:
    """One Hetzner server: where it runs, who may log in, and from where."""

    name: str
    """Server name and hostname (RFC 1123 label)."""
    admins: tuple[Admin, ...]
    """Who may log in (each with key + TOTP)."""
    allowed_cidrs: tuple[str, ...]
    """Networks (IPv4 and IPv6) allowed to reach the SSH port."""
    image: str = "debian-12"
    """Hetzner image name."""
    server_type: str = catalogue.DEFAULT_SERVER_TYPE
    """Hetzner server type."""
    location: str = "fsn1"
    """Hetzner location."""
    ssh_port: int = 22
    """TCP port sshd listens on."""
    allow_ssh_from_anywhere: bool = False
    """Explicit opt-in to let 0.0.0.0/0 or ::/0 reach SSH."""
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
    """Let a changed user-data (or key list) replace this server on the next `pulumi up`."""
    issuer: str = "totp-vps"
    """Issuer shown in the authenticator app."""
    backup_codes: int = 5
    """Backup (scratch) codes per admin."""
    where: str = field(default="servers[?]", compare=False, repr=False)
    """Config path of this server, used in error messages."""

    def __post_init__(self) -> None:
        w = self.where
        if not isinstance(self.name, str) or not _HOSTNAME.match(self.name):
            raise ConfigError(f"{w}.name", self.name, "must be a hostname label: [a-z0-9-], 1-63 chars")
        if problem := catalogue.location_problem(self.location):
            raise ConfigError(f"{w}.location", self.location, problem)
        if problem := catalogue.server_type_problem(self.server_type, self.location):
            raise ConfigError(f"{w}.serverType", self.server_type, problem)
        if problem := catalogue.image_problem(self.image, self.server_type):
            raise ConfigError(f"{w}.image", self.image, problem)
        if not isinstance(self.ssh_port, int) or isinstance(self.ssh_port, bool) or not 1 <= self.ssh_port <= 65535:
            raise ConfigError(f"{w}.sshPort", self.ssh_port, "must be a TCP port 1-65535")
        if not self.admins:
            raise ConfigError(f"{w}.admins", [], "needs at least one admin")
        names = [a.name for a in self.admins]
        if len(set(names)) != len(names):
            raise ConfigError(f"{w}.admins", names, "has duplicate admin names")
        blobs = [key_blob(k) for a in self.admins for k in a.ssh_keys]
        if len(set(blobs)) != len(blobs):
            raise ConfigError(f"{w}.admins", names, "two admins share an SSH key")
        self._check_cidrs()
        for flag in _FLAGS:
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{w}.{camel(flag)}", getattr(self, flag), "must be true or false")
        if not (self.ipv4 or self.ipv6):
            raise ConfigError(f"{w}.ipv4", self.ipv4, "ipv4 and ipv6 cannot both be off: the server is unreachable")
        for k, v in self.labels.items():
            if not isinstance(k, str) or not _LABEL_KEY.match(k):
                raise ConfigError(f"{w}.labels", k, "label key must be [a-zA-Z0-9._-], <= 63 chars, optional prefix/")
            if not isinstance(v, str) or not _LABEL_VALUE.match(v):
                raise ConfigError(f"{w}.labels.{k}", v, "label value must be [a-zA-Z0-9._-], <= 63 chars")
        if not isinstance(self.issuer, str) or not 0 < len(self.issuer) <= 64 or ":" in self.issuer:
            raise ConfigError(f"{w}.issuer", self.issuer, "must be 1-64 characters without ':'")
        codes = self.backup_codes
        if isinstance(codes, bool) or not isinstance(codes, int) or not 1 <= codes <= MAX_BACKUP_CODES:
            raise ConfigError(f"{w}.backupCodes", self.backup_codes, f"must be 1-{MAX_BACKUP_CODES}")

    def _check_cidrs(self) -> None:
        w = self.where
        if not self.allowed_cidrs:
            raise ConfigError(f"{w}.allowedCidrs", [], "needs at least one network allowed to reach SSH")
        for i, cidr in enumerate(self.allowed_cidrs):
            try:
                net = ipaddress.ip_network(cidr, strict=True)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{w}.allowedCidrs[{i}]", cidr, f"is not a network address ({exc})") from None
            if net.prefixlen == 0 and not self.allow_ssh_from_anywhere:
                raise ConfigError(
                    f"{w}.allowedCidrs[{i}]", cidr, "opens SSH to the whole internet; set allowSshFromAnywhere: true to mean it"
                )
        if len(set(self.allowed_cidrs)) != len(self.allowed_cidrs):
            raise ConfigError(f"{w}.allowedCidrs", list(self.allowed_cidrs), "lists a network twice")

    @property
    def admin_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.admins)


def camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p.capitalize() for p in rest)


def key_blob(line: str) -> str:
    """The base64 part of a public key line: what identifies the key, whatever its comment."""
    parts = line.split()
    return parts[1] if len(parts) > 1 else line


def check_ssh_public_key(line: object, key: str) -> None:
    """Raise ConfigError unless ``line`` is one strong OpenSSH public key without options."""
    if not isinstance(line, str) or "\n" in line or "\r" in line:
        raise ConfigError(key, line, "must be one OpenSSH public key line")
    parts = line.split()
    if len(parts) < 2:
        raise ConfigError(key, line, "must be 'TYPE BASE64 [comment]'")
    kind, b64 = parts[0], parts[1]
    if kind not in SSH_KEY_TYPES:
        raise ConfigError(key, kind, f"key type not accepted; use one of {sorted(SSH_KEY_TYPES)}")
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
