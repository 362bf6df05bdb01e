"""Prove a live server enforces key + TOTP: pinned host key, key alone refused, no passwords, sshd and PAM.

One connection, one login (the server allows 3 logins per 30 s and no code twice). The host key is
compared with the stack's pinned key BEFORE any credential is sent; then the key alone must get only
a partial success with keyboard-interactive left; then the current TOTP code (computed from the
stack's secret) completes the login, and over that session the effective sshd settings
(sudo -n sshd -T) and /etc/pam.d/sshd are checked. One line per check: PASS, FAIL, or UNKNOWN for
what could not be read (that fails the run too). When nothing answers at the address, one line says
so. Nothing secret is printed: not the code, not the seed. Details: docs/enrollment.md.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import os
import shlex
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
import pyotp

from cloudinit import render
from vpsctl import stackoutputs
from vpsctl.errors import EXIT_FAIL, EXIT_OK, CliError, printable

EXITS = {EXIT_OK: "every check passed", EXIT_FAIL: "a check failed or could not be made, or nothing answered at the address"}
README_SECTION = "Operator CLI"
SSHD = "/usr/sbin/sshd"
PINNED_TYPE = "ssh-ed25519"  # the program pins one Ed25519 host key (tls.PrivateKey ED25519)
PAM_SSHD = "/etc/pam.d/sshd"
TOTP_MODULE = "pam_google_authenticator.so"
CLOCK_TOLERANCE = 30  # seconds: WINDOW_SIZE 3 accepts one 30-s step either side
# How a server's effective settings and PAM file are read: as root through sudo (the admins have
# passwordless sudo) and, failing that, directly (sshd -T needs the host key, so only root succeeds).
SSHD_T = (("sudo", "-n", SSHD, "-T"), (SSHD, "-T"))
READ_PAM = (("cat", PAM_SSHD), ("sudo", "-n", "cat", PAM_SSHD))


# ----------------------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class Check:
    """One line of the report. ``ok`` is None when the check could not be made (that fails the run)."""

    id: str
    title: str
    ok: bool | None
    detail: str = ""

    @property
    def status(self) -> str:
        return {True: "PASS", False: "FAIL", None: "UNKNOWN"}[self.ok]


@dataclass
class Report:
    """Every check of one verify run, in a fixed order."""

    server: str
    admin: str
    target: str
    """``host:port`` that was checked."""
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.ok is True for c in self.checks)

    def get(self, check_id: str) -> Check:
        return next(c for c in self.checks if c.id == check_id)

    def render(self) -> str:
        width = max(len(c.id) for c in self.checks)
        lines = [f"verify {self.admin}@{self.server} at {self.target}"]
        for c in self.checks:
            lines.append(f"  {c.status:<7}  {c.id:<{width}}  {c.title}" + (f" -- {c.detail}" if c.detail else ""))
        counts = {s: sum(c.status == s for c in self.checks) for s in ("PASS", "FAIL", "UNKNOWN")}
        verdict = "PASS: the server enforces key + TOTP" if self.passed else "FAIL"
        lines.append(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['UNKNOWN']} unknown: {verdict}")
        return "\n".join(lines) + "\n"


# Check ids and titles, stable so scripts and tests can refer to them.
HOST = ("host-01", "host key is the pinned one (checked before any credential is sent)")
NO_PASSWORD = ("auth-01", "password authentication not offered")
KEY_ALONE = ("auth-02", "key alone refused (partial success, then keyboard-interactive)")
KEY_AND_CODE = ("auth-03", "key + TOTP code logs in")
CLOCK = ("time-01", f"server clock in sync (within {CLOCK_TOLERANCE} s)")
PAM_REQUIRED = ("pam-01", f"PAM: auth required {TOTP_MODULE}")
PAM_NULLOK = ("pam-02", "PAM: no nullok (no secret file, no login)")
PAM_ONLY = ("pam-03", "PAM: no other auth module (common-auth, pam_unix)")


def sshd_checks(port: int) -> list[tuple[str, str]]:
    """(id, required ``sshd -T`` line): what activation demands before it restarts sshd."""
    return [(f"sshd-{i:02d}", line) for i, line in enumerate(render.effective_settings(port), start=1)]


def _sshd_spec(check_id: str, line: str) -> tuple[str, str]:
    return check_id, f"sshd -T: {line}"


# ----------------------------------------------------------------------------------- stack outputs


def pinned_host_key(outputs: Mapping[str, Any], server: str) -> tuple[str, str]:
    """(key type, base64) from ``hostPublicKey``; every ``knownHosts`` line must name the same key."""
    entry = outputs["servers"].get(server)
    if not isinstance(entry, Mapping) or not isinstance(entry.get("hostPublicKey"), str):
        raise CliError(f"stack outputs: servers.{server}.hostPublicKey is missing: nothing to pin the host key to")
    parts = entry["hostPublicKey"].split()
    if len(parts) < 2 or parts[0] != PINNED_TYPE:
        raise CliError(f"stack outputs: servers.{server}.hostPublicKey is not an ssh-ed25519 public key")
    known = entry.get("knownHosts") or ""
    for line in str(known).splitlines():
        fields = line.split()
        if len(fields) >= 3 and (fields[1], fields[2]) != (parts[0], parts[1]):
            raise CliError(f"stack outputs: servers.{server}.knownHosts names another key than hostPublicKey")
    return parts[0], parts[1]


def target(outputs: Mapping[str, Any], server: str, host: str | None, port: int | None) -> tuple[str, int]:
    """``host``/``port`` where given, else the server's address (IPv4 first) and sshPort from the outputs."""
    entry = outputs["servers"].get(server)
    entry = entry if isinstance(entry, Mapping) else {}
    host = host or next((entry[k] for k in ("ipv4", "ipv6") if isinstance(entry.get(k), str) and entry[k]), None)
    port = port or as_port(entry.get("sshPort"))
    if host is None:
        raise CliError(f"stack outputs: servers.{server} has no address; pass --host")
    if port is None or not 0 < port < 65536:
        raise CliError(f"--port: no valid SSH port for {server} (got {port!r}); pass --port")
    return host, port


def as_port(value: object) -> int | None:
    """A port from JSON: Pulumi keeps numbers as floats, so 22.0 means 22."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536 else None


def fingerprint(key_type: str, b64: str) -> str:
    digest = hashlib.sha256(base64.b64decode(b64)).digest()
    return f"{key_type} SHA256:{base64.b64encode(digest).decode().rstrip('=')}"


# ---------------------------------------------------------------------------------------- the check


def load_identity(path: str | os.PathLike[str], passphrase: Callable[[], str] | None = None) -> paramiko.PKey:
    """A private key file (OpenSSH or PEM); ``passphrase`` is asked only if the file is encrypted."""
    try:
        return paramiko.PKey.from_path(str(path))
    except paramiko.PasswordRequiredException:
        if passphrase is None:
            raise CliError(f"--identity: {path} is encrypted and no passphrase can be asked here") from None
        try:
            return paramiko.PKey.from_path(str(path), passphrase())
        except paramiko.SSHException:
            raise CliError(f"--identity: cannot decrypt {path} (wrong passphrase?)") from None
    except OSError as exc:
        raise CliError(f"--identity: cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    except (paramiko.SSHException, ValueError, TypeError, IndexError):
        raise CliError(f"--identity: {path} is not a private key paramiko can use (Ed25519, ECDSA or RSA)") from None


def verify(
    host: str,
    port: int,
    admin: str,
    identity: paramiko.PKey | str | os.PathLike[str],
    outputs: Mapping[str, Any],
    server: str,
    *,
    at: float | None = None,
    timeout: float = 15.0,
) -> Report:
    """Check the sshd at ``host:port`` against the stack ``outputs`` for ``server``, logging in once as
    ``admin`` with ``identity`` (a paramiko key or a key file) plus the TOTP code for time ``at``
    (default: now). Everything about the server is in the Report. Raises CliError for bad inputs (exit 2)
    and when nothing accepts a TCP connection at ``host:port`` (exit 1): then nothing could be checked."""
    key = identity if isinstance(identity, paramiko.PKey) else load_identity(identity)
    pinned = pinned_host_key(outputs, server)
    item = outputs["enrollment"].get(server, {}).get(admin)
    if not isinstance(item, Mapping):
        raise CliError(f"--admin: {admin!r} is not an admin of {server} in the stack outputs")
    try:
        totp = pyotp.parse_uri(str(item.get("otpauthUri", "")))
    except (ValueError, TypeError):
        raise CliError(f"stack outputs: the otpauthUri of {admin} on {server} is not a valid otpauth URI") from None
    if not isinstance(totp, pyotp.TOTP):
        raise CliError(f"stack outputs: the otpauthUri of {admin} on {server} is not a TOTP URI")
    ssh_port = as_port(outputs["servers"][server].get("sshPort"))
    if ssh_port is None:
        raise CliError(f"stack outputs: servers.{server}.sshPort is not a port number")

    results: dict[str, Check] = {}
    sshd_specs = [_sshd_spec(i, line) for i, line in sshd_checks(ssh_port)]
    order = [HOST, NO_PASSWORD, KEY_ALONE, KEY_AND_CODE, CLOCK, *sshd_specs, PAM_REQUIRED, PAM_NULLOK, PAM_ONLY]

    def put(spec: tuple[str, str], ok: bool | None, detail: str = "") -> None:
        results[spec[0]] = Check(spec[0], spec[1], ok, detail)

    def finish(reason: str) -> Report:
        report = Report(server=server, admin=admin, target=_target(host, port))
        for check_id, title in order:
            report.checks.append(results.get(check_id) or Check(check_id, title, None, f"not checked: {reason}"))
        return report

    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        reason = exc.strerror or _one_line(exc)
        raise CliError(f"cannot connect to {_target(host, port)} ({reason}): nothing was checked. Is the server up, "
                       "the address and --port right, your network in its allowedCidrs?", EXIT_FAIL) from None
    with sock, paramiko.Transport(sock) as transport:
        transport.banner_timeout = transport.auth_timeout = timeout
        # Ask for the pinned key's type, so a server holding several host keys shows the one pinned.
        transport.get_security_options().key_types = (pinned[0],)
        try:
            transport.start_client(timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            put(HOST, False, f"no SSH session with a {pinned[0]} host key: {_one_line(exc)}")
            return finish("no SSH session")
        presented = transport.get_remote_server_key()
        got = (presented.get_name(), presented.get_base64())
        if got != pinned:
            put(HOST, False, f"server presented {fingerprint(*got)}, the stack pins {fingerprint(*pinned)}; nothing was sent")
            return finish("host key mismatch (possible man in the middle): no credential was sent")
        put(HOST, True, fingerprint(*pinned))

        offered_first = _methods_before_key(transport, admin)
        offered_after: list[str] | None = None
        if transport.is_authenticated():  # "none" logged in: no authentication at all
            put(KEY_ALONE, False, "the server let the user in WITHOUT any credential")
            offered_after = []
        try:
            if offered_after is None:
                offered_after = list(transport.auth_publickey(admin, key))
        except paramiko.BadAuthenticationType as exc:
            put(KEY_ALONE, False, f"publickey is not offered (server offers {_methods(exc.allowed_types)})")
        except paramiko.AuthenticationException:
            put(KEY_ALONE, False, f"the server refused the key for {admin} (wrong --identity, or not in authorized_keys)")
        except (paramiko.SSHException, OSError, EOFError) as exc:
            put(KEY_ALONE, None, f"connection failed: {_one_line(exc)}")
        if offered_after is not None and KEY_ALONE[0] not in results:
            if transport.is_authenticated():
                put(KEY_ALONE, False, "the key ALONE logged in: no TOTP code was asked")
            elif offered_after == ["keyboard-interactive"]:
                put(KEY_ALONE, True, "partial success; next: keyboard-interactive")
            else:
                put(KEY_ALONE, False, f"partial success, but next the server offers {_methods(offered_after)}")
        seen = [m for m in (offered_first, offered_after) if m is not None]
        if any("password" in m for m in seen):
            put(NO_PASSWORD, False, "password is offered: " + "; ".join(_methods(m) for m in seen))
        elif offered_after is None:
            put(NO_PASSWORD, None, "the methods after the key are unknown (the key was not accepted)")
        else:
            put(NO_PASSWORD, True, "offered: " + "; then ".join(_methods(m) for m in seen))

        if not transport.is_authenticated():
            if offered_after is None:
                return finish("no login (the key was not accepted)")
            _second_factor(transport, admin, totp.at(time.time() if at is None else at), put)
        else:
            put(KEY_AND_CODE, False, "the key alone logged in: the code was never asked")
        if not transport.is_authenticated():
            return finish("no login")
        _inspect(transport, ssh_port, timeout, put)
    return finish("no session")


def _target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _methods(methods: Sequence[str]) -> str:
    return ",".join(methods) if methods else "nothing"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _methods_before_key(transport: paramiko.Transport, admin: str) -> list[str] | None:
    """What the server offers before any credential ("none" does not count against MaxAuthTries)."""
    try:
        transport.auth_none(admin)
    except paramiko.BadAuthenticationType as exc:
        return list(exc.allowed_types)
    except (paramiko.SSHException, OSError, EOFError):
        return None
    return []  # "none" succeeded: no authentication at all (KEY_ALONE reports it)


def _second_factor(transport: paramiko.Transport, admin: str, code: str, put: Callable[..., None]) -> None:
    unexpected: list[str] = []

    def answer(_title: str, _instructions: str, prompts: Sequence[tuple[str, bool]]) -> list[str]:
        replies = []
        for text, _echo in prompts:
            if "code" in text.lower():
                replies.append(code)
            else:  # never hand the code to a prompt that is not asking for it (a password prompt)
                unexpected.append(text.strip())
                replies.append("")
        return replies

    try:
        transport.auth_interactive(admin, answer)
    except paramiko.BadAuthenticationType as exc:
        put(KEY_AND_CODE, False, f"keyboard-interactive is not offered (server offers {_methods(exc.allowed_types)})")
        return
    except paramiko.AuthenticationException:
        hint = "; unexpected prompts: " + ", ".join(repr(p) for p in unexpected) if unexpected else ""
        put(KEY_AND_CODE, False, "refused. Clock skew, a code already used in this 30-s step, or over the rate limit "
            f"(3 logins per 30 s): wait 30 s and run verify once more{hint}")
        return
    except (paramiko.SSHException, OSError, EOFError) as exc:
        put(KEY_AND_CODE, None, f"connection failed: {_one_line(exc)}")
        return
    if unexpected:
        put(KEY_AND_CODE, False, "logged in, but PAM also asked: " + ", ".join(repr(p) for p in unexpected))
    else:
        put(KEY_AND_CODE, transport.is_authenticated(), "logged in" if transport.is_authenticated() else "not logged in")


def _run(transport: paramiko.Transport, argv: Sequence[str], timeout: float) -> tuple[int, str, str]:
    channel = transport.open_session(timeout=timeout)
    try:
        channel.settimeout(timeout)
        channel.exec_command(shlex.join(argv))
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        while not (channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready()):
            if time.monotonic() > deadline:
                return -1, out.decode(errors="replace"), "timed out"
            if channel.recv_ready():
                out += channel.recv(65536)
            elif channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
            else:
                time.sleep(0.01)
        return channel.recv_exit_status(), out.decode(errors="replace"), err.decode(errors="replace")
    finally:
        channel.close()


def _first_that_works(
    transport: paramiko.Transport, commands: Sequence[Sequence[str]], timeout: float
) -> tuple[str | None, str]:
    """(stdout of the first command that succeeds, or None; why each one failed)."""
    failures = []
    for argv in commands:
        try:
            status, out, err = _run(transport, argv, timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            failures.append(f"`{shlex.join(argv)}`: {_one_line(exc)}")
            continue
        if status == 0 and out.strip():
            return out, ""
        reason = next((line.strip() for line in err.splitlines() if line.strip()), f"exit {status}")
        failures.append(f"`{shlex.join(argv)}`: {reason[:120]}")
    return None, "; ".join(failures)


def _inspect(transport: paramiko.Transport, ssh_port: int, timeout: float, put: Callable[..., None]) -> None:
    """Over the logged-in session: the server's clock, ``sshd -T`` and the PAM file."""
    clock, why = _first_that_works(transport, (("date", "+%s"),), timeout)
    if clock is None or not clock.strip().isdigit():
        put(CLOCK, None, f"cannot read the server's clock: {why or 'not a number'}")
    else:
        skew = int(clock.strip()) - time.time()
        put(CLOCK, abs(skew) <= CLOCK_TOLERANCE, f"server clock {round(skew):+d} s from this machine's")

    effective, why = _first_that_works(transport, SSHD_T, timeout)
    lines = set(effective.splitlines()) if effective else set()
    values: dict[str, list[str]] = {}
    for line in sorted(lines):
        keyword, _, value = line.partition(" ")
        values.setdefault(keyword, []).append(value)
    for check_id, want in sshd_checks(ssh_port):
        spec = _sshd_spec(check_id, want)
        if effective is None:
            put(spec, None, f"cannot read the effective settings: {why}")
        elif want in lines:
            put(spec, True)
        else:
            keyword = want.partition(" ")[0]
            have = ", ".join(f"'{keyword} {v}'" for v in values.get(keyword, [])) or "nothing"
            put(spec, False, f"sshd -T says {have}")

    pam, why = _first_that_works(transport, READ_PAM, timeout)
    if pam is None:
        for spec in (PAM_REQUIRED, PAM_NULLOK, PAM_ONLY):
            put(spec, None, f"cannot read {PAM_SSHD}: {why}")
        return
    for spec, (ok, detail) in zip((PAM_REQUIRED, PAM_NULLOK, PAM_ONLY), check_pam(pam), strict=True):
        put(spec, ok, detail)


# ------------------------------------------------------------------------------------------------ PAM


@dataclass(frozen=True)
class PamLine:
    number: int
    kind: str
    """auth, account, session, password, or @include."""
    control: str
    module: str
    args: tuple[str, ...]


def parse_pam(text: str) -> list[PamLine]:
    """The rules of a pam.d file (comments and blank lines dropped, ``\\`` continuations joined)."""
    rules: list[PamLine] = []
    joined = text.replace("\\\n", " ")
    for number, raw in enumerate(joined.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if words[0] == "@include":
            rules.append(PamLine(number, "@include", "", words[1] if len(words) > 1 else "", ()))
            continue
        if len(words) < 3:
            rules.append(PamLine(number, words[0].lstrip("-").lower(), "", "", ()))
            continue
        kind = words[0].lstrip("-").lower()
        if words[1].startswith("["):  # [value=action ...] may hold spaces
            end = next((i for i, w in enumerate(words[1:], start=1) if w.endswith("]")), len(words) - 1)
            control, rest = " ".join(words[1 : end + 1]), words[end + 1 :]
        else:
            control, rest = words[1], words[2:]
        module = rest[0] if rest else ""
        rules.append(PamLine(number, kind, control, module, tuple(rest[1:])))
    return rules


def check_pam(text: str) -> list[tuple[bool, str]]:
    """[(ok, detail)] for PAM_REQUIRED, PAM_NULLOK, PAM_ONLY on the text of /etc/pam.d/sshd."""
    rules = parse_pam(text)
    auth = [r for r in rules if r.kind == "auth"]
    totp = [r for r in auth if os.path.basename(r.module) == TOTP_MODULE]
    required = [r for r in totp if r.control in ("required", "requisite")]
    results = [
        (bool(required), f"line {required[0].number}" if required else (
            f"{TOTP_MODULE} is {totp[0].control!r}, not required (line {totp[0].number})" if totp
            else f"no auth line loads {TOTP_MODULE}")),
    ]
    nullok = [r for r in totp if any(a == "nullok" or a.startswith("nullok") for a in r.args)]
    results.append((not nullok, f"nullok on line {nullok[0].number}: admins without a secret file get in" if nullok else ""))
    others = [f"line {r.number}: @include {r.module}" for r in rules if r.kind == "@include" and r.module == "common-auth"]
    others += [f"line {r.number}: {r.control} {os.path.basename(r.module)}" for r in auth if r not in totp]
    results.append((not others, "; ".join(others)))
    return results


# ------------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    stackoutputs.add_source_arguments(parser)
    parser.add_argument("--admin", metavar="A", required=True, help="log in as this admin (one login: TOTP rate limit)")
    parser.add_argument("--identity", metavar="KEYFILE", required=True, help="the admin's SSH private key file")
    parser.add_argument("--host", help="connect here instead of the server's address from the outputs")
    parser.add_argument("--port", type=int, help="connect to this port instead of the stack's sshPort")
    parser.add_argument("--timeout", metavar="SECONDS", type=float, default=15.0, help="seconds per network step (default 15)")


def run(args: argparse.Namespace) -> int:
    outputs = stackoutputs.load(args)
    choice = stackoutputs.choose(outputs, args.server, args.admin)
    host, port = target(outputs, choice.server, args.host, args.port)
    ask = (lambda: getpass.getpass(f"passphrase for {args.identity}: ")) if sys.stdin.isatty() else None
    key = load_identity(Path(args.identity), ask)
    report = verify(host, port, choice.admin, key, outputs, choice.server, timeout=args.timeout)
    # Names from the stack outputs and what the server answered are in the report: no control character
    # of theirs reaches the terminal.
    sys.stdout.write("".join(printable(line) + "\n" for line in report.render().splitlines()))
    return EXIT_OK if report.passed else EXIT_FAIL
