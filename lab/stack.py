"""The lab's server: a stack config's server, with lab-only overrides (the guest image, throwaway keys).

:func:`choose` reads the user's config as ``pulumi up`` would (errors name the setting where it was written),
:func:`lab_values` makes the lab stack's config from it: only the chosen server, its image mapped to a lab
guest, its admins' and service accounts' keys replaced; nothing else changes. ``lab.up`` runs the real program
with it. :func:`lab_config` and :func:`render_server` render a server directly (fresh secrets), for the VM tests.
"""

from __future__ import annotations

import copy
import getpass
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from cloudinit import hardening, render, secrets, stackconfig
from cloudinit.model import SSH_KEY_TYPES, Server, check_ssh_public_key
from lab.image import RELEASES
from vpsctl.errors import CliError
from vpsctl.files import load_stack_file, write_private
from vpsctl.render import server_secrets
from vpsctl.verify import load_identity

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


def make_key(directory: Path, name: str, file: str | None = None) -> LabKey:
    """A new Ed25519 key pair for ``name`` in ``directory``: ``file`` (default ``id_ed25519_<name>``) and ``.pub``."""
    key = ed25519.Ed25519PrivateKey.generate()
    path = directory / (file or f"id_ed25519_{name}")
    write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    path.with_name(path.name + ".pub").write_text(f"{public} lab-{name}\n")
    return LabKey(path=path, public=f"{public} lab-{name}")


def refuse_public(path: Path) -> None:
    """``--identity`` is always a PRIVATE key file: a public one given by mistake is bad input naming the option."""
    try:
        head = path.read_bytes()[:64].split(b" ", 1)[0].decode(errors="replace")
    except OSError as exc:
        raise CliError(f"--identity: cannot read {path}: {exc.strerror}") from None
    if path.suffix == ".pub" or head in SSH_KEY_TYPES:
        raise CliError(f"--identity: {path} is a public key; give the private key file (the lab derives its public half)")


def identity_public(path: Path) -> str:
    """The public key line of the PRIVATE key file given as ``--identity`` (the lab derives it); a public key given
    by mistake, or a key the servers would refuse, is bad input naming the option."""
    refuse_public(path)
    ask = (lambda: getpass.getpass(f"passphrase for {path}: ")) if sys.stdin.isatty() else None
    key = load_identity(path, ask)
    line = f"{key.get_name()} {key.get_base64()} lab-identity"
    check_ssh_public_key(line, "--identity")
    return line


def guest_release(image: str) -> str:
    """The lab guest for a Hetzner image: a Debian image runs as itself; any other as debian-13 if its sshd has
    PerSourcePenalties (a config may rely on them: penaltyExemptCidrs), else as debian-12."""
    if image in RELEASES:
        return image
    return "debian-13" if hardening.IMAGES.get(image, (0, 0)) >= hardening.PER_SOURCE_PENALTIES else "debian-12"


@dataclass(frozen=True)
class Choice:
    """The user's config, validated as written, and the server of it the lab runs."""

    values: dict[str, Any]
    """The ``totp-vps:`` values as the user wrote them (namespace stripped)."""
    server: Server
    """That server as the user's config describes it."""
    index: int
    """Its place in ``servers``."""
    encrypted: tuple[str, ...]
    """Encrypted settings the lab cannot read (it makes its own seeds instead)."""

    @property
    def people(self) -> tuple[str, ...]:
        """Who gets a lab key: the server's admins and service accounts."""
        return self.server.admin_names + self.server.service_account_names


def choose(document: Mapping[str, Any], server: str | None) -> Choice:
    """Validate the whole config exactly as the program does (errors name the setting where it was written)
    and pick ``server`` (default: the first)."""
    values, encrypted = stackconfig.from_stack_file(document)
    parsed = stackconfig.parse(values)
    names = [s.name for s in parsed.servers]
    chosen = server or names[0]
    if chosen not in names:
        raise CliError(f"--server: {chosen!r} is not in the stack config (servers: {', '.join(names)})")
    index = names.index(chosen)
    return Choice(values=copy.deepcopy(values), server=parsed.servers[index], index=index, encrypted=tuple(sorted(encrypted)))


def lab_values(choice: Choice, release: str, keys: Mapping[str, str], identity_files: Mapping[str, str]) -> dict[str, Any]:
    """The lab stack's config: the user's, with only the chosen server, its image ``release``, ``keys`` (name ->
    public key line) for its admins and service accounts, and the operator's identityFile -> its lab key file.

    Validated first with every server kept, so an error (say, ``--image debian-12`` for a server that needs
    PerSourcePenalties) names the setting where the user wrote it."""
    values = copy.deepcopy(choice.values)
    raw = values["servers"][choice.index]
    if choice.server.image != release:  # otherwise left as written (perhaps inherited from defaults)
        raw["image"] = release
    for group in ("admins", "serviceAccounts"):
        for person in values.get(group) or []:
            if person.get("name") in keys:
                person["sshKeys"] = [keys[person["name"]]]
    operator = values.get("operator")
    if isinstance(operator, dict) and operator.get("admin") in identity_files:
        operator["identityFile"] = identity_files[operator["admin"]]
    stackconfig.parse(values)
    values["servers"] = [raw]
    return values


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
        raise CliError(f"--server: {chosen!r} is not in the stack config (servers: {', '.join(map(str, names))})")
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
