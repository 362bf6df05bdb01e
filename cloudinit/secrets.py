"""Turning random bytes into TOTP seeds, backup codes and key pairs.

The Pulumi component gets its bytes from stateful resources (so they survive every ``pulumi up``);
``vpsctl render`` and the lab get fresh ones from the OS. Both go through the same functions here, so a
seed or a code looks the same whichever path made it.
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
from cloudinit.model import NOT_SHOWN, ConfigError

CODE_LOW = 10_000_000  # a leading zero would end pam_google_authenticator's scratch-code parsing
CODE_SPAN = 90_000_000
BYTES_PER_CODE = 8  # 64 bits reduced mod 9e7: the bias is below 1e-11
_BASE32 = re.compile(r"[A-Z2-7]+")


@dataclass(frozen=True)
class AdminSecrets:
    """One admin's TOTP seed and backup codes on one server (and, with ``sudo: totp``, those sudo asks for)."""

    seed: str
    """Base32 seed, no padding."""
    backup_codes: tuple[str, ...]
    """Single-use 8-digit codes."""
    sudo: AdminSecrets | None = None
    """The second seed and codes sudo asks for (``sudo: totp``), kept root-owned on the server."""

    def __repr__(self) -> str:  # never print a secret by accident
        return f"AdminSecrets(seed=[secret], backup_codes=[{len(self.backup_codes)} secret], sudo={self.sudo!r})"


@dataclass(frozen=True)
class KeyPair:
    """An Ed25519 key pair in OpenSSH format: the server's pinned host key, or the stack's state-signing key."""

    private_openssh: str
    """OpenSSH-format private key (secret)."""
    public_openssh: str
    """``ssh-ed25519 AAAA...`` public key."""

    def __repr__(self) -> str:
        return f"KeyPair(public_openssh={self.public_openssh!r}, private_openssh=[secret])"


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


def check_seed(seed: object, key: str) -> str:
    """Validate a seed supplied by the user (an override); returns it normalised. Errors never show it."""
    normal = seed.replace(" ", "").upper().rstrip("=") if isinstance(seed, str) else ""
    if not _BASE32.fullmatch(normal):
        raise ConfigError(key, NOT_SHOWN, "must be base32 (A-Z, 2-7)")
    if len(normal) * 5 < SEED_BYTES * 8:
        bits = SEED_BYTES * 8
        raise ConfigError(key, NOT_SHOWN, f"must carry at least {bits} bits ({bits // 5} base32 characters)")
    return normal


def fresh_admin_secrets(count: int, *, sudo: bool = False) -> AdminSecrets:
    def one() -> AdminSecrets:
        return AdminSecrets(
            seed=seed_from_bytes(_os_random.token_bytes(SEED_BYTES)),
            backup_codes=backup_codes_from_bytes(_os_random.token_bytes(count * BYTES_PER_CODE), count),
        )

    login = one()
    return AdminSecrets(seed=login.seed, backup_codes=login.backup_codes, sudo=one() if sudo else None)


def key_pair_from_private(private_openssh: str) -> KeyPair:
    key = serialization.load_ssh_private_key(private_openssh.encode(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return KeyPair(private_openssh=private_openssh, public_openssh=public)


def fresh_key_pair() -> KeyPair:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return KeyPair(private_openssh=private, public_openssh=public)


def _totp_json(s: AdminSecrets) -> dict[str, object]:
    return {"seed": s.seed, "backupCodes": list(s.backup_codes)}


def to_json(admins: Mapping[str, AdminSecrets], host_key: KeyPair) -> dict[str, object]:
    """One server's part of the ``--secrets`` file that ``vpsctl render`` writes next to the user-data."""
    return {
        "hostKey": {"private": host_key.private_openssh, "public": host_key.public_openssh},
        "admins": {name: {**_totp_json(s), **({"sudo": _totp_json(s.sudo)} if s.sudo else {})} for name, s in admins.items()},
    }


def _totp_from_json(item: object, where: str) -> AdminSecrets:
    if not isinstance(item, Mapping) or not isinstance(item.get("backupCodes"), list):
        raise ConfigError(where, NOT_SHOWN, "needs 'seed' and 'backupCodes'")
    codes = tuple(item["backupCodes"])
    if not all(isinstance(c, str) and c.isdigit() and CODE_LOW <= int(c) < CODE_LOW + CODE_SPAN for c in codes):
        raise ConfigError(f"{where}.backupCodes", NOT_SHOWN, "must be 8-digit codes 10000000-99999999")
    return AdminSecrets(seed=check_seed(item.get("seed"), f"{where}.seed"), backup_codes=codes)


def from_json(data: object, where: str) -> tuple[dict[str, AdminSecrets], KeyPair]:
    """One server's secrets from a ``--secrets`` file; errors name the place, never a value."""
    if not isinstance(data, Mapping):
        raise ConfigError(where, NOT_SHOWN, "must be an object with 'hostKey' and 'admins'")
    host = data.get("hostKey")
    admins = data.get("admins")
    if not isinstance(host, Mapping) or not isinstance(admins, Mapping):
        raise ConfigError(where, NOT_SHOWN, "needs 'hostKey' and 'admins' objects")
    out = {}
    for name, item in admins.items():
        login = _totp_from_json(item, f"{where}.admins.{name}")
        sudo = _totp_from_json(item["sudo"], f"{where}.admins.{name}.sudo") if "sudo" in item else None
        out[str(name)] = AdminSecrets(seed=login.seed, backup_codes=login.backup_codes, sudo=sudo)
    try:
        pair = key_pair_from_private(str(host.get("private", "")))
    except (ValueError, TypeError):
        raise ConfigError(f"{where}.hostKey.private", NOT_SHOWN, "is not an unencrypted Ed25519 OpenSSH private key") from None
    return out, pair
