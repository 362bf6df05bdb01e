"""The lab's server: a stack config's server rendered by the same code as ``vpsctl render`` and ``pulumi up``,
with lab-only overrides (guest image, SSH port, throwaway admin keys)."""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from cloudinit import render, secrets, stackconfig
from cloudinit.model import Server
from vpsctl.files import load_stack_file, write_private
from vpsctl.render import server_secrets

EXAMPLE = Path(__file__).resolve().parent.parent / "Pulumi.example.yaml"


@dataclass(frozen=True)
class LabKey:
    """A throwaway SSH key pair for one admin; the private half lives in a 0700 directory."""

    path: Path
    """OpenSSH private key file (mode 0600)."""
    public: str
    """``ssh-ed25519 AAAA... comment`` line."""

    def pkey(self) -> paramiko.PKey:
        return paramiko.Ed25519Key.from_private_key_file(str(self.path))


def make_key(directory: Path, name: str) -> LabKey:
    key = ed25519.Ed25519PrivateKey.generate()
    path = directory / f"id_ed25519_{name}"
    write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    (directory / f"id_ed25519_{name}.pub").write_text(f"{public} lab-{name}\n")
    return LabKey(path=path, public=f"{public} lab-{name}")


def key_dir() -> Path:
    """A fresh 0700 directory for throwaway keys (the caller removes it)."""
    return Path(tempfile.mkdtemp(prefix="totp-vps-lab-keys-"))


@dataclass(frozen=True)
class LabServer:
    """A rendered lab server and the secrets a person (or test) needs to log in."""

    server: Server
    user_data: str
    admins: Mapping[str, secrets.AdminSecrets]
    host_key: secrets.KeyPair


def lab_config(document: Mapping[str, Any], *, server: str | None = None, image: str | None = None,
               ssh_port: int | None = None, keys: Mapping[str, str] | None = None) -> Server:
    """One server of a parsed stack file, with overrides, validated exactly like the real program.

    ``keys``: admin name -> the public key line that replaces that admin's keys."""
    plain, _encrypted = stackconfig.from_stack_file(document)
    plain = copy.deepcopy(plain)
    raws = plain.get("servers") or []
    names = [r.get("name") for r in raws if isinstance(r, Mapping)]
    chosen = server or (names[0] if names else None)
    if chosen not in names:
        raise ValueError(f"server {chosen!r} is not in the stack config (servers: {names})")
    raw = dict(raws[names.index(chosen)])
    if image is not None:
        raw["image"] = image
    if ssh_port is not None:
        raw["sshPort"] = ssh_port
    plain["servers"] = [raw]
    for admin in plain.get("admins") or []:
        if keys and admin.get("name") in keys:
            admin["sshKeys"] = [keys[admin["name"]]]
    return stackconfig.parse(plain).servers[0]


def load_document(path: Path = EXAMPLE) -> Mapping[str, Any]:
    """The stack file (the example by default), read as ``vpsctl`` reads it."""
    return load_stack_file(str(path))


def render_server(server: Server) -> LabServer:
    """Fresh secrets and the user-data, through the functions ``vpsctl render`` uses."""
    admins, host_key = server_secrets(server, {})
    user_data = render.render_user_data(server, admins, host_key, secrets.fresh_key_pair().public_openssh)
    return LabServer(server=server, user_data=user_data, admins=admins, host_key=host_key)
