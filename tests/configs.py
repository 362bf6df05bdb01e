"""Realistic stack configs for tests and benchmarks (deterministic keys, no files needed)."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
import pyotp
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from cloudinit import render_user_data, stackconfig
from cloudinit.model import Admin, Server
from cloudinit.secrets import (
    AdminSecrets,
    KeyPair,
    backup_codes_from_bytes,
    fresh_admin_secrets,
    fresh_key_pair,
    seed_from_bytes,
)
from components import mockengine

RANDOM = "random:index/randomBytes:RandomBytes"
SERVER_TYPE = "hcloud:index/server:Server"
ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "Pulumi.example.yaml"


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
    def secret(seed_name: str, codes_name: str) -> AdminSecrets:
        seed = mockengine.unwrap(run.one(RANDOM, f"{server.name}-{seed_name}").outputs["base64"])
        codes = mockengine.unwrap(run.one(RANDOM, f"{server.name}-{codes_name}").outputs["base64"])
        return AdminSecrets(seed=seed_from_bytes(base64.b64decode(seed)),
                            backup_codes=backup_codes_from_bytes(base64.b64decode(codes), server.backup_codes))

    out = {}
    for admin in server.admins:
        # The current seed is in the slot of the rotation's parity (components/totp_server.py).
        login = secret(f"{admin.name}-totp-seed-{'ab'[admin.rotation % 2]}", f"{admin.name}-backup-codes")
        sudo = secret(f"{admin.name}-sudo-seed", f"{admin.name}-sudo-backup-codes") if admin.sudo == "totp" else None
        out[admin.name] = AdminSecrets(seed=login.seed, backup_codes=login.backup_codes, sudo=sudo)
    key = mockengine.unwrap(run.one("tls:index/privateKey:PrivateKey", f"{server.name}-host-key").outputs)
    return out, KeyPair(private_openssh=key["privateKeyOpenssh"], public_openssh=key["publicKeyOpenssh"].strip())


# ------------------------------------------------------------------------------- loopback servers


@dataclass
class Fleet:
    """One rendered server for the loopback harness (tests/sshd_harness.py) and the private halves of
    everything in it: the admins' keys and secrets, and the stack's signing key."""

    server: Server
    user_data: str
    keys: dict[str, paramiko.PKey]
    public: dict[str, str]
    secrets: dict[str, AdminSecrets]
    signer: KeyPair

    def totp(self, user: str) -> pyotp.TOTP:
        return pyotp.TOTP(self.secrets[user].seed)

    def code(self, user: str, steps_ahead: int = 0) -> str:
        """The TOTP code ``steps_ahead`` 30-s steps from now (WINDOW_SIZE 3 accepts one step either side)."""
        return self.totp(user).at(time.time() + 30 * steps_ahead)

    def wrong_code(self, user: str) -> str:
        valid = {self.code(user, k) for k in range(-3, 4)}
        guess = (int(self.code(user)) + 500_000) % 1_000_000
        while f"{guess:06d}" in valid:
            guess = (guess + 1) % 1_000_000
        return f"{guess:06d}"


def make_fleet(admins: Sequence[str] = ("alice", "bob"), *, image: str = "debian-12",
               key_kinds: Mapping[str, str] | None = None, admin_options: Mapping[str, Mapping[str, Any]] | None = None,
               **server_options: Any) -> Fleet:
    """A server on a free loopback port (its firewall range: 127.0.0.0/8) with fresh keys and secrets."""
    from sshd_harness import free_port, new_key

    keys, public, people = {}, {}, []
    for name in admins:
        keys[name], public[name] = new_key(f"{name}@laptop", (key_kinds or {}).get(name, "ed25519"))
        people.append(Admin(name=name, ssh_keys=(public[name],), **(admin_options or {}).get(name, {})))
    server_options.setdefault("ssh_port", free_port())
    server_options.setdefault("allowed_cidrs", ("127.0.0.0/8",))
    server = Server(name="web-1", admins=tuple(people), image=image, **server_options)
    secrets = {a.name: fresh_admin_secrets(server.backup_codes, sudo=a.sudo == "totp") for a in server.admins}
    signer = fresh_key_pair()
    user_data = render_user_data(server, secrets, fresh_key_pair(), signer.public_openssh)
    return Fleet(server=server, user_data=user_data, keys=keys, public=public, secrets=secrets, signer=signer)


# ------------------------------------------------------------------- the program's stack, for day two


@dataclass
class Stack:
    """The program's outputs and user-data for one config (one server, web-1), and the private keys on disk."""

    config: dict[str, Any]
    outputs: dict[str, Any]
    user_data: str
    outputs_file: Path
    key_files: dict[str, Path]

    def totp(self, admin: str) -> pyotp.TOTP:
        return pyotp.parse_uri(self.outputs["enrollment"]["web-1"][admin]["otpauthUri"])  # type: ignore[return-value]

    def key(self, name: str) -> paramiko.PKey:
        from sshd_harness import load_private_key

        return load_private_key(self.key_files[name].read_text())

    def fresh_code(self, admin: str, used: set[str]) -> str:
        """A code valid now that was not used yet (DISALLOW_REUSE): now, the next step's, the last one's."""
        totp, now = self.totp(admin), time.time()
        code = next(c for c in (totp.at(now), totp.at(now + 30), totp.at(now - 30)) if c not in used)
        used.add(code)
        return code


def keys_in(tmp: Path, names: Sequence[str]) -> tuple[dict[str, Path], dict[str, str]]:
    """Deterministic key pairs for ``names``: private key files in ``tmp`` (0600) and the public lines."""
    files, public = {}, {}
    for name in names:
        private, public[name] = ed25519_key(f"{name}@day-two")
        files[name] = tmp / f"id_{name}"
        files[name].write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                      serialization.NoEncryption()))
        files[name].chmod(0o600)
    return files, public


def make_stack(tmp: Path, config: dict[str, Any], key_files: dict[str, Path], tag: str) -> Stack:
    """The real program under the mock engine for ``config``: its outputs (written to a 0600 file for
    ``vpsctl sync --from``) and web-1's user-data."""
    run = mockengine.run(config)
    outputs = mockengine.unwrap(run.stack_outputs)
    path = tmp / f"outputs-{tag}.json"
    path.write_text(json.dumps(outputs))
    path.chmod(0o600)
    user_data = mockengine.unwrap(run.one(SERVER_TYPE, "web-1-server").inputs)["userData"]
    return Stack(config, outputs, user_data, path, key_files)


def sync(stack: Stack, admin: str, *extra: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``python -m vpsctl sync`` as a user runs it, against 127.0.0.1 (``extra``: more options, e.g. --port)."""
    argv = [sys.executable, "-m", "vpsctl", "sync", "--from", str(stack.outputs_file), "--host", "127.0.0.1",
            "--as", admin, "--identity", str(stack.key_files[admin]), *extra]
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=timeout, check=False)
