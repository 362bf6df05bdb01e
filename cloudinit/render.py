"""Render one server's ``#cloud-config`` user-data from the validated model. Pure: no Pulumi, no I/O
beyond reading the template files once."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache

import jinja2
import yaml

from cloudinit import hardening
from cloudinit.model import HETZNER_USER_DATA_LIMIT, ConfigError, Server
from cloudinit.secrets import AdminSecrets, HostKey, fresh_host_key, seed_from_bytes

VERSION = "0.1.0"

DROPIN = "/etc/ssh/sshd_config.d/00-totp-vps.conf"
STAGE = "/etc/totp-vps"
PATHS = {"dropin": DROPIN, "stage": STAGE}

# What activate.sh demands from `sshd -T` before it restarts sshd (keys are lowercased by sshd).
EFFECTIVE = (
    "usepam yes",
    "authenticationmethods publickey,keyboard-interactive",
    "pubkeyauthentication yes",
    "kbdinteractiveauthentication yes",
    "passwordauthentication no",
    "permitemptypasswords no",
    "permitrootlogin no",
)


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cloudinit", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - YAML and shell, not HTML; values are quoted with |q
    )
    # JSON is valid YAML flow syntax: a safe way to quote any string or list.
    env.filters["q"] = lambda value: json.dumps(list(value) if isinstance(value, tuple) else value)
    return env


@cache
def _template(name: str) -> jinja2.Template:
    # Held here: jinja2's own cache stats the file on every lookup (auto_reload), half of a render.
    return _environment().get_template(name)


def effective_settings(ssh_port: int) -> tuple[str, ...]:
    """The ``sshd -T`` lines a server on ``ssh_port`` must show (activate.sh, vpsctl verify, the tests)."""
    return (*EFFECTIVE, f"port {ssh_port}")


def sshd_dropin(server: Server) -> str:
    return _template("sshd.conf.j2").render(
        version=VERSION,
        hardening_version=hardening.VERSION,
        server=server,
        openssh=".".join(map(str, hardening.IMAGES[server.image])),
        crypto=hardening.crypto_for(server.image),
        forwarding="yes" if server.allow_forwarding else "no",
        limits={
            "max_auth_tries": hardening.MAX_AUTH_TRIES,
            "login_grace_time": hardening.LOGIN_GRACE_TIME,
            "max_startups": hardening.MAX_STARTUPS,
            "client_alive_interval": hardening.CLIENT_ALIVE_INTERVAL,
            "client_alive_count_max": hardening.CLIENT_ALIVE_COUNT_MAX,
        },
    )


def pam_sshd() -> str:
    return _template("pam-sshd.j2").render()


def totp_file(secrets: AdminSecrets) -> str:
    return _template("google_authenticator.j2").render(
        secrets=secrets, rate_limit=hardening.TOTP_RATE_LIMIT, window_size=hardening.TOTP_WINDOW_SIZE
    )


def render_user_data(server: Server, admin_secrets: Mapping[str, AdminSecrets], host_key: HostKey) -> str:
    """The exact user-data for ``server``; raises ConfigError if it would not fit Hetzner's limit."""
    missing = set(server.admin_names) - set(admin_secrets)
    if missing:
        raise ValueError(f"no TOTP secrets for admins {sorted(missing)}")
    text = _template("cloud-config.yaml.j2").render(
        version=VERSION,
        server=server,
        host_key=host_key,
        paths=PATHS,
        pam_package=hardening.PAM_PACKAGE[server.image],
        ntp_servers=hardening.NTP_SERVERS,
        ntp_pools=hardening.NTP_POOLS,
        metadata_block=_template("metadata-block.sh.j2").render(paths=PATHS),
        lockdown=_template("lockdown.conf.j2").render(server=server),
        sshd_conf=sshd_dropin(server),
        pam_sshd=pam_sshd(),
        activate=_template("activate.sh.j2").render(
            paths=PATHS,
            server=server,
            pam_package=hardening.PAM_PACKAGE[server.image],
            effective=effective_settings(server.ssh_port),
        ),
        totp_files={name: totp_file(admin_secrets[name]) for name in server.admin_names},
    )
    size = len(text.encode())
    if size > HETZNER_USER_DATA_LIMIT:
        raise ConfigError(
            f"{server.where}.admins",
            f"{len(server.admins)} admins, {sum(len(a.ssh_keys) for a in server.admins)} keys",
            f"user-data would be {size} bytes, over Hetzner's {HETZNER_USER_DATA_LIMIT}-byte limit: use fewer admins or keys",
        )
    return text


def parse(user_data: str) -> dict[str, object]:
    """Parse rendered user-data back (every consumer does this before trusting it)."""
    if not user_data.startswith("#cloud-config\n"):
        raise ValueError("user-data must start with '#cloud-config'")
    data = yaml.safe_load(user_data)
    if not isinstance(data, dict):
        raise ValueError("user-data is not a YAML mapping")
    return data


def write_files(user_data: str) -> dict[str, dict[str, object]]:
    """path -> write_files entry, from rendered user-data."""
    entries = parse(user_data).get("write_files", [])
    if not isinstance(entries, list):
        raise ValueError("write_files is not a list")
    return {str(e["path"]): e for e in entries}


@cache
def _placeholder_host_key() -> HostKey:
    return fresh_host_key()


def check_fits(server: Server) -> None:
    """Raise ConfigError now if the server's user-data would exceed Hetzner's limit.

    Seeds, codes and the host key have fixed sizes, so rendering with stand-ins of the same size gives
    the exact byte count before any real secret exists (the component must fail before it registers
    anything)."""
    stand_in = AdminSecrets(
        seed="A" * len(seed_from_bytes(bytes(hardening.SEED_BYTES))),
        backup_codes=tuple("1" * 8 for _ in range(server.backup_codes)),
    )
    render_user_data(server, {name: stand_in for name in server.admin_names}, _placeholder_host_key())
