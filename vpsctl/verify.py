"""Prove a live server enforces key + TOTP: pinned host key, key alone refused, no passwords, sshd and PAM.

One admin login (the server allows 3 logins per 30 s and no code twice). The host key is compared with
the stack's pinned key BEFORE any credential is sent; then the key alone must get only a partial success
with keyboard-interactive left; then the current TOTP code (computed from the stack's secret) completes
the login, and over that session the effective sshd settings (the agent's read-only `effective`, which
every admin may run whatever their sudo mode) and the PAM stack
(/etc/pam.d, judged as Linux-PAM runs it) are checked. For an admin with `sudo: totp`, over the same
session, `sudo -k; sudo -S true` must ask for a code and refuse a wrong one, and sudo must accept a code
of the admin's sudo seed (it runs sshd -T with it): 3 sudo attempts, the next 30 s allow no more.
--service NAME=KEYFILE also proves a service account, with two logins of its own: from --outside (an
address of this machine outside the account's networks, as the server sees it) its key is refused;
from this machine (or --source) its key alone logs in, and gets no terminal and no port forwarding.
One line per check: PASS, FAIL, or UNKNOWN for what could not be read (that fails the run too). When
nothing answers at the address, one line says so. Nothing secret is printed: not the code, not the seed.
Details: docs/enrollment.md.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import ipaddress
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

from cloudinit import desired, pam, render
from vpsctl import sshclient, stackoutputs
from vpsctl.errors import EXIT_FAIL, EXIT_OK, CliError, printable

EXITS = {EXIT_OK: "every check passed", EXIT_FAIL: "a check failed or could not be made, or nothing answered at the address"}
README_SECTION = "Operator CLI"
SSHD = "/usr/sbin/sshd"
PINNED_TYPE = "ssh-ed25519"  # the program pins one Ed25519 host key (tls.PrivateKey ED25519)
PAM_DIR = "/etc/pam.d"
TOTP_MODULE = "pam_google_authenticator.so"
CLOCK_TOLERANCE = 30  # seconds: WINDOW_SIZE 3 accepts one 30-s step either side
# How a server's effective settings are read: through the agent's read-only `effective` (every admin may run
# the agent without a prompt, whatever their sudo mode), else as root through sudo (a server an older totp-vps
# set up), else directly (sshd -T needs the host key, so only root succeeds).
SSHD_T = (("sudo", "-n", desired.AGENT_COMMAND, "effective"), ("sudo", "-n", SSHD, "-T"), (SSHD, "-T"))


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
    planned: list[tuple[str, str]] = field(default_factory=list)
    """Checks beyond the fixed ones that this run makes (sudo: totp, service accounts), in their order."""

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
                 PAM_STACK, *self.planned]
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
SUDO_ASKS = ("sudo-01", "sudo: totp: sudo asks for a code and refuses a wrong one")
SUDO_CODE = ("sudo-02", "sudo: totp: a code of the admin's sudo seed is accepted")
# What the admin runs: no cached sudo credentials, the code read from stdin (sudo -S prompts on stderr). With the
# right code sudo runs `sshd -T`: the effective settings cost no sudo attempt of their own.
SUDO_WRONG = "sudo -k; sudo -S true"
SUDO_RIGHT = f"sudo -k; sudo -S {SSHD} -T"


def service_checks(name: str) -> list[tuple[str, str]]:
    """The checks of one service account (``--service NAME=...``): ids carry the name, one set per account."""
    return [
        (f"svc-01/{name}", f"service account {name}: its key is refused from outside its networks"),
        (f"svc-02/{name}", f"service account {name}: its key alone logs in from inside its networks"),
        (f"svc-03/{name}", f"service account {name}: no terminal"),
        (f"svc-04/{name}", f"service account {name}: no port forwarding"),
    ]


@dataclass(frozen=True)
class ServiceAccount:
    """A service account to prove (``--service NAME=KEYFILE``), with what the stack says about it."""

    name: str
    key: paramiko.PKey
    networks: tuple[str, ...]
    """Its ``fromCidrs`` in the desired state."""


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


def load_identity(path: str | os.PathLike[str], passphrase: Callable[[], str] | None = None,
                  option: str = "--identity") -> paramiko.PKey:
    """A private key file (OpenSSH or PEM); ``passphrase`` is asked only if the file is encrypted. Errors name
    ``option``, the setting the file came from."""
    try:
        return paramiko.PKey.from_path(str(path))
    except paramiko.PasswordRequiredException:
        if passphrase is None:
            raise CliError(f"{option}: {path} is encrypted and no passphrase can be asked here") from None
        try:
            return paramiko.PKey.from_path(str(path), passphrase())
        except paramiko.SSHException:
            raise CliError(f"{option}: cannot decrypt {path} (wrong passphrase?)") from None
    except OSError as exc:
        raise CliError(f"{option}: cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    except (paramiko.SSHException, ValueError, TypeError, IndexError):
        raise CliError(f"{option}: {path} is not a private key paramiko can use (Ed25519, ECDSA or RSA)") from None


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


def sudo_totp_of(outputs: Mapping[str, Any], server: str, admin: str) -> tuple[bool, pyotp.TOTP | None]:
    """(does ``admin`` have ``sudo: totp``, the TOTP of their sudo seed if the outputs hold it). The desired state
    says the mode; without one in the outputs, a sudo enrollment says it."""
    state = outputs.get("desiredState")
    state = state.get(server) if isinstance(state, Mapping) else None
    admins = state.get("admins") if isinstance(state, Mapping) else None
    entry = outputs["enrollment"].get(server, {}).get(admin, {})
    sudo = entry.get("sudo") if isinstance(entry, Mapping) else None
    if isinstance(admins, list):
        mode = next((a.get("sudo") for a in admins if isinstance(a, Mapping) and a.get("name") == admin), None)
    else:
        mode = "totp" if sudo is not None else None
    if mode != "totp":
        return False, None
    try:
        totp = pyotp.parse_uri(str(sudo.get("otpauthUri", ""))) if isinstance(sudo, Mapping) else None
    except (ValueError, TypeError):
        raise CliError(f"stack outputs: the sudo otpauthUri of {admin} on {server} is not a valid otpauth URI") from None
    return True, totp if isinstance(totp, pyotp.TOTP) else None


def service_account(outputs: Mapping[str, Any], server: str, name: str, key: paramiko.PKey, key_file: str) -> ServiceAccount:
    """``name`` as a service account of ``server`` in the stack's desired state, ``key`` one of its keys
    (CliError otherwise: a check with the wrong key would blame the server)."""
    state = outputs.get("desiredState")
    state = state.get(server) if isinstance(state, Mapping) else None
    if not isinstance(state, Mapping):
        raise CliError(f"--service: the stack outputs hold no desiredState.{server}: cannot tell its service accounts")
    accounts = {a.get("name"): a for a in state.get("serviceAccounts") or [] if isinstance(a, Mapping)}
    account = accounts.get(name)
    if account is None:
        known = ", ".join(sorted(str(n) for n in accounts)) or "none"
        raise CliError(f"--service: {name!r} is not a service account of {server} (service accounts: {known})")
    if sshclient.key_line(key) not in {" ".join(str(line).split()[:2]) for line in account.get("keys") or []}:
        raise CliError(f"--service {name}: the key in {key_file} is not one of {name}'s keys in the stack outputs")
    return ServiceAccount(name=name, key=key, networks=tuple(str(c) for c in account.get("fromCidrs") or []))


def inside(address: str, networks: Sequence[str]) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip in net for net in map(ipaddress.ip_network, networks) if net.version == ip.version)


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
    services: Sequence[ServiceAccount] = (),
    outside: str | None = None,
    source: str | None = None,
) -> Report:
    """Check the sshd at ``host:port`` against the stack ``outputs`` for ``server``, logging in once as
    ``admin`` with ``identity`` (a paramiko key or a key file) plus the TOTP code for time ``at``
    (default: now); with ``sudo: totp`` also sudo over that login. Each of ``services`` is proved with a login
    from ``outside`` (a local address outside its networks) and one from ``source`` (default: the system's
    choice, as for the admin's login). Raises CliError only for bad inputs; everything about the server is in
    the Report."""
    key = identity if isinstance(identity, paramiko.PKey) else load_identity(identity)
    pinned = pinned_host_key(outputs, server)
    totp = totp_of(outputs, server, admin)
    ssh_port = as_port(outputs["servers"][server].get("sshPort"))
    if ssh_port is None:
        raise CliError(f"stack outputs: servers.{server}.sshPort is not a port number")
    if services and outside is None:
        raise CliError("--service needs --outside ADDRESS: a local address outside the account's networks to be refused from")
    for account in services:
        if outside is not None and inside(outside, account.networks):
            raise CliError(f"--outside: {outside} is inside {account.name}'s networks ({', '.join(account.networks)}): "
                           "give an address outside them")
    report = Report(server=server, admin=admin, target=_target(host, port))
    sudo_totp, sudo_seed = sudo_totp_of(outputs, server, admin)
    report.planned = [SUDO_ASKS, *([SUDO_CODE] if sudo_seed else [])] if sudo_totp else []
    report.planned += [spec for account in services for spec in service_checks(account.name)]
    try:
        attempt = sshclient.login(port, admin, key=key, code=totp.at(time.time() if at is None else at), host=host,
                                  pinned=" ".join(pinned), timeout=timeout, keep=True, probe=True, source=source)
    except sshclient.HostKeyMismatch as exc:
        report.add(HOST, False, f"server presented {exc.presented}, the stack pins {fingerprint(*pinned)}; nothing was sent")
        return report.finish(ssh_port, "host key mismatch (possible man in the middle): no credential was sent")
    if attempt.error.startswith("cannot connect"):
        raise CliError(f"{attempt.error.replace('cannot connect', f'cannot connect to {_target(host, port)}', 1)}: nothing "
                       "was checked. Is the server up, the address and --port right, your network in its allowedCidrs?",
                       EXIT_FAIL)
    with attempt:
        report_for(attempt, report, pinned, ssh_port, timeout, sudo_totp=sudo_totp, sudo=sudo_seed, at=at)
    if report.get(HOST[0]).ok:  # the same host key the admin's login saw: the service logins send nothing elsewhere
        for account in services:
            check_service(host, port, " ".join(pinned), account, outside or "", source, timeout, report)
    return report.finish(ssh_port, "no login")


def report_for(attempt: sshclient.Login, report: Report, pinned: tuple[str, str], ssh_port: int, timeout: float, *,
               sudo_totp: bool = False, sudo: pyotp.TOTP | None = None, at: float | None = None) -> Report:
    """The checks of one login (kept open): how the server authenticated it, then, over it, what it runs.
    ``sudo_totp``: the admin has ``sudo: totp``; ``sudo``: the TOTP of their sudo seed, when known."""
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
    inspect(attempt, ssh_port, report, sudo_totp=sudo_totp, sudo=sudo, at=time.time() if at is None else at, timeout=timeout)
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


def inspect(attempt: sshclient.Login, ssh_port: int, report: Report, *, sudo_totp: bool = False,
            sudo: pyotp.TOTP | None = None, at: float = 0, timeout: float = 60) -> None:
    """Over a logged-in session: the server's clock, sudo (``sudo_totp``), ``sshd -T`` and the PAM stack."""
    clock, why = first_that_works(attempt, (("date", "+%s"),))
    if clock is None or not clock.strip().isdigit():
        report.add(CLOCK, None, f"cannot read the server's clock: {why or 'not a number'}")
    else:
        skew = int(clock.strip()) - time.time()
        report.add(CLOCK, abs(skew) <= CLOCK_TOLERANCE, f"server clock {round(skew):+d} s from this machine's")

    effective = check_sudo(attempt, report, sudo, at, timeout) if sudo_totp else None
    if effective is None:
        effective, why = first_that_works(attempt, SSHD_T)
        if sudo_totp and sudo is None:
            why = f"sudo: totp, and the stack outputs hold no sudo seed for {attempt.user}; {why}"
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


def wrong_code(totp: pyotp.TOTP | None, at: float) -> str:
    """A code the server cannot accept: none of the seed's codes within a few steps of ``at`` (any code, when the
    seed is unknown: one in a million is someone's)."""
    valid = {totp.at(at + 30 * k) for k in range(-3, 4)} if totp else set()
    guess = 271828
    while f"{guess:06d}" in valid:
        guess = (guess + 1) % 1_000_000
    return f"{guess:06d}"


def check_sudo(attempt: sshclient.Login, report: Report, totp: pyotp.TOTP | None, at: float, timeout: float) -> str | None:
    """``sudo: totp`` over the admin's session: a wrong code refused after a code prompt, then (seed known) a right
    code accepted, running ``sshd -T``: its output, or None. In that order: the wrong code costs sudo two attempts
    (it asks again and reads the end of its input), the right one a third, within pam_google_authenticator's 3 per
    30 s."""
    try:
        wrong = attempt.run(SUDO_WRONG, stdin=f"{wrong_code(totp, at)}\n".encode(), timeout=timeout)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        report.add(SUDO_ASKS, None, f"cannot run sudo: {' '.join(str(exc).split()) or type(exc).__name__}")
        return None
    said = next((line.strip() for line in wrong.stderr.splitlines() if line.strip()), f"exit {wrong.status}")
    if wrong.status == 0:
        report.add(SUDO_ASKS, False, "sudo ran the command with a wrong code")
    elif not sshclient.is_code_prompt(wrong.stderr):
        report.add(SUDO_ASKS, None, f"sudo refused without asking for a code ({said[:120]}); over the rate limit "
                   "(3 per 30 s) it does not ask: wait 30 s and run verify once more")
    else:
        report.add(SUDO_ASKS, True, "asked for a code, refused a wrong one")
    if totp is None:
        return None
    try:
        right = attempt.run(SUDO_RIGHT, stdin=f"{totp.at(at)}\n".encode(), timeout=timeout)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        report.add(SUDO_CODE, None, f"cannot run sudo: {' '.join(str(exc).split()) or type(exc).__name__}")
        return None
    report.add(SUDO_CODE, right.status == 0, "accepted" if right.status == 0 else
               "refused. Clock skew, a sudo code already used in this 30-s step, or over the rate limit (3 per 30 s): "
               "wait 30 s and run verify once more")
    return right.stdout if right.status == 0 and right.stdout.strip() else None


def check_service(host: str, port: int, pinned: str, account: ServiceAccount, outside: str, source: str | None,
                  timeout: float, report: Report) -> None:
    """Two logins with the account's key: from ``outside`` (must be refused), and from ``source`` (its key alone must
    log in; then a terminal and a port forward must be refused)."""
    away_spec, home_spec, tty_spec, forward_spec = service_checks(account.name)
    networks = ", ".join(account.networks)
    try:
        away = sshclient.login(port, account.name, key=account.key, host=host, pinned=pinned, source=outside, timeout=timeout)
        home = sshclient.login(port, account.name, key=account.key, host=host, pinned=pinned, source=source,
                               timeout=timeout, keep=True)
    except sshclient.HostKeyMismatch as exc:
        for spec in (away_spec, home_spec):
            report.add(spec, False, f"server presented {exc.presented}, not the pinned key; nothing was sent")
        return
    end = away.steps[-1] if away.steps else ("", "")
    if away.accepted:
        report.add(away_spec, False, f"its key logged in from {outside}, outside {networks}")
    elif end == ("publickey", "partial"):
        report.add(away_spec, False, f"its key was accepted from {outside}, outside {networks} (then the server asked for "
                   f"{_methods(away.offered.get('publickey'))})")
    elif end[0] == "publickey" and end[1] in ("refused", "not-offered"):
        report.add(away_spec, True, f"refused from {outside}")
    else:
        report.add(away_spec, None, f"cannot connect from {outside}: {away.error or away}")
    with home:
        if home.transport is None:
            where = source or "this machine"
            if home.steps and home.steps[-1] == ("publickey", "partial"):
                report.add(home_spec, False, f"its key alone is not enough from {where}: the server also asks for "
                           f"{_methods(home.offered.get('publickey'))} (a service account needs no code in {networks})")
            else:
                report.add(home_spec, None, f"not logged in from {where} ({home.error or home}); the server must see it "
                           f"inside {networks}: run verify from there, or pass --source")
            return
        local = home.transport.sock.getsockname()[0]  # type: ignore[union-attr]
        report.add(home_spec, home.steps == (("publickey", "success"),), f"logged in with its key alone from {local}")
        channel = home.transport.open_session(timeout=timeout)
        try:
            channel.get_pty()
            report.add(tty_spec, False, "the server granted a terminal")
        except paramiko.SSHException:
            report.add(tty_spec, True, "terminal refused")
        finally:
            channel.close()
        try:
            tunnel = home.transport.open_channel("direct-tcpip", ("127.0.0.1", port), ("127.0.0.1", 0), timeout=timeout)
        except (paramiko.ChannelException, paramiko.SSHException, EOFError) as exc:
            report.add(forward_spec, True, f"refused ({' '.join(str(exc).split()) or type(exc).__name__})")
        else:
            tunnel.close()
            report.add(forward_spec, False, f"the server opened a forward to its own port {port}")


# ------------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    stackoutputs.add_source_arguments(parser)
    parser.add_argument("--admin", metavar="A", required=True, help="log in as this admin (one login: TOTP rate limit)")
    parser.add_argument("--identity", metavar="KEYFILE", required=True, help="the admin's SSH private key file")
    parser.add_argument("--host", help="connect here instead of the server's address from the outputs")
    parser.add_argument("--port", type=int, help="connect to this port instead of the stack's sshPort")
    parser.add_argument("--timeout", metavar="SECONDS", type=float, default=15.0, help="seconds per network step (default 15)")
    parser.add_argument("--service", metavar="NAME=KEYFILE", type=service_argument, action="append", default=[],
                        help="also prove this service account with its private key (repeatable; needs --outside)")
    parser.add_argument("--outside", metavar="ADDRESS", type=address,
                        help="a local address of this machine outside the service accounts' networks, as the server sees it")
    parser.add_argument("--source", metavar="ADDRESS", type=address,
                        help="connect from this local address (default: the system's choice)")


def service_argument(value: str) -> tuple[str, str]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"want NAME=KEYFILE (got {value!r})")
    return name, path


def address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {value!r}") from None


def run(args: argparse.Namespace) -> int:
    outputs = stackoutputs.load(args)
    choice = stackoutputs.choose(outputs, args.server, args.admin)
    host, port = target(outputs, choice.server, args.host, args.port)
    ask = (lambda: getpass.getpass(f"passphrase for {args.identity}: ")) if sys.stdin.isatty() else None
    key = load_identity(Path(args.identity), ask)
    services = []
    for name, path in args.service:
        ask_service = (lambda p=path: getpass.getpass(f"passphrase for {p}: ")) if sys.stdin.isatty() else None
        service_key = load_identity(Path(path), ask_service, option=f"--service {name}")
        services.append(service_account(outputs, choice.server, name, service_key, path))
    report = verify(host, port, choice.admin, key, outputs, choice.server, timeout=args.timeout, services=services,
                    outside=args.outside, source=args.source)
    # Names from the stack outputs and what the server answered are in the report: no control character
    # of theirs reaches the terminal.
    sys.stdout.write("".join(printable(line) + "\n" for line in report.render().splitlines()))
    return EXIT_OK if report.passed else EXIT_FAIL
