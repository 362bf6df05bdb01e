"""Write each server's user-data from a stack config file, offline, exactly as "pulumi up" would send it.

For every server of the config (or each one named with --server) it writes, all with mode 0600:
  DIR/<server>/user-data          the cloud-init user-data the server boots with
  DIR/<server>/host_ed25519.pub   the server's SSH host public key, the one its known_hosts line pins
  DIR/secrets.json                the TOTP seeds, backup codes and host keys behind them (secret)
Seeds, codes and host keys are new on every run, unless --secrets names a secrets.json written before:
then the output is the same, byte for byte. It prints paths and sizes, never a secret.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cloudinit import render, secrets, stackconfig
from cloudinit.model import NOT_SHOWN, ConfigError, Server
from vpsctl.errors import EXIT_OK, CliError
from vpsctl.files import load_json, load_stack_file, write_private

SECRETS_FILE = "secrets.json"
SIGNING_KEY = "signingKey"  # beside the servers' entries (no hostname has capitals)
EXITS = {EXIT_OK: "every file written"}
README_SECTION = "Operator CLI"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", required=True, help="stack config file (Pulumi.<stack>.yaml), plain values")
    parser.add_argument(
        "--out", metavar="DIR", required=True, type=folder,
        help=f"output folder: DIR/<server>/user-data, DIR/<server>/host_ed25519.pub, DIR/{SECRETS_FILE}",
    )
    parser.add_argument(
        "--secrets", metavar="FILE", help=f"reuse seeds, codes and host keys from a {SECRETS_FILE} written before"
    )
    parser.add_argument("--server", metavar="S", action="append", help="only this server (repeatable)")


def folder(value: str) -> str:
    """--out: a folder, or a path where one can be made; refused before anything is read or written."""
    path = Path(value)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{existing} is not a folder")
    return value


def load_config(path: str) -> stackconfig.StackConfig:
    plain, _encrypted = stackconfig.from_stack_file(load_stack_file(path))
    return stackconfig.parse(plain)


def select(config: stackconfig.StackConfig, names: list[str] | None) -> tuple[Server, ...]:
    if not names:
        return config.servers
    known = {s.name: s for s in config.servers}
    for name in names:
        if name not in known:
            raise CliError(f"--server: {name!r} is not in the config (servers: {sorted(known)})")
    return tuple(known[n] for n in names)


def server_secrets(server: Server, reuse: Mapping[str, Any]) -> tuple[dict[str, secrets.AdminSecrets], secrets.KeyPair]:
    """Secrets for ``server``: from the --secrets file where it has them, fresh otherwise."""
    if server.name in reuse:
        admins, host_key = secrets.from_json(reuse[server.name], f"--secrets.{server.name}")
    else:
        admins, host_key = {}, secrets.fresh_key_pair()
    for admin in server.admins:
        have = admins.get(admin.name)
        if have is None or (admin.sudo == "totp") != (have.sudo is not None):
            admins[admin.name] = secrets.fresh_admin_secrets(server.backup_codes, sudo=admin.sudo == "totp")
        elif len(have.backup_codes) != server.backup_codes:
            raise ConfigError(f"--secrets.{server.name}.admins.{admin.name}.backupCodes", len(have.backup_codes),
                              f"count differs from backupCodes {server.backup_codes}")
    return {n: admins[n] for n in server.admin_names}, host_key


def signing_key(reuse: Mapping[str, Any]) -> secrets.KeyPair:
    """The key that signs desired states for every server of the stack: from --secrets, or fresh."""
    saved = reuse.get(SIGNING_KEY)
    if saved is None:
        return secrets.fresh_key_pair()
    try:
        return secrets.key_pair_from_private(str(saved.get("private", "")) if isinstance(saved, Mapping) else "")
    except (ValueError, TypeError):
        raise ConfigError(f"--secrets.{SIGNING_KEY}.private", NOT_SHOWN, "is not an unencrypted Ed25519 private key") from None


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    reuse = load_json(args.secrets, "--secrets") if args.secrets else {}
    if not isinstance(reuse, Mapping):
        raise CliError(f"--secrets: {args.secrets} must hold an object keyed by server name")
    out = Path(args.out)
    everything = dict(reuse)
    signer = signing_key(reuse)
    everything[SIGNING_KEY] = {"private": signer.private_openssh, "public": signer.public_openssh}
    rendered = []
    for server in select(config, args.server):  # every server first: a refused one leaves no half-written DIR
        admin_secrets, host_key = server_secrets(server, reuse)
        user_data = render.render_user_data(server, admin_secrets, host_key, signer.public_openssh)
        everything[server.name] = secrets.to_json(admin_secrets, host_key)
        rendered.append((server, user_data, host_key))
    for server, user_data, host_key in rendered:
        write_private(out / server.name / "user-data", user_data)
        write_private(out / server.name / "host_ed25519.pub", host_key.public_openssh + "\n")
        print(f"{out / server.name / 'user-data'}: {len(user_data.encode())} bytes, "
              f"{len(server.admins)} admin(s), image {server.image}, ssh port {server.ssh_port}")
    write_private(out / SECRETS_FILE, json.dumps(everything, indent=2) + "\n")
    print(f"{out / SECRETS_FILE}: seeds, backup codes and host keys (mode 0600; keep it secret)")
    return 0
