"""Turning random bytes into TOTP seeds, backup codes and host keys.

The Pulumi component gets its bytes from stateful resources (so they survive every ``pulumi up``);
``vpsctl render`` gets fresh ones from the OS. Both go through the same functions here, so a seed or a
code looks the same whichever path made it.
"""

from __future__ import annotations

import base64
import re
import secrets as _os_random
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from cloudinit.hardening import SEED_BYTES
from cloudinit.model import ConfigError

CODE_LOW = 10_000_000  # a leading zero would end pam_google_authenticator's scratch-code parsing
CODE_SPAN = 90_000_000
BYTES_PER_CODE = 8  # 64 bits reduced mod 9e7: the bias is below 1e-11
_BASE32 = re.compile(r"^[A-Z2-7]+$")


@dataclass(frozen=True)
class AdminSecrets:
    """One admin's TOTP seed and backup codes on one server."""

    seed: str
    """Base32 seed, no padding."""
    backup_codes: tuple[str, ...]
    """Single-use 8-digit codes."""

    def __repr__(self) -> str:  # never print a secret by accident
        return f"AdminSecrets(seed=[secret], backup_codes=[{len(self.backup_codes)} secret])"


@dataclass(frozen=True)
class HostKey:
    """The server's pinned Ed25519 host key."""

    private_openssh: str
    """OpenSSH-format private key (secret)."""
    public_openssh: str
    """``ssh-ed25519 AAAA...`` public key."""

    def __repr__(self) -> str:
        return f"HostKey(public_openssh={self.public_openssh!r}, private_openssh=[secret])"


def known_hosts_line(address: str, port: int, public_key: str) -> str:
    """The ``known_hosts`` line pinning ``public_key`` (type and base64; a comment is dropped)."""
    host = address if port == 22 else f"[{address}]:{port}"
    return f"{host} {' '.join(public_key.split()[:2])}"


def seed_from_bytes(raw: bytes) -> str:
    if len(raw) < SEED_BYTES:
        raise ValueError(f"a TOTP seed needs {SEED_BYTES} random bytes, got {len(raw)}")
    return base64.b32encode(raw).decode().rstrip("=")


def backup_codes_from_bytes(raw: bytes, count: int) -> tuple[str, ...]:
    if len(raw) < count * BYTES_PER_CODE:
        raise ValueError(f"{count} backup codes need {count * BYTES_PER_CODE} random bytes, got {len(raw)}")
    return tuple(
        str(CODE_LOW + int.from_bytes(raw[i * BYTES_PER_CODE : (i + 1) * BYTES_PER_CODE], "big") % CODE_SPAN)
        for i in range(count)
    )


def check_seed(seed: str, key: str) -> str:
    """Validate a seed supplied by the user (an override); returns it normalised."""
    normal = seed.replace(" ", "").upper().rstrip("=") if isinstance(seed, str) else ""
    if not _BASE32.match(normal):
        raise ConfigError(key, seed, "must be base32 (A-Z, 2-7)", secret=True)
    if len(normal) * 5 < SEED_BYTES * 8:
        bits = SEED_BYTES * 8
        raise ConfigError(key, seed, f"must carry at least {bits} bits ({bits // 5} base32 characters)", secret=True)
    return normal


def fresh_admin_secrets(count: int) -> AdminSecrets:
    return AdminSecrets(
        seed=seed_from_bytes(_os_random.token_bytes(SEED_BYTES)),
        backup_codes=backup_codes_from_bytes(_os_random.token_bytes(count * BYTES_PER_CODE), count),
    )


def fresh_host_key() -> HostKey:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return HostKey(private_openssh=private, public_openssh=public)


def to_json(admins: Mapping[str, AdminSecrets], host_key: HostKey) -> dict[str, object]:
    """The ``--secrets`` file shape, also what ``vpsctl render`` writes next to the user-data."""
    return {
        "hostKey": {"private": host_key.private_openssh, "public": host_key.public_openssh},
        "admins": {name: {"seed": s.seed, "backupCodes": list(s.backup_codes)} for name, s in admins.items()},
    }


def from_json(data: Mapping[str, object], where: str) -> tuple[dict[str, AdminSecrets], HostKey]:
    host = data.get("hostKey")
    admins = data.get("admins")
    if not isinstance(host, Mapping) or not isinstance(admins, Mapping):
        raise ConfigError(where, sorted(data), "needs 'hostKey' and 'admins' objects")
    out = {}
    for name, item in admins.items():
        if not isinstance(item, Mapping) or not isinstance(item.get("backupCodes"), list):
            raise ConfigError(f"{where}.admins.{name}", "...", "needs 'seed' and 'backupCodes'", secret=True)
        codes = tuple(str(c) for c in item["backupCodes"])
        if not all(c.isdigit() and CODE_LOW <= int(c) < CODE_LOW + CODE_SPAN for c in codes):
            raise ConfigError(f"{where}.admins.{name}.backupCodes", "...", "must be 8-digit codes 10000000-99999999", secret=True)
        seed = check_seed(str(item.get("seed", "")), f"{where}.admins.{name}.seed")
        out[str(name)] = AdminSecrets(seed=seed, backup_codes=codes)
    return out, HostKey(private_openssh=str(host.get("private", "")), public_openssh=str(host.get("public", "")))
