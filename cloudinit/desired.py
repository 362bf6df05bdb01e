"""The desired state of one server (the format of agent/state.py), from the validated model and its secrets.

Pure: it renders the files the agent installs (sshd drop-in, PAM stacks, sudoers) and puts them, the
accounts and the TOTP files into one document. The same document goes into the first boot's user-data
and, on every later change, to the running server through ``vpsctl sync``.
"""

from __future__ import annotations

import io
import tokenize
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from agent import state as st
from cloudinit import hardening
from cloudinit.model import Server
from cloudinit.secrets import AdminSecrets
from cloudinit.templating import template

VERSION = "0.2.0"
AGENT_DIR = Path(__file__).resolve().parent.parent / "agent"
AGENT_COMMAND = "/usr/local/sbin/totp-vps-activate"
SERVICE_SHELL = "/bin/sh"  # a service account's forced command runs through it; it never gets a terminal


def for_shipping(source: str) -> str:
    """``source`` with comments and docstrings blanked (every newline kept, so line numbers still match the
    repository): they are a quarter of the agent, and the user-data has 32 KiB for everything."""
    lines = source.splitlines(keepends=True)
    edits = []
    previous, first = tokenize.NEWLINE, True
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            edits.append((tok.start, tok.end, ""))
        elif tok.type == tokenize.STRING and previous in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            edits.append((tok.start, tok.end, "" if first else "..."))  # a body must keep a statement
        if tok.type not in (tokenize.NL, tokenize.COMMENT):
            previous, first = tok.type, False
    for (row, col), (end_row, end_col), text in reversed(edits):
        head, tail = lines[row - 1][:col], lines[end_row - 1][end_col:]
        for r in range(row - 1, end_row):
            lines[r] = "\n"
        lines[row - 1] = head + text + (tail if row == end_row else "\n")
        if row != end_row:
            lines[end_row - 1] = tail
    return "".join(line.rstrip() + "\n" for line in "".join(lines).splitlines())


@cache
def agent_files() -> dict[str, str]:
    """The agent as a server has it: its modules (name -> text as shipped) and the launcher."""
    files = {p.name: for_shipping(p.read_text()) for p in sorted(AGENT_DIR.glob("*.py"))}
    files[st.LAUNCHER] = (AGENT_DIR / st.LAUNCHER).read_text()
    return files


@cache
def agent_bundle() -> bytes:
    """The agent's modules as the launcher imports them: one xz stream (see agent/totp-vps-activate)."""
    return st.bundle({k: v for k, v in agent_files().items() if k != st.LAUNCHER})


def sshd_dropin(server: Server) -> str:
    return template("sshd.conf.j2").render(
        version=VERSION,
        hardening_version=hardening.VERSION,
        server=server,
        keys_dir=st.KEYS_DIR,
        allow_users=st.allow_users({"admins": [{"name": n} for n in server.admin_names],
                                    "serviceAccounts": service_accounts(server)}),
        penalty_exempt=server.penalty_exempt_cidrs,
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
    return template("pam-sshd.j2").render()


def pam_sudo() -> str:
    return template("pam-sudo.j2").render(sudo_totp_dir=st.SUDO_TOTP_DIR)


def sudoers(server: Server) -> str:
    return template("sudoers.j2").render(server=server, admin_group=st.ADMIN_GROUP, agent=AGENT_COMMAND)


def totp_file(secrets: AdminSecrets) -> str:
    return template("google_authenticator.j2").render(
        secrets=secrets, rate_limit=hardening.TOTP_RATE_LIMIT, window_size=hardening.TOTP_WINDOW_SIZE
    )


def service_accounts(server: Server) -> list[dict[str, Any]]:
    return [{"name": a.name, "shell": SERVICE_SHELL, "keys": list(a.ssh_keys), "fromCidrs": list(a.from_cidrs),
             "command": a.command} for a in server.service_accounts]


def summary(server: Server) -> dict[str, Any]:
    """The settings a person compares when a server differs from the stack (the plan shows these)."""
    return {
        "image": server.image,
        "sshPort": server.ssh_port,
        "allowForwarding": server.allow_forwarding,
        "penaltyExemptCidrs": list(server.penalty_exempt_cidrs),
        "hardening": hardening.VERSION,
        "templates": VERSION,
    }


def desired_state(server: Server, admin_secrets: Mapping[str, AdminSecrets], signer: str) -> dict[str, Any]:
    """The whole desired state of ``server``; ``signer``: the public key that signs its later changes."""
    missing = set(server.admin_names) - set(admin_secrets)
    if missing:
        raise ValueError(f"no TOTP secrets for admins {sorted(missing)}")
    admins = []
    for admin in server.admins:
        secrets = admin_secrets[admin.name]
        if admin.sudo == "totp" and secrets.sudo is None:
            raise ValueError(f"no sudo TOTP secrets for {admin.name} (sudo: totp)")
        admins.append({
            "name": admin.name,
            "shell": admin.shell,
            "keys": list(admin.ssh_keys),
            "sudo": admin.sudo,
            "totp": totp_file(secrets),
            "sudoTotp": totp_file(secrets.sudo) if admin.sudo == "totp" and secrets.sudo else None,
        })  # fmt: skip
    state = {
        "format": st.FORMAT,
        "server": server.name,
        "sshPort": server.ssh_port,
        "summary": summary(server),
        "signer": " ".join(signer.split()[:2]),
        "files": {
            st.DROPIN: sshd_dropin(server),
            st.PAM_SSHD: pam_sshd(),
            st.PAM_SUDO[0]: pam_sudo(),
            st.PAM_SUDO[1]: pam_sudo(),
            st.SUDOERS: sudoers(server),
        },
        "admins": admins,
        "serviceAccounts": service_accounts(server),
        "offboarding": {"removeHome": server.offboard_remove_home},
        "agent": {"version": VERSION, "sha256": st.agent_digest(agent_files())},
    }
    return st.validate(state)  # the renderer never hands over a state the agent would refuse
