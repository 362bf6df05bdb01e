"""Prove a live server enforces key + TOTP: pinned host key, key alone refused, no passwords, sshd and PAM.

One connection, one login (the server allows 3 logins per 30 s and no code twice). The host key is
compared with the stack's pinned key BEFORE any credential is sent; then the key alone must get only
a partial success with keyboard-interactive left; then the current TOTP code (computed from the
stack's secret) completes the login, and over that session the effective sshd settings
(sudo -n sshd -T) and the PAM stack (/etc/pam.d, judged as Linux-PAM runs it) are checked. One line
per check: PASS, FAIL, or UNKNOWN for what could not be read (that fails the run too). When nothing
answers at the address, one line says so. Nothing secret is printed: not the code, not the seed.
Details: docs/enrollment.md.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
import pyotp

from cloudinit import pam, render
from vpsctl import sshclient, stackoutputs
from vpsctl.errors import EXIT_FAIL, EXIT_OK, CliError, printable

EXITS = {EXIT_OK: "every check passed", EXIT_FAIL: "a check failed or could not be made, or nothing answered at the address"}
README_SECTION = "Operator CLI"
SSHD = "/usr/sbin/sshd"
PINNED_TYPE = "ssh-ed25519"  # the program pins one Ed25519 host key (tls.PrivateKey ED25519)
PAM_DIR = "/etc/pam.d"
TOTP_MODULE = "pam_google_authenticator.so"
CLOCK_TOLERANCE = 30  # seconds: WINDOW_SIZE 3 accepts one 30-s step either side
# How a server's effective settings and PAM file are read: as root through sudo (the admins have
# passwordless sudo) and, failing that, directly (sshd -T needs the host key, so only root succeeds).
SSHD_T = (("sudo", "-n", SSHD, "-T"), (SSHD, "-T"))


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

    def add(self, spec: tuple[str, str], ok: bool | None, detail: str = "") -> None:
        self.checks = [c for c in self.checks if c.id != spec[0]] + [Check(spec[0], spec[1], ok, detail)]

    def finish(self, ssh_port: int, reason: str) -> Report:
        """Every check in the fixed order; one that was not made is UNKNOWN, saying why."""
        made = {c.id: c for c in self.checks}
        order = [HOST, NO_PASSWORD, KEY_ALONE, KEY_AND_CODE, CLOCK, *(_sshd_spec(i, line) for i, line in sshd_checks(ssh_port)),
                 PAM_STACK]
        self.checks = [made.get(i) or Check(i, title, None, f"not checked: {reason}") for i, title in order]
        return self

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
PAM_STACK = ("pam-01", f"PAM: the sshd auth stack cannot succeed without {TOTP_MODULE} (judged as Linux-PAM runs it)")


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


def totp_of(outputs: Mapping[str, Any], server: str, admin: str) -> pyotp.TOTP:
    item = outputs["enrollment"].get(server, {}).get(admin)
    if not isinstance(item, Mapping):
        raise CliError(f"--admin: {admin!r} is not an admin of {server} in the stack outputs")
    try:
        totp = pyotp.parse_uri(str(item.get("otpauthUri", "")))
    except (ValueError, TypeError):
        raise CliError(f"stack outputs: the otpauthUri of {admin} on {server} is not a valid otpauth URI") from None
    if not isinstance(totp, pyotp.TOTP):
        raise CliError(f"stack outputs: the otpauthUri of {admin} on {server} is not a TOTP URI")
    return totp


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
    (default: now). Raises CliError only for bad inputs; everything about the server is in the Report."""
    key = identity if isinstance(identity, paramiko.PKey) else load_identity(identity)
    pinned = pinned_host_key(outputs, server)
    totp = totp_of(outputs, server, admin)
    ssh_port = as_port(outputs["servers"][server].get("sshPort"))
    if ssh_port is None:
        raise CliError(f"stack outputs: servers.{server}.sshPort is not a port number")
    try:
        attempt = sshclient.login(port, admin, key=key, code=totp.at(time.time() if at is None else at), host=host,
                                  pinned=" ".join(pinned), timeout=timeout, keep=True, probe=True)
    except sshclient.HostKeyMismatch as exc:
        report = Report(server=server, admin=admin, target=_target(host, port))
        report.add(HOST, False, f"server presented {exc.presented}, the stack pins {fingerprint(*pinned)}; nothing was sent")
        return report.finish(ssh_port, "host key mismatch (possible man in the middle): no credential was sent")
    if attempt.error.startswith("cannot connect"):
        raise CliError(f"{attempt.error.replace('cannot connect', f'cannot connect to {_target(host, port)}', 1)}: nothing "
                       "was checked. Is the server up, the address and --port right, your network in its allowedCidrs?",
                       EXIT_FAIL)
    with attempt:
        return report_for(attempt, Report(server=server, admin=admin, target=_target(host, port)), pinned, ssh_port, timeout)


def report_for(attempt: sshclient.Login, report: Report, pinned: tuple[str, str], ssh_port: int, timeout: float) -> Report:
    """The checks of one login (kept open): how the server authenticated it, then, over it, what it runs."""
    if attempt.steps == (("connect", "disconnected"),):
        report.add(HOST, False, f"no SSH session with a {pinned[0]} host key: {attempt.error}")
        return report.finish(ssh_port, "no SSH session")
    report.add(HOST, True, fingerprint(*pinned))
    steps = dict(attempt.steps)
    before, after = attempt.offered.get("none"), attempt.offered.get("publickey")
    if steps.get("none") == "success":
        report.add(KEY_ALONE, False, "the server let the user in WITHOUT any credential")
        report.add(KEY_AND_CODE, False, "no code was asked")
    elif steps.get("publickey") == "success":
        report.add(KEY_ALONE, False, "the key ALONE logged in: no TOTP code was asked")
        report.add(KEY_AND_CODE, False, "the key alone logged in: the code was never asked")
    elif steps.get("publickey") == "partial":
        report.add(KEY_ALONE, after == ("keyboard-interactive",), "partial success; next: keyboard-interactive"
                   if after == ("keyboard-interactive",) else f"partial success, but next the server offers {_methods(after)}")
    elif steps.get("publickey") == "not-offered":
        report.add(KEY_ALONE, False, f"publickey is not offered (server offers {_methods(after)})")
    elif steps.get("publickey") == "refused":
        report.add(KEY_ALONE, False, f"the server refused the key for {attempt.user} (wrong --identity, or not authorized)")
    else:
        report.add(KEY_ALONE, None, f"connection failed: {attempt.error}")
    seen = [m for m in (before, after) if m is not None]
    if any("password" in m for m in seen):
        report.add(NO_PASSWORD, False, "password is offered: " + "; ".join(_methods(m) for m in seen))
    elif after is None and not attempt.accepted:
        report.add(NO_PASSWORD, None, "the methods after the key are unknown (the key was not accepted)")
    else:
        report.add(NO_PASSWORD, True, "offered: " + "; then ".join(_methods(m) for m in seen))
    code = steps.get("keyboard-interactive")
    asked = ", ".join(repr(p.strip()) for p in attempt.unanswered)
    if code == "success":
        report.add(KEY_AND_CODE, not attempt.unanswered, f"logged in, but PAM also asked: {asked}" if asked else "logged in")
    elif code == "refused":
        hint = f"; unexpected prompts: {asked}" if asked else ""
        report.add(KEY_AND_CODE, False, "refused. Clock skew, a code already used in this 30-s step, or over the rate limit "
                   f"(3 logins per 30 s): wait 30 s and run verify once more{hint}")
    elif code == "not-offered":
        offered = _methods(attempt.offered.get("keyboard-interactive"))
        report.add(KEY_AND_CODE, False, f"keyboard-interactive is not offered (server offers {offered})")
    elif code == "disconnected":
        report.add(KEY_AND_CODE, None, f"connection failed: {attempt.error}")
    if not attempt.accepted:
        return report.finish(ssh_port, "no login")
    inspect(attempt, ssh_port, report)
    return report.finish(ssh_port, "no session")


def _target(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _methods(methods: Sequence[str] | None) -> str:
    return ",".join(methods) if methods else "nothing"


def first_that_works(attempt: sshclient.Login, commands: Sequence[Sequence[str]], timeout: float = 60) -> tuple[str | None, str]:
    """(stdout of the first command that succeeds, or None; why each one failed)."""
    failures = []
    for argv in commands:
        try:
            done = attempt.run(argv, timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            failures.append(f"`{shlex.join(argv)}`: {' '.join(str(exc).split()) or type(exc).__name__}")
            continue
        if done.status == 0 and done.stdout.strip():
            return done.stdout, ""
        reason = next((line.strip() for line in done.stderr.splitlines() if line.strip()), f"exit {done.status}")
        failures.append(f"`{shlex.join(argv)}`: {reason[:120]}")
    return None, "; ".join(failures)


# All of /etc/pam.d in one round trip (the files are world-readable): the judge follows includes.
READ_PAM_DIR = ("python3", "-c", "import json, os; d = '/etc/pam.d'; print(json.dumps({n: open(os.path.join(d, n)).read() "
                "for n in os.listdir(d) if os.path.isfile(os.path.join(d, n))}))")


def inspect(attempt: sshclient.Login, ssh_port: int, report: Report) -> None:
    """Over a logged-in session: the server's clock, ``sshd -T`` and the PAM stack."""
    clock, why = first_that_works(attempt, (("date", "+%s"),))
    if clock is None or not clock.strip().isdigit():
        report.add(CLOCK, None, f"cannot read the server's clock: {why or 'not a number'}")
    else:
        skew = int(clock.strip()) - time.time()
        report.add(CLOCK, abs(skew) <= CLOCK_TOLERANCE, f"server clock {round(skew):+d} s from this machine's")

    effective, why = first_that_works(attempt, SSHD_T)
    lines = set(effective.splitlines()) if effective else set()
    values: dict[str, list[str]] = {}
    for line in sorted(lines):
        keyword, _, value = line.partition(" ")
        values.setdefault(keyword, []).append(value)
    for check_id, want in sshd_checks(ssh_port):
        spec = _sshd_spec(check_id, want)
        if effective is None:
            report.add(spec, None, f"cannot read the effective settings: {why}")
        elif want in lines:
            report.add(spec, True)
        else:
            keyword = want.partition(" ")[0]
            have = ", ".join(f"'{keyword} {v}'" for v in values.get(keyword, [])) or "nothing"
            report.add(spec, False, f"sshd -T says {have}")

    listing, why = first_that_works(attempt, (READ_PAM_DIR,))
    try:
        files = json.loads(listing) if listing else None
    except ValueError:
        files, why = None, "not the JSON of /etc/pam.d"
    if not isinstance(files, dict):
        report.add(PAM_STACK, None, f"cannot read {PAM_DIR}: {why}")
        return
    problems = pam.judge_auth("sshd", lambda path: files.get(path[len(PAM_DIR) + 1:]) if path.startswith(f"{PAM_DIR}/") else None,
                              TOTP_MODULE)
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    report.add(PAM_STACK, not problems, "; ".join(problems[:3]) + more)


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
