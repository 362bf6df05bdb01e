"""The one SSH client of the project (vpsctl verify and sync, the lab, the tests, the benchmarks).

A login pins the host key BEFORE any credential is sent, offers exactly one key (OpenSSH 9.8+ penalises a
source for failed attempts, and every key offered counts against MaxAuthTries), answers keyboard-interactive
with the code only where the prompt asks for a code (never a password prompt), and records step by step what
the server answered. It never raises for a refusal: the result says where the login ended.
"""

from __future__ import annotations

import logging
import shlex
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import paramiko

# A connection that fails is a step of the login's result (Login.error), not a traceback: paramiko's transport thread
# logs one at ERROR through a logger with no handler, which Python prints on stderr (a port that accepts and then
# resets, as qemu's forward to a guest port nobody listens on does).
logging.getLogger("paramiko.transport").addHandler(logging.NullHandler())


class HostKeyMismatch(paramiko.SSHException):
    """The server presented a host key other than the pinned one (nothing was sent)."""

    def __init__(self, presented: str) -> None:
        super().__init__(f"host key {presented} is not the pinned one")
        self.presented = presented
        """The presented key's fingerprint (``ssh-ed25519 SHA256:...``)."""


@dataclass(frozen=True)
class Result:
    """What a command run over a login did."""

    status: int
    """Exit status (-1: no status, e.g. timed out)."""
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class Login:
    """One login attempt, step by step (never holds a secret). With ``keep=True`` an accepted login keeps its
    connection for :meth:`run`: close it (or use ``with``)."""

    user: str
    host_key: str = ""
    """The host key the server presented (``ssh-ed25519 AAAA...``)."""
    steps: tuple[tuple[str, str], ...] = ()
    """(method, outcome) in order: success, partial, refused, not-offered (the server does not take that method
    now) or disconnected; ("connect", "disconnected") when no SSH session came up."""
    offered: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Methods the server listed: before any credential (``none``, with ``probe=True``) and after a step."""
    prompts: tuple[str, ...] = ()
    """Every keyboard-interactive prompt the server showed."""
    unanswered: tuple[str, ...] = ()
    """Prompts that did not ask for a code: they got an empty answer, never the code."""
    error: str = ""
    """Why the connection failed, when it did (one line)."""
    transport: paramiko.Transport | None = None

    @property
    def accepted(self) -> bool:
        return bool(self.steps) and self.steps[-1][1] == "success"

    @property
    def refused_at(self) -> str | None:
        """The method the login ended on when the server turned it down (None if accepted, or if the client
        stopped after a partial success)."""
        if self.steps and self.steps[-1][1] in ("refused", "not-offered", "disconnected"):
            return self.steps[-1][0]
        return None

    def __str__(self) -> str:
        steps = ", ".join(f"{m}: {o}" for m, o in self.steps) or "no step"
        extra = f"; {self.error}" if self.error else ""
        return f"login {'ACCEPTED' if self.accepted else 'not accepted'} ({steps}; prompts {list(self.prompts)}{extra})"

    def run(self, command: str | Sequence[str], stdin: bytes | None = None, timeout: float = 60) -> Result:
        """Run ``command`` (a shell line, or argv quoted for one) in a session of this kept login."""
        if self.transport is None or not self.accepted:
            raise paramiko.SSHException("not logged in")
        line = command if isinstance(command, str) else shlex.join(command)
        channel = self.transport.open_session(timeout=timeout)
        try:
            channel.settimeout(timeout)
            channel.exec_command(line)
            if stdin is not None:
                channel.sendall(stdin)
            channel.shutdown_write()
            out, err = bytearray(), bytearray()
            deadline = time.monotonic() + timeout
            while not (channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready()):
                if time.monotonic() > deadline:
                    return Result(-1, out.decode(errors="replace"), err.decode(errors="replace") + "\n(timed out)")
                if channel.recv_ready():
                    out += channel.recv(65536)
                elif channel.recv_stderr_ready():
                    err += channel.recv_stderr(65536)
                else:
                    time.sleep(0.005)
            return Result(channel.recv_exit_status(), out.decode(errors="replace"), err.decode(errors="replace"))
        finally:
            channel.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def __enter__(self) -> Login:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def key_line(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def is_code_prompt(text: str) -> bool:
    return "code" in text.lower()


def login(
    port: int,
    user: str,
    *,
    key: paramiko.PKey | Sequence[paramiko.PKey] | None = None,
    password: str | None = None,
    code: str | Sequence[str] | None = None,
    pinned: str | None = None,
    host: str = "127.0.0.1",
    source: str | None = None,
    timeout: float = 30,
    keep: bool = False,
    probe: bool = False,
) -> Login:
    """Log in as a client would: the key (one; a list is offered in order, like an agent holding several,
    which only the tests do), then a password (if given), then the code over keyboard-interactive (if given;
    several: one round each, on the same connection, until one is accepted).
    Stops at the first refusal. ``pinned``: the known_hosts key the server must present before anything is
    sent (HostKeyMismatch otherwise). ``source``: the local address to connect from. ``probe``: first ask
    which methods the server takes (``none``, which does not count as a failed attempt). ``keep``: an
    accepted login stays connected for :meth:`Login.run`."""
    result = Login(user=user)
    prompts: list[str] = []
    unanswered: list[str] = []
    codes = [code] if isinstance(code, str) else list(code or [])
    current = [""]

    def answer(_title: str, _instructions: str, asked: Sequence[tuple[str, bool]]) -> list[str]:
        replies = []
        for text, _echo in asked:
            prompts.append(text)
            if codes and is_code_prompt(text):
                replies.append(current[0])
            else:
                unanswered.append(text)
                replies.append("")
        return replies

    try:
        sock = socket.create_connection((host, port), timeout=timeout, source_address=(source, 0) if source else None)
    except OSError as exc:
        result.steps, result.error = (("connect", "disconnected"),), f"cannot connect: {exc.strerror or type(exc).__name__}"
        return result
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = transport.auth_timeout = timeout
        if pinned is not None:  # ask for the pinned key's type, so a server with several shows the pinned one
            transport.get_security_options().key_types = (pinned.split()[0],)
        try:
            transport.start_client(timeout=timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            result.steps, result.error = (("connect", "disconnected"),), " ".join(str(exc).split()) or type(exc).__name__
            return result
        presented = transport.get_remote_server_key()
        result.host_key = key_line(presented)
        if pinned is not None and result.host_key != " ".join(pinned.split()[:2]):
            raise HostKeyMismatch(f"{presented.get_name()} {presented.fingerprint}")

        def attempt(method: str, call: Callable[[], list[str]]) -> str:
            try:
                remaining = call()
            except paramiko.BadAuthenticationType as exc:
                outcome = "not-offered"
                result.offered[method] = tuple(exc.allowed_types)
            except paramiko.AuthenticationException:
                outcome = "refused"
            except (paramiko.SSHException, EOFError, OSError) as exc:
                outcome, result.error = "disconnected", " ".join(str(exc).split()) or type(exc).__name__
            else:
                outcome = "success" if transport.is_authenticated() and not remaining else "partial"
                result.offered[method] = tuple(remaining or ())
            result.steps += ((method, outcome),)
            return outcome

        if probe:
            try:
                transport.auth_none(user)
                result.offered["none"] = ()
            except paramiko.BadAuthenticationType as exc:
                result.offered["none"] = tuple(exc.allowed_types)
            except (paramiko.SSHException, EOFError, OSError):
                pass
            if transport.is_authenticated():  # no authentication at all
                result.steps = (("none", "success"),)
        outcome = "success" if transport.is_authenticated() else "partial"
        for each in [] if outcome == "success" else [key] if isinstance(key, paramiko.PKey) else list(key or []):
            outcome = attempt("publickey", lambda k=each: transport.auth_publickey(user, k))  # type: ignore[misc]
            if outcome != "refused":
                break
        if outcome == "partial" and password is not None:
            outcome = attempt("password", lambda: transport.auth_password(user, password, fallback=False))
        for each_code in codes if outcome == "partial" else []:
            current[0] = each_code
            if attempt("keyboard-interactive", lambda: transport.auth_interactive(user, answer)) != "refused":
                break
    finally:
        result.prompts, result.unanswered = tuple(prompts), tuple(unanswered)
        if keep and result.accepted:
            result.transport = transport
        else:
            transport.close()
    return result
