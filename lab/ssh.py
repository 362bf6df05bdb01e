"""Logging in to a lab guest from the host: paramiko for key + TOTP, the OpenSSH client for batch mode."""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import paramiko


class HostKeyMismatch(paramiko.SSHException):
    """The server presented a host key other than the pinned one."""


@dataclass
class Login:
    """The outcome of one login attempt; close() it."""

    user: str
    authenticated: bool
    """The server accepted the login (a session may be opened)."""
    stage: str
    """How far it got: connect, publickey, keyboard-interactive, password, done."""
    detail: str = ""
    host_key: str = ""
    """The host key the server presented (``type base64``)."""
    prompts: list[str] = field(default_factory=list)
    """Keyboard-interactive prompts seen."""
    transport: paramiko.Transport | None = None

    def run(self, command: str, timeout: float = 60) -> tuple[int, str]:
        """Run ``command`` in a session of this (authenticated) login: (exit status, stdout+stderr)."""
        if self.transport is None or not self.authenticated:
            raise paramiko.SSHException("not logged in")
        channel = self.transport.open_session(timeout=timeout)
        channel.settimeout(timeout)
        channel.set_combine_stderr(True)
        channel.exec_command(command)
        out = b""
        while chunk := channel.recv(65536):
            out += chunk
        return channel.recv_exit_status(), out.decode(errors="replace")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def __enter__(self) -> Login:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def key_line(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def login(port: int, user: str, *, key: paramiko.PKey | None = None, code: str | None = None,
          password: str | None = None, pinned: str | None = None, timeout: float = 30) -> Login:
    """Try to log in as ``user`` on 127.0.0.1:``port`` with the given factors, in sshd's order
    (publickey, then keyboard-interactive answered with ``code``; or a password). Never raises for a
    refused login: the result says how far it got."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    transport = paramiko.Transport(sock)
    result = Login(user=user, authenticated=False, stage="connect", transport=transport)
    try:
        transport.start_client(timeout=timeout)
        result.host_key = key_line(transport.get_remote_server_key())
        if pinned is not None and result.host_key != " ".join(pinned.split()[:2]):
            raise HostKeyMismatch(f"host key {result.host_key[:40]}... is not the pinned one")
        if key is not None:
            result.stage = "publickey"
            transport.auth_publickey(user, key)
        if code is not None:
            result.stage = "keyboard-interactive"

            def answer(_title: str, _instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
                result.prompts.extend(p for p, _echo in prompts)
                return [code for _ in prompts]

            transport.auth_interactive(user, answer)
        if password is not None:
            result.stage = "password"
            transport.auth_password(user, password)
        result.authenticated = transport.is_authenticated()
        if result.authenticated:
            result.stage = "done"
    except HostKeyMismatch:
        transport.close()
        raise
    except (paramiko.SSHException, OSError) as exc:  # AuthenticationException and BadAuthenticationType included
        result.detail = f"{type(exc).__name__}: {exc}"
        result.authenticated = transport.is_authenticated()
    return result


def openssh_argv(port: int, user: str, identity: Path, known_hosts: Path, *extra: str) -> list[str]:
    """The OpenSSH client command for the lab guest, host key pinned."""
    return ["ssh", "-i", str(identity), "-p", str(port), "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "StrictHostKeyChecking=yes", *extra, f"{user}@127.0.0.1"]


def openssh_batch(port: int, user: str, identity: Path, known_hosts: Path,
                  timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The OpenSSH client in batch mode with only a key (no TOTP can be typed): must be refused."""
    argv = [*openssh_argv(port, user, identity, known_hosts, "-F", "/dev/null", "-o", "BatchMode=yes",
                          "-o", "ConnectTimeout=30"), "true"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
