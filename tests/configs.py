"""Realistic stack configs for tests and benchmarks (deterministic keys, no files needed)."""

from __future__ import annotations

import base64
import copy
import hashlib
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from cloudinit import stackconfig
from cloudinit.model import Server
from cloudinit.secrets import AdminSecrets, KeyPair, backup_codes_from_bytes, seed_from_bytes
from components import mockengine

RANDOM = "random:index/randomBytes:RandomBytes"
EXAMPLE = Path(__file__).resolve().parent.parent / "Pulumi.example.yaml"


def ed25519_key(label: str) -> tuple[ed25519.Ed25519PrivateKey, str]:
    """A deterministic key pair for ``label`` and its public key line."""
    key = ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(label.encode()).digest())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return key, f"{public} {label}"


def example() -> dict[str, Any]:
    """The shipped example's ``totp-vps:*`` values (namespace stripped)."""
    plain, _ = stackconfig.from_stack_file(yaml.safe_load(EXAMPLE.read_text()))
    return copy.deepcopy(plain)


def fleet(servers: int, admins: int, **server_overrides: Any) -> dict[str, Any]:
    """``servers`` x ``admins``: every admin on every server."""
    return {
        "issuer": "fleet",
        "admins": [{"name": f"admin{i}", "sshKeys": [ed25519_key(f"admin{i}@laptop")[1]]} for i in range(admins)],
        "defaults": {"allowedCidrs": ["198.51.100.0/24", "2001:db8::/32"], "image": "debian-12"},
        "servers": [{"name": f"srv-{i}", **server_overrides} for i in range(servers)],
    }


def secrets_from_state(run: mockengine.ProgramRun, server: Server) -> tuple[dict[str, AdminSecrets], KeyPair]:
    """Recompute the admins' secrets from the stateful resources' outputs, as the engine holds them."""
    out = {}
    for admin in server.admin_names:
        seed = mockengine.unwrap(run.one(RANDOM, f"{server.name}-{admin}-totp-seed").outputs["base64"])
        codes = mockengine.unwrap(run.one(RANDOM, f"{server.name}-{admin}-backup-codes").outputs["base64"])
        out[admin] = AdminSecrets(
            seed=seed_from_bytes(base64.b64decode(seed)),
            backup_codes=backup_codes_from_bytes(base64.b64decode(codes), server.backup_codes),
        )
    key = mockengine.unwrap(run.one("tls:index/privateKey:PrivateKey", f"{server.name}-host-key").outputs)
    return out, KeyPair(private_openssh=key["privateKeyOpenssh"], public_openssh=key["publicKeyOpenssh"].strip())
