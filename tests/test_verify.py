"""`vpsctl verify` against a real server (tests/sshd_harness.py: sshd, PAM, sudo, the agent) configured by the
program's own user-data.

One offline run of the program (components.mockengine) gives both sides, as a real stack does: the
user-data the server boots with and the stack outputs verify reads (pinned host key, TOTP secrets, the
desired state). Each admin logs in at most once (RATE_LIMIT 3 30 and DISALLOW_REUSE), so every test that logs
in has an admin of its own, and one server serves the whole module: tests that need a weaker one change its
files by hand (bypassing the agent, as an attacker or a careless edit would) and put them back. A weakened
server must fail exactly the checks that describe the change. The server listens on 127.0.0.1; a
client binds 127.0.0.2 (the service account's network) or 127.0.0.3 (outside it) as its source address.
Assertion messages never include a secret.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import configs
import paramiko
import pyotp
import pytest
from conftest import require_root, require_tool
from cryptography.hazmat.primitives import serialization
from sshd_harness import Server, free_port, load_private_key, running_server

from agent import state as st
from cloudinit import render
from components import mockengine
from vpsctl.__main__ import main
from vpsctl.verify import Report, ServiceAccount, verify

ROOT = Path(__file__).resolve().parent.parent
# One admin per test that logs in to the correct server; the sudo modes the tests need.
ADMINS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy")
SUDO = {"erin": "none", "frank": "totp", "grace": "totp", "judy": "totp"}
SERVICE, INSIDE, OUTSIDE = "deploy", "127.0.0.2", "127.0.0.3"
EVERY_CHECK = (
    "host-01", "auth-01", "auth-02", "auth-03", "time-01",
    *(f"sshd-{i:02d}" for i in range(1, len(render.effective_settings(22)) + 1)),
    "pam-01",
)  # fmt: skip
SUDO_CHECKS = ("sudo-01", "sudo-02")
SERVICE_CHECKS = tuple(f"svc-{i:02d}/{SERVICE}" for i in range(1, 5))


@dataclass
class Stack:
    """The program's outputs and user-data for one server, and the private keys of its admins and service account."""

    outputs: dict[str, Any]
    outputs_file: Path
    user_data: str
    keys: dict[str, paramiko.PKey]
    key_files: dict[str, Path]

    def secrets(self) -> set[str]:
        """Every seed, URI, backup code and TOTP code near now (login and sudo): none of them may ever be printed."""
        found: set[str] = set()
        for admin in self.outputs["enrollment"]["web-1"].values():
            for item in (admin, admin.get("sudo")):
                if item is None:
                    continue
                totp = pyotp.parse_uri(item["otpauthUri"])
                assert isinstance(totp, pyotp.TOTP)
                found |= {item["otpauthUri"], totp.secret, item["manualKey"], *item["backupCodes"]}
                found |= {totp.at(time.time() + 30 * k) for k in range(-2, 3)}
        return found

    def leaked(self, text: str) -> int:
        """How many secrets ``text`` holds (6-digit codes as whole words), as a count for messages."""
        return sum(1 for s in self.secrets() if re.search(rf"(?<![0-9A-Za-z]){re.escape(s)}(?![0-9A-Za-z])", text))

    def service(self) -> ServiceAccount:
        return ServiceAccount(name=SERVICE, key=self.keys[SERVICE], networks=(f"{INSIDE}/32",))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    tmp = tmp_path_factory.mktemp("verify")
    keys, key_files, public = {}, {}, {}
    for name in (*ADMINS, SERVICE):
        private, public[name] = configs.ed25519_key(f"{name}@verify")
        text = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        key_files[name] = tmp / f"id_{name}"
        key_files[name].write_bytes(text)
        key_files[name].chmod(0o600)
        keys[name] = load_private_key(text.decode())
    config = {
        "issuer": "verify-test",
        "admins": [{"name": n, "sshKeys": [public[n]], **({"sudo": SUDO[n]} if n in SUDO else {})} for n in ADMINS],
        "serviceAccounts": [{"name": SERVICE, "sshKeys": [public[SERVICE]], "fromCidrs": [f"{INSIDE}/32"],
                             "command": "/bin/echo deployed"}],
        "defaults": {"allowedCidrs": ["127.0.0.0/8"]},
        "servers": [{"name": "web-1", "sshPort": free_port()}],
    }
    run = mockengine.run(config)
    outputs = mockengine.unwrap(run.stack_outputs)
    user_data = mockengine.unwrap(run.one("hcloud:index/server:Server", "web-1-server").inputs)["userData"]
    outputs_file = tmp / "outputs.json"
    outputs_file.write_text(json.dumps(outputs))
    outputs_file.chmod(0o600)
    return Stack(outputs=outputs, outputs_file=outputs_file, user_data=user_data, keys=keys, key_files=key_files)


@pytest.fixture(scope="module")
def server(stack: Stack) -> Iterator[Server]:
    require_root()
    require_tool("sshd")
    require_tool("sudo")  # the admins' sudo reads `sshd -T`; sudo: totp asks for a code
    with running_server(stack.user_data) as running:
        assert running.activation is not None and running.activation.returncode == 0, running.logs()
        yield running


@contextlib.contextmanager
def weakened(server: Server, changes: Mapping[str, Mapping[str, str]]) -> Iterator[None]:
    """Files of the running ``server`` with text replaced (every occurrence) by hand, sshd reloaded; put back after."""
    before = {}
    for path, edits in changes.items():
        text = server.read(path)
        assert text is not None, f"{path} is not on the server"
        before[path] = text
        for old, new in edits.items():
            assert old in text, f"{path} has no {old!r}"
            text = text.replace(old, new)
        server.write(path, text, MODES[path])
    server.reload()
    try:
        yield
    finally:
        for path, text in before.items():
            server.write(path, text, MODES[path])
        server.reload()


MODES = {st.DROPIN: "0644", st.PAM_SSHD: "0644", st.SUDOERS: "0440", f"{st.KEYS_DIR}/{SERVICE}": "0644"}


def cli(capsys: pytest.CaptureFixture[str], stack: Stack, server: Server | None, admin: str, *extra: str,
        outputs_file: Path | None = None, identity: Path | None = None) -> tuple[int, str, str]:
    argv = ["verify", "--from", str(outputs_file or stack.outputs_file), "--admin", admin,
            "--identity", str(identity or stack.key_files[admin])]  # fmt: skip
    if server is not None:
        argv += ["--host", "127.0.0.1", "--port", str(server.port)]
    code = main([*argv, *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def statuses(report: Report) -> dict[str, str]:
    return {c.id: c.status for c in report.checks}


def failed(report: Report) -> set[str]:
    return {c.id for c in report.checks if c.status != "PASS"}


def report_lines(out: str) -> dict[str, str]:
    """check id -> PASS/FAIL/UNKNOWN, parsed from the printed report."""
    found = {}
    for line in out.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in ("PASS", "FAIL", "UNKNOWN"):
            found[words[1]] = words[0]
    return found


def sshd_log(server: Server) -> str:
    return server.logs().split("--- syslog ---")[0]


# ------------------------------------------------------------------------------------ a correct server


def test_correct_server_passes_every_check(stack: Stack, server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, stack, server, "alice")
    assert stack.leaked(out + err) == 0, "verify printed a secret"
    assert code == 0, f"{out}{err}\n{server.logs()}"
    assert report_lines(out) == dict.fromkeys(EVERY_CHECK, "PASS"), out
    assert out.rstrip().endswith(f"{len(EVERY_CHECK)} passed, 0 failed, 0 unknown: PASS: the server enforces key + TOTP")
    # One login, not one per check: the rate limit (3 per 30 s) and DISALLOW_REUSE stay untouched.
    log = sshd_log(server)
    assert len(re.findall(r"Accepted keyboard-interactive/pam for alice ", log)) == 1, log
    assert not re.search(r"Failed \S+ for alice ", log), log


def test_function_api_for_other_callers(stack: Stack, server: Server) -> None:
    """What the VM tests call: verify(host, port, admin, identity, outputs, server) -> Report."""
    report = verify("127.0.0.1", server.port, "bob", stack.keys["bob"], stack.outputs, "web-1")
    assert [c.id for c in report.checks] == list(EVERY_CHECK)
    assert report.passed, report.render()
    assert report.get("auth-02").ok and report.get("auth-01").detail == "offered: publickey; then keyboard-interactive"
    assert stack.leaked(report.render()) == 0


def test_sudo_totp_and_a_service_account_are_proved(stack: Stack, server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    """frank has sudo: totp; deploy may connect from 127.0.0.2 only. From 127.0.0.3 its key is refused; from
    127.0.0.2 its key alone logs in, without a terminal or a port forward."""
    code, out, err = cli(capsys, stack, server, "frank", "--service", f"{SERVICE}={stack.key_files[SERVICE]}",
                         "--outside", OUTSIDE, "--source", INSIDE)
    assert stack.leaked(out + err) == 0, "verify printed a secret"
    assert code == 0, f"{out}{err}\n{server.logs()}"
    expected = (*EVERY_CHECK, *SUDO_CHECKS, *SERVICE_CHECKS)
    assert list(report_lines(out)) == list(expected) and set(report_lines(out).values()) == {"PASS"}, out
    assert f"{len(expected)} passed, 0 failed" in out
    assert f"refused from {OUTSIDE}" in out and f"logged in with its key alone from {INSIDE}" in out
    # What the server saw: the two source addresses, and sudo asking pam_google_authenticator (wrong, then right).
    log = server.logs()
    assert f"User {SERVICE} from {OUTSIDE} not allowed because not listed in AllowUsers" in log, log
    assert re.search(rf"Accepted publickey for {SERVICE} from {re.escape(INSIDE)} ", log), log
    assert re.search(r"sudo\(pam_google_authenticator\)\[\d+\]: Invalid verification code for frank", log), log
    assert re.search(r"sudo\(pam_google_authenticator\)\[\d+\]: Accepted google_authenticator for frank", log), log


def test_without_the_sudo_seed_in_the_outputs_sudo_refuses_and_sshd_is_read_through_the_agent(stack: Stack,
                                                                                                server: Server) -> None:
    """The refusal is still proved; `sshd -T` for grace comes from the agent's read-only `effective`, which her
    sudoers rule runs without a code, so no sudo attempt is spent on it."""
    outputs = copy.deepcopy(stack.outputs)
    del outputs["enrollment"]["web-1"]["grace"]["sudo"]
    report = verify("127.0.0.1", server.port, "grace", stack.keys["grace"], outputs, "web-1")
    assert [c.id for c in report.checks] == [*EVERY_CHECK, "sudo-01"], report.render()
    assert report.get("sudo-01").ok and report.get("sudo-01").detail == "asked for a code, refused a wrong one"
    assert failed(report) == set() and report.passed, report.render()
    assert report.get("sshd-02").ok and "publickey,keyboard-interactive" in report.get("sshd-02").title, report.render()
    log = server.logs()
    assert not re.search(r"sudo\(pam_google_authenticator\)\[\d+\]: Accepted google_authenticator for grace", log), log


def test_a_service_account_from_outside_its_networks_cannot_show_its_restrictions(stack: Stack, server: Server) -> None:
    """From 127.0.0.1 (not --source 127.0.0.2) the account is refused: refusal proven, the rest unknown, the run fails."""
    report = verify("127.0.0.1", server.port, "heidi", stack.keys["heidi"], stack.outputs, "web-1",
                    services=[stack.service()], outside=OUTSIDE)
    got = statuses(report)
    assert {k: got[k] for k in SERVICE_CHECKS} == dict(zip(SERVICE_CHECKS, ("PASS", "UNKNOWN", "UNKNOWN", "UNKNOWN"),
                                                           strict=True)), report.render()
    assert "pass --source" in report.get(SERVICE_CHECKS[1]).detail and not report.passed
    assert {got[k] for k in EVERY_CHECK} == {"PASS"}, report.render()


# ------------------------------------------------------------------------------------------- refusals


def test_host_key_mismatch_refuses_before_sending_anything(
    stack: Stack, server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = configs.ed25519_key("impostor")[1].rsplit(" ", 1)[0]
    forged = copy.deepcopy(stack.outputs)
    entry = forged["servers"]["web-1"]
    entry["hostPublicKey"] = other
    entry["knownHosts"] = "\n".join(f"{line.split()[0]} {other}" for line in entry["knownHosts"].splitlines())
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(forged))
    mark = len(sshd_log(server))
    code, out, err = cli(capsys, stack, server, "carol", "--service", f"{SERVICE}={stack.key_files[SERVICE]}",
                         "--outside", OUTSIDE, "--source", INSIDE, outputs_file=path)
    assert code == 1, out + err
    lines = report_lines(out)
    assert lines["host-01"] == "FAIL" and set(lines.values()) == {"FAIL", "UNKNOWN"}, out
    assert set(SERVICE_CHECKS) <= set(lines), out
    assert "the stack pins ssh-ed25519 SHA256:" in out and "no credential was sent" in out
    time.sleep(0.2)  # let sshd log the closed connection
    log = sshd_log(server)[mark:]
    assert "Connection from" in log and "carol" not in log and f"{SERVICE} from" not in log, \
        "a credential reached the server despite a wrong host key"


def test_a_key_the_server_does_not_know_is_reported(stack: Stack, server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = cli(capsys, stack, server, "carol", identity=stack.key_files["dave"])
    assert code == 1
    lines = report_lines(out)
    assert (lines["host-01"], lines["auth-02"], lines["auth-03"]) == ("PASS", "FAIL", "UNKNOWN"), out
    assert "refused the key for carol" in out


def test_a_refused_code_is_reported_with_the_likely_causes(stack: Stack, server: Server) -> None:
    """A code an hour old (a badly wrong clock): auth-03 fails, the rest is not checked, no code shown."""
    report = verify("127.0.0.1", server.port, "dave", stack.keys["dave"], stack.outputs, "web-1", at=time.time() - 3600)
    got = statuses(report)
    assert (got["host-01"], got["auth-01"], got["auth-02"], got["auth-03"]) == ("PASS", "PASS", "PASS", "FAIL"), report.render()
    assert {v for k, v in got.items() if k.startswith(("time-", "sshd-", "pam-"))} == {"UNKNOWN"}
    assert "Clock skew" in report.get("auth-03").detail
    old = pyotp.parse_uri(stack.outputs["enrollment"]["web-1"]["dave"]["otpauthUri"])
    assert isinstance(old, pyotp.TOTP)
    assert stack.leaked(report.render()) == 0 and old.at(time.time() - 3600) not in report.render()


def test_nothing_listening_is_one_line_and_a_failure(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    """One cause, one line (not a report of checks that were never made), exit 1: nothing passed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        code = main(["verify", "--from", str(stack.outputs_file), "--admin", "alice", "--identity",
                     str(stack.key_files["alice"]), "--host", "127.0.0.1", "--port", str(port)])  # fmt: skip
    captured = capsys.readouterr()
    assert (code, captured.out) == (1, "")
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith(f"vpsctl verify: error: cannot connect to 127.0.0.1:{port}: Connection refused: nothing "
                                   "was checked"), captured.err


def test_an_admin_without_sudo_reads_the_settings_through_the_agent(stack: Stack, server: Server) -> None:
    """sudo: none cannot run `sshd -T` (it needs the host key), but every admin may run the agent's read-only
    `effective`: the sshd checks pass for erin too."""
    next_code = pyotp.parse_uri(stack.outputs["enrollment"]["web-1"]["erin"]["otpauthUri"]).at(time.time() + 30)
    with server.login("erin", key=stack.keys["erin"], code=next_code, keep=True) as login:  # verify below takes now's
        assert login.run(["sudo", "-n", "true"]).status != 0  # no sudo at all
        effective = login.run(["sudo", "-n", "/usr/local/sbin/totp-vps-activate", "effective"])
    assert effective.status == 0 and "authenticationmethods publickey,keyboard-interactive" in effective.stdout
    assert "PRIVATE" not in effective.stdout


def test_settings_it_cannot_read_are_unknown_and_fail(stack: Stack, server: Server) -> None:
    """Without the agent (a broken install) an admin without sudo cannot read the effective settings: UNKNOWN."""
    server.root(["chmod", "000", "/usr/local/sbin/totp-vps-activate"])
    try:
        report = verify("127.0.0.1", server.port, "erin", stack.keys["erin"], stack.outputs, "web-1")
    finally:
        server.root(["chmod", "755", "/usr/local/sbin/totp-vps-activate"])
    got = statuses(report)
    assert {v for k, v in got.items() if k.startswith("sshd-")} == {"UNKNOWN"}, report.render()
    assert {k: v for k, v in got.items() if not k.startswith("sshd-")} == dict.fromkeys(
        [c for c in EVERY_CHECK if not c.startswith("sshd-")], "PASS"
    ), report.render()
    assert not report.passed
    assert "cannot read the effective settings" in report.get("sshd-01").detail


# --------------------------------------------------------------------------------- weakened servers


def test_key_alone_server_fails_the_right_checks(stack: Stack, server: Server) -> None:
    """(ivan's key alone logs in here: his code stays unused for the next test.)"""
    changes = {
        st.DROPIN: {"AuthenticationMethods publickey,keyboard-interactive": "AuthenticationMethods publickey",
                    "PasswordAuthentication no": "PasswordAuthentication yes"},
        st.PAM_SSHD: {"auth       required     pam_google_authenticator.so":
                      "auth       required     pam_google_authenticator.so nullok\n@include common-auth"},
    }  # fmt: skip
    with weakened(server, changes):
        report = verify("127.0.0.1", server.port, "ivan", stack.keys["ivan"], stack.outputs, "web-1")
    assert failed(report) == {"auth-02", "auth-03", "sshd-02", "sshd-05", "pam-01"}, report.render()
    assert "key ALONE logged in" in report.get("auth-02").detail
    assert report.get("sshd-05").detail == "sshd -T says 'passwordauthentication yes'"
    assert "nullok" in report.get("pam-01").detail and "common-auth" in report.get("pam-01").detail, report.get("pam-01")
    assert stack.leaked(report.render()) == 0


def test_password_as_an_alternative_second_factor_fails(stack: Stack, server: Server) -> None:
    changes = {st.DROPIN: {"AuthenticationMethods publickey,keyboard-interactive":
                           "AuthenticationMethods publickey,keyboard-interactive publickey,password",
                           "PasswordAuthentication no": "PasswordAuthentication yes"}}  # fmt: skip
    with weakened(server, changes):
        report = verify("127.0.0.1", server.port, "ivan", stack.keys["ivan"], stack.outputs, "web-1")
    assert failed(report) == {"auth-01", "auth-02", "sshd-02", "sshd-05"}, report.render()
    assert "password" in report.get("auth-01").detail


def test_a_loosened_service_account_and_sudo_without_a_code_fail_their_checks(stack: Stack, server: Server) -> None:
    """deploy allowed from anywhere with a plain key line, its terminal and forwarding switched back on; judy's sudo
    rule without the code: exactly those checks fail."""
    keys = f"{st.KEYS_DIR}/{SERVICE}"
    account = next(a for a in stack.outputs["desiredState"]["web-1"]["serviceAccounts"] if a["name"] == SERVICE)
    changes = {
        st.DROPIN: {f"{SERVICE}@{INSIDE}/32": SERVICE, "PermitTTY no": "PermitTTY yes",
                    "DisableForwarding yes": "DisableForwarding no", "AllowTcpForwarding no": "AllowTcpForwarding yes"},
        keys: {st.authorized_keys(account, service=True).split(" ssh-ed25519 ")[0] + " ": ""},
        st.SUDOERS: {"judy ALL=(ALL:ALL) ALL": "judy ALL=(ALL:ALL) NOPASSWD: ALL"},
    }
    with weakened(server, changes):
        report = verify("127.0.0.1", server.port, "judy", stack.keys["judy"], stack.outputs, "web-1",
                        services=[stack.service()], outside=OUTSIDE, source=INSIDE)
    svc = dict(zip(("away", "home", "tty", "forward"), SERVICE_CHECKS, strict=True))
    assert failed(report) == {"sudo-01", svc["away"], svc["tty"], svc["forward"]}, report.render()
    assert report.get("sudo-01").detail == "sudo ran the command with a wrong code"
    assert report.get(svc["away"]).detail.startswith(f"its key was accepted from {OUTSIDE}, outside {INSIDE}/32")
    assert report.get(svc["tty"]).detail == "the server granted a terminal"
    assert report.get(svc["forward"]).detail.startswith("the server opened a forward")
    assert stack.leaked(report.render()) == 0


# ---------------------------------------------------------------------------------------- CLI errors


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vpsctl", *argv], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("case", "extra", "message"),
    [
        ("missing identity", ["--admin", "alice", "--identity", "{missing}"], "--identity: cannot read"),
        ("public key as identity", ["--admin", "alice", "--identity", "{public}"], "is not a private key"),
        ("unknown admin", ["--admin", "mallory", "--identity", "{alice}"], "'mallory' is not an admin"),
        ("bad port", ["--admin", "alice", "--identity", "{alice}", "--host", "127.0.0.1", "--port", "70000"], "--port"),
        ("service without a key", ["--admin", "alice", "--identity", "{alice}", "--service", "deploy"],
         "argument --service: want NAME=KEYFILE (got 'deploy')"),
        ("service key missing", ["--admin", "alice", "--identity", "{alice}", "--service", "deploy={missing}"],
         "--service deploy: cannot read"),
        ("no such service account", ["--admin", "alice", "--identity", "{alice}", "--service", "backups={deploy}"],
         "--service: 'backups' is not a service account of web-1 (service accounts: deploy)"),
        ("an admin's key for the service", ["--admin", "alice", "--identity", "{alice}", "--service", "deploy={alice}"],
         "--service deploy: the key in {alice} is not one of deploy's keys"),
        ("service without --outside", ["--admin", "alice", "--identity", "{alice}", "--service", "deploy={deploy}"],
         "--service needs --outside ADDRESS"),
        ("outside inside", ["--admin", "alice", "--identity", "{alice}", "--service", "deploy={deploy}",
                            "--outside", INSIDE], f"--outside: {INSIDE} is inside deploy's networks ({INSIDE}/32)"),
        ("outside not an address", ["--admin", "alice", "--identity", "{alice}", "--outside", "nowhere"],
         "argument --outside: not an IP address: 'nowhere'"),
    ],
)
def test_cli_errors_are_one_line(stack: Stack, tmp_path: Path, case: str, extra: list[str], message: str) -> None:
    public = tmp_path / "id.pub"
    public.write_text(configs.ed25519_key("alice@verify")[1] + "\n")
    paths = {"missing": str(tmp_path / "nope"), "public": str(public), "alice": str(stack.key_files["alice"]),
             "deploy": str(stack.key_files[SERVICE])}
    done = run_cli("verify", "--from", str(stack.outputs_file), *(a.format(**paths) for a in extra))
    assert stack.leaked(done.stdout + done.stderr) == 0, f"{case}: printed a secret"
    assert (done.returncode, done.stdout) == (2, ""), f"{case}: {done.returncode} {done.stdout}{done.stderr}"
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, f"{case}: {done.stderr}"
    assert message.format(**paths) in done.stderr, f"{case}: {done.stderr}"
