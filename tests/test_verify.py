"""`vpsctl verify` against a real sshd (tests/sshd_harness.py) configured by the program's own user-data.

One offline run of the program (components.mockengine) gives both sides, as a real stack does: the
user-data the server boots with and the stack outputs verify reads (pinned host key, TOTP secrets).
Each admin logs in at most once per server (RATE_LIMIT 3 30 and DISALLOW_REUSE). Weakened servers
are the same user-data with one file changed, and must fail exactly the checks that describe the change.
Assertion messages never include a secret.
"""

from __future__ import annotations

import copy
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import configs
import paramiko
import pyotp
import pytest
import yaml
from conftest import require_root, require_tool
from cryptography.hazmat.primitives import serialization
from sshd_harness import PAM_FILE, REAL_DROPIN, Sshd, load_private_key, running_sshd

from cloudinit import render
from components import mockengine
from vpsctl.__main__ import main
from vpsctl.verify import Report, check_pam, verify

ROOT = Path(__file__).resolve().parent.parent
ADMINS = ("alice", "bob", "carol", "dave")
EVERY_CHECK = (
    "host-01", "auth-01", "auth-02", "auth-03", "time-01",
    *(f"sshd-{i:02d}" for i in range(1, 9)),
    "pam-01", "pam-02", "pam-03",
)  # fmt: skip


@dataclass
class Stack:
    """The program's outputs and user-data for one server, and the admins' private keys."""

    outputs: dict[str, Any]
    outputs_file: Path
    user_data: str
    keys: dict[str, paramiko.PKey]
    key_files: dict[str, Path]

    def secrets(self) -> set[str]:
        """Every seed, URI, backup code and TOTP code near now: none of them may ever be printed."""
        found: set[str] = set()
        for item in self.outputs["enrollment"]["web-1"].values():
            totp = pyotp.parse_uri(item["otpauthUri"])
            assert isinstance(totp, pyotp.TOTP)
            found |= {item["otpauthUri"], totp.secret, item["manualKey"], *item["backupCodes"]}
            found |= {totp.at(time.time() + 30 * k) for k in range(-2, 3)}
        return found

    def leaked(self, text: str) -> int:
        """How many secrets ``text`` holds (6-digit codes as whole words), as a count for messages."""
        return sum(1 for s in self.secrets() if re.search(rf"(?<![0-9A-Za-z]){re.escape(s)}(?![0-9A-Za-z])", text))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    tmp = tmp_path_factory.mktemp("verify")
    keys, key_files, public = {}, {}, {}
    for name in ADMINS:
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
        "admins": [{"name": n, "sshKeys": [public[n]]} for n in ADMINS],
        "defaults": {"allowedCidrs": ["198.51.100.0/24"]},
        "servers": [{"name": "web-1"}],
    }
    run = mockengine.run(config)
    outputs = mockengine.unwrap(run.stack_outputs)
    user_data = mockengine.unwrap(run.one("hcloud:index/server:Server", "web-1-server").inputs)["userData"]
    outputs_file = tmp / "outputs.json"
    outputs_file.write_text(json.dumps(outputs))
    outputs_file.chmod(0o600)
    return Stack(outputs=outputs, outputs_file=outputs_file, user_data=user_data, keys=keys, key_files=key_files)


def need_real_sshd() -> None:
    require_root()
    require_tool("sshd")
    require_tool("sudo")  # the admins' passwordless sudo (cloud-init's users[].sudo) reads `sshd -T`


@pytest.fixture(scope="module")
def server(stack: Stack) -> Iterator[Sshd]:
    need_real_sshd()
    with running_sshd(stack.user_data) as sshd:
        yield sshd


def cli(capsys: pytest.CaptureFixture[str], stack: Stack, sshd: Sshd | None, admin: str, *extra: str,
        outputs_file: Path | None = None, identity: Path | None = None) -> tuple[int, str, str]:
    argv = ["verify", "--from", str(outputs_file or stack.outputs_file), "--admin", admin,
            "--identity", str(identity or stack.key_files[admin])]  # fmt: skip
    if sshd is not None:
        argv += ["--host", "127.0.0.1", "--port", str(sshd.port)]
    code = main([*argv, *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def statuses(report: Report) -> dict[str, str]:
    return {c.id: c.status for c in report.checks}


def report_lines(out: str) -> dict[str, str]:
    """check id -> PASS/FAIL/UNKNOWN, parsed from the printed report."""
    found = {}
    for line in out.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in ("PASS", "FAIL", "UNKNOWN"):
            found[words[1]] = words[0]
    return found


def sshd_log(sshd: Sshd) -> str:
    return sshd.logs().split("--- syslog ---")[0]


# ------------------------------------------------------------------------------------ a correct server


def test_correct_server_passes_every_check(stack: Stack, server: Sshd, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, stack, server, "alice")
    assert stack.leaked(out + err) == 0, "verify printed a secret"
    assert code == 0, f"{out}{err}\n{server.logs()}"
    assert report_lines(out) == dict.fromkeys(EVERY_CHECK, "PASS"), out
    assert out.rstrip().endswith("16 passed, 0 failed, 0 unknown: PASS: the server enforces key + TOTP")
    # One login, not one per check: the rate limit (3 per 30 s) and DISALLOW_REUSE stay untouched.
    log = sshd_log(server)
    assert len(re.findall(r"Accepted keyboard-interactive/pam for alice ", log)) == 1, log
    assert "Failed" not in log, log


def test_function_api_for_other_callers(stack: Stack, server: Sshd) -> None:
    """What the VM tests call: verify(host, port, admin, identity, outputs, server) -> Report."""
    report = verify("127.0.0.1", server.port, "bob", stack.keys["bob"], stack.outputs, "web-1")
    assert [c.id for c in report.checks] == list(EVERY_CHECK)
    assert report.passed, report.render()
    assert report.get("auth-02").ok and report.get("auth-01").detail == "offered: publickey; then keyboard-interactive"
    assert stack.leaked(report.render()) == 0


# ------------------------------------------------------------------------------------------- refusals


def test_host_key_mismatch_refuses_before_sending_anything(
    stack: Stack, server: Sshd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = configs.ed25519_key("impostor")[1].rsplit(" ", 1)[0]
    forged = copy.deepcopy(stack.outputs)
    entry = forged["servers"]["web-1"]
    entry["hostPublicKey"] = other
    entry["knownHosts"] = "\n".join(f"{line.split()[0]} {other}" for line in entry["knownHosts"].splitlines())
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(forged))
    code, out, err = cli(capsys, stack, server, "carol", outputs_file=path)
    assert code == 1, out + err
    lines = report_lines(out)
    assert lines["host-01"] == "FAIL" and set(lines.values()) == {"FAIL", "UNKNOWN"}, out
    assert "the stack pins ssh-ed25519 SHA256:" in out and "no credential was sent" in out
    time.sleep(0.2)  # let sshd log the closed connection
    assert "carol" not in sshd_log(server), "a credential reached the server despite the wrong host key"


def test_a_key_the_server_does_not_know_is_reported(stack: Stack, server: Sshd, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = cli(capsys, stack, server, "carol", identity=stack.key_files["dave"])
    assert code == 1
    lines = report_lines(out)
    assert (lines["host-01"], lines["auth-02"], lines["auth-03"]) == ("PASS", "FAIL", "UNKNOWN"), out
    assert "refused the key for carol" in out


def test_a_refused_code_is_reported_with_the_likely_causes(stack: Stack, server: Sshd) -> None:
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
    """One cause, one line (not a report of 16 checks that were never made), exit 1: nothing passed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        code = main(["verify", "--from", str(stack.outputs_file), "--admin", "alice", "--identity",
                     str(stack.key_files["alice"]), "--host", "127.0.0.1", "--port", str(port)])  # fmt: skip
    captured = capsys.readouterr()
    assert (code, captured.out) == (1, "")
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith(f"vpsctl verify: error: cannot connect to 127.0.0.1:{port} (Connection refused)"), captured.err


# --------------------------------------------------------------------------------- weakened servers


def weakened(stack: Stack, dropin: dict[str, str] | None = None, pam: dict[str, str] | None = None) -> dict[str, str]:
    """``files`` for running_sshd: the rendered drop-in / PAM file with lines replaced."""
    written = render.write_files(stack.user_data)
    files = {}
    for path, changes in ((REAL_DROPIN, dropin), (PAM_FILE, pam)):
        if changes:
            text = str(written[path]["content"])
            for old, new in changes.items():
                assert old in text, f"{path} has no line {old!r}"
                text = text.replace(old, new)
            files[path] = text
    return files


def test_key_alone_server_fails_the_right_checks(stack: Stack) -> None:
    need_real_sshd()
    files = weakened(
        stack,
        dropin={"AuthenticationMethods publickey,keyboard-interactive": "AuthenticationMethods publickey",
                "PasswordAuthentication no": "PasswordAuthentication yes"},
        pam={"auth       required     pam_google_authenticator.so":
             "auth       required     pam_google_authenticator.so nullok\n@include common-auth"},
    )  # fmt: skip
    with running_sshd(stack.user_data, files=files) as sshd:
        report = verify("127.0.0.1", sshd.port, "alice", stack.keys["alice"], stack.outputs, "web-1")
    got = statuses(report)
    failed = {k for k, v in got.items() if v != "PASS"}
    assert failed == {"auth-02", "auth-03", "sshd-02", "sshd-05", "pam-02", "pam-03"}, report.render()
    assert "key ALONE logged in" in report.get("auth-02").detail
    assert report.get("sshd-05").detail == "sshd -T says 'passwordauthentication yes'"
    assert "@include common-auth" in report.get("pam-03").detail
    assert stack.leaked(report.render()) == 0


def test_password_as_an_alternative_second_factor_fails(stack: Stack) -> None:
    need_real_sshd()
    files = weakened(
        stack,
        dropin={"AuthenticationMethods publickey,keyboard-interactive":
                "AuthenticationMethods publickey,keyboard-interactive publickey,password",
                "PasswordAuthentication no": "PasswordAuthentication yes"},
    )  # fmt: skip
    with running_sshd(stack.user_data, files=files) as sshd:
        report = verify("127.0.0.1", sshd.port, "alice", stack.keys["alice"], stack.outputs, "web-1")
    failed = {k for k, v in statuses(report).items() if v != "PASS"}
    assert failed == {"auth-01", "auth-02", "sshd-02", "sshd-05"}, report.render()
    assert "password" in report.get("auth-01").detail


def test_settings_it_cannot_read_are_unknown_and_fail(stack: Stack) -> None:
    """An admin without sudo cannot run `sshd -T` (it needs the host key): reported UNKNOWN, run fails."""
    need_real_sshd()
    data = yaml.safe_load(stack.user_data)
    for user in data["users"]:
        user.pop("sudo", None)
    with running_sshd("#cloud-config\n" + yaml.safe_dump(data)) as sshd:
        report = verify("127.0.0.1", sshd.port, "alice", stack.keys["alice"], stack.outputs, "web-1")
    got = statuses(report)
    assert {k for k, v in got.items() if k.startswith("sshd-")} == {f"sshd-{i:02d}" for i in range(1, 9)}
    assert {v for k, v in got.items() if k.startswith("sshd-")} == {"UNKNOWN"}, report.render()
    assert {k: v for k, v in got.items() if not k.startswith("sshd-")} == dict.fromkeys(
        [c for c in EVERY_CHECK if not c.startswith("sshd-")], "PASS"
    ), report.render()
    assert not report.passed
    assert "cannot read the effective settings" in report.get("sshd-01").detail


# ------------------------------------------------------------------------------------- PAM, offline


GOOD_PAM = render.pam_sshd()


@pytest.mark.parametrize(
    ("case", "text", "expected"),
    [
        ("rendered", GOOD_PAM, (True, True, True)),
        ("nullok", GOOD_PAM.replace("pam_google_authenticator.so", "pam_google_authenticator.so nullok"), (True, False, True)),
        ("common-auth", "@include common-auth\n" + GOOD_PAM, (True, True, False)),
        ("commented include", "# @include common-auth\n" + GOOD_PAM, (True, True, True)),
        ("pam_unix", GOOD_PAM + "auth sufficient pam_unix.so\n", (True, True, False)),
        ("optional", GOOD_PAM.replace("required     pam_google", "optional     pam_google"), (False, True, True)),
        ("full path, -auth", GOOD_PAM.replace("auth       required     pam_google_authenticator.so",
                                               "-auth required /lib/x86_64-linux-gnu/security/pam_google_authenticator.so"),
         (True, True, True)),
        ("missing", "\n".join(line for line in GOOD_PAM.splitlines() if "google" not in line), (False, True, True)),
        ("bracket control", GOOD_PAM + "auth [success=done default=ignore] pam_permit.so\n", (True, True, False)),
    ],
)
def test_pam_checks(case: str, text: str, expected: tuple[bool, bool, bool]) -> None:
    assert tuple(ok for ok, _detail in check_pam(text)) == expected, case


def test_debian_default_pam_fails() -> None:
    debian = Path("/etc/pam.d/sshd")
    if not debian.exists() or "totp-vps" in debian.read_text():
        pytest.skip("no stock /etc/pam.d/sshd here")
    assert [ok for ok, _ in check_pam(debian.read_text())] == [False, True, False]


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
    ],
)
def test_cli_errors_are_one_line(stack: Stack, tmp_path: Path, case: str, extra: list[str], message: str) -> None:
    public = tmp_path / "id.pub"
    public.write_text(configs.ed25519_key("alice@verify")[1] + "\n")
    paths = {"missing": str(tmp_path / "nope"), "public": str(public), "alice": str(stack.key_files["alice"])}
    done = run_cli("verify", "--from", str(stack.outputs_file), *(a.format(**paths) for a in extra))
    assert stack.leaked(done.stdout + done.stderr) == 0, f"{case}: printed a secret"
    assert (done.returncode, done.stdout) == (2, ""), f"{case}: {done.returncode} {done.stdout}{done.stderr}"
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, f"{case}: {done.stderr}"
    assert message in done.stderr, f"{case}: {done.stderr}"

