"""Logging in over SSH from the host: one paramiko client for key + TOTP (the lab guest, the loopback sshd
of the tests, the login benchmark), the OpenSSH client for batch mode."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko


class HostKeyMismatch(paramiko.SSHException):
    """The server presented a host key other than the pinned one."""


@dataclass
class Login:
    """What one login attempt did, step by step (never holds a secret). With ``login(..., keep=True)`` an
    accepted login keeps its connection open for :meth:`run`: close it (or use ``with``)."""

    user: str
    host_key: str = ""
    """The host key the server presented (``ssh-ed25519 AAAA...``)."""
    steps: tuple[tuple[str, str], ...] = ()
    """(method, outcome) in order; outcome is success, partial, refused, not-offered (the server does
    not take that method now) or disconnected."""
    prompts: tuple[str, ...] = ()
    """Every keyboard-interactive prompt the server showed."""
    transport: paramiko.Transport | None = None

    @property
    def accepted(self) -> bool:
        return bool(self.steps) and self.steps[-1][1] == "success"

    @property
    def refused_at(self) -> str | None:
        """The method the login ended on when the server turned it down (None if accepted, or if the
        client stopped after a partial success)."""
        if self.steps and self.steps[-1][1] in ("refused", "not-offered", "disconnected"):
            return self.steps[-1][0]
        return None

    def __str__(self) -> str:
        steps = ", ".join(f"{m}: {o}" for m, o in self.steps) or "no step"
        return f"login {'ACCEPTED' if self.accepted else 'not accepted'} ({steps}; prompts {list(self.prompts)})"

    def run(self, command: str, timeout: float = 60) -> tuple[int, str]:
        """Run ``command`` in a session of this (accepted, kept) login: (exit status, stdout+stderr)."""
        if self.transport is None or not self.accepted:
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


def login(
    port: int,
    user: str,
    *,
    key: paramiko.PKey | Sequence[paramiko.PKey] | None = None,
    password: str | None = None,
    code: str | None = None,
    pinned: str | None = None,
    host: str = "127.0.0.1",
    timeout: float = 30,
    keep: bool = False,
) -> Login:
    """Log in like a client would: the key first (if given; several are offered in order, like an agent
    holding several keys, until one is accepted), then a password (if given), then the code over
    keyboard-interactive (if given; it answers every prompt). Stops at the first refusal and never
    raises for one. ``pinned``: the known_hosts key (``type base64 [comment]``) the server must present,
    checked before any credential is sent (HostKeyMismatch otherwise). ``keep``: an accepted login stays
    connected for :meth:`Login.run`."""
    prompts: list[str] = []

    def answer(_title: str, _instructions: str, asked: Sequence[tuple[str, bool]]) -> list[str]:
        prompts.extend(text for text, _echo in asked)
        return [code or "" for _ in asked]

    keys = [key] if isinstance(key, paramiko.PKey) else list(key or [])
    transport = paramiko.Transport(socket.create_connection((host, port), timeout=timeout))
    result = Login(user=user)
    try:
        transport.banner_timeout = transport.auth_timeout = timeout
        try:
            transport.start_client(timeout=timeout)
        except (paramiko.SSHException, EOFError, OSError):
            result.steps = (("connect", "disconnected"),)
            return result
        result.host_key = key_line(transport.get_remote_server_key())
        if pinned is not None and result.host_key != " ".join(pinned.split()[:2]):
            raise HostKeyMismatch(f"host key {result.host_key[:40]}... is not the pinned one")

        def attempt(method: str, call: Callable[[], list[str]]) -> str:
            try:
                remaining = call()
            except paramiko.BadAuthenticationType:
                outcome = "not-offered"
            except paramiko.AuthenticationException:
                outcome = "refused"
            except (paramiko.SSHException, EOFError, OSError):
                outcome = "disconnected"
            else:
                outcome = "success" if transport.is_authenticated() and not remaining else "partial"
            result.steps += ((method, outcome),)
            return outcome

        outcome = "partial"
        for each in keys:  # like an agent: the next key after a refused one
            outcome = attempt("publickey", lambda k=each: transport.auth_publickey(user, k))  # type: ignore[misc]
            if outcome != "refused":
                break
        if outcome == "partial" and password is not None:
            outcome = attempt("password", lambda: transport.auth_password(user, password, fallback=False))
        if outcome == "partial" and code is not None:
            outcome = attempt("keyboard-interactive", lambda: transport.auth_interactive(user, answer))
    finally:
        result.prompts = tuple(prompts)
        if keep and result.accepted:
            result.transport = transport
        else:
            transport.close()
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
