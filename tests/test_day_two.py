"""Day two on a real server: `vpsctl sync` changes who gets in, safely and provably.

Each test boots a loopback server (tests/sshd_harness.py: the real sshd, PAM, sudo, useradd and the agent)
from user-data the real program rendered under the mock engine, then runs `python -m vpsctl sync` as a user
does, against stack outputs of the same program with a changed config. pam_google_authenticator allows 3
logins per 30 s per admin and no code twice: the tests count logins per admin and say where they wait.
"""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from configs import ROOT, Stack, ed25519_key, keys_in, make_stack, sync
from conftest import require_root, require_tool
from cryptography.hazmat.primitives import serialization
from sshd_harness import SSHD, Server, effective, free_port, running_server

from agent import state as st
from vpsctl import sshsig
from vpsctl.sync import targets as sync_targets


def base_config(public: dict[str, str], port: int, admins: tuple[str, ...] = ("alice", "bob")) -> dict[str, Any]:
    return {
        "issuer": "day-two",
        "admins": [{"name": name, "sshKeys": [public[name]]} for name in admins],
        "defaults": {"allowedCidrs": ["127.0.0.0/8"], "sshPort": port},
        "servers": [{"name": "web-1"}],
    }


def started_at(server: Server) -> tuple[str, str]:
    """Start times (ticks since boot) of the server's first process and of its sshd listener."""
    script = "for p in 1 $(cat /run/sshd.pid); do cut -d' ' -f22 /proc/$p/stat; done"
    first, listener = server.root(["sh", "-c", script]).stdout.split()
    return first, listener


def record(server: Server) -> dict[str, Any]:
    done = server.agent("status")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def tmp_keys(tmp_path: Path) -> tuple[Path, dict[str, Path], dict[str, str]]:
    require_root()
    require_tool("sshd")
    require_tool("sudo")
    files, public = keys_in(tmp_path, ("alice", "bob", "carol", "alice2", "dave"))
    return tmp_path, files, public


@pytest.fixture
def booted(tmp_keys: tuple[Path, dict[str, Path], dict[str, str]]) -> Iterator[tuple[Stack, Server]]:
    tmp, files, public = tmp_keys
    stack = make_stack(tmp, base_config(public, free_port()), files, "before")
    with running_server(stack.user_data) as server:
        assert server.activation is not None and server.activation.returncode == 0, server.logs()
        yield stack, server


def changed(stack: Stack, tmp: Path, public: dict[str, str], edit: Any, tag: str = "after") -> Stack:
    config = copy.deepcopy(stack.config)
    edit(config)
    return make_stack(tmp, config, stack.key_files, tag)


# ------------------------------------------------------------------------------------ the scenario


def test_one_sync_offboards_bob_adds_carol_rotates_alice_adds_a_key_and_turns_on_forwarding(
        booted: tuple[Stack, Server], tmp_keys: tuple[Path, dict[str, Path], dict[str, str]]) -> None:
    stack, server = booted
    tmp, _files, public = tmp_keys
    # bob is logged in while the change happens (bob: 1 login).
    bob = server.login("bob", key=stack.key("bob"), code=stack.totp("bob").now(), keep=True)
    assert bob.accepted, bob
    host_key, started = server.read("/etc/ssh/ssh_host_ed25519_key.pub"), started_at(server)

    def edit(config: dict[str, Any]) -> None:
        config["admins"] = [{"name": "alice", "sshKeys": [public["alice"], public["alice2"]], "rotation": 1},
                            {"name": "carol", "sshKeys": [public["carol"]]}]
        config["defaults"]["allowForwarding"] = True

    after = changed(stack, tmp, public, edit)
    # The plan first (alice: login 1 on her old seed, from the stack's previous seeds).
    plan = sync(after, "alice", "--dry-run")
    assert plan.returncode == 3, plan.stdout + plan.stderr
    assert "web-1: -bob +carol ~alice(rotated, keys +1) sshd: allowForwarding no->yes" in plan.stdout, plan.stdout
    time.sleep(31)  # alice's old file: a second login within 30 s would reuse the code of this step
    done = sync(after, "alice")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "web-1: confirmed" in done.stdout and "FAILED" not in done.stdout, done.stdout

    # bob: his open session is gone, and his key with a valid code of his (old) seed is refused.
    with pytest.raises((paramiko.SSHException, EOFError, OSError)):
        bob.run("id", timeout=10)
    refused = server.login("bob", key=stack.key("bob"), code=stack.totp("bob").at(time.time() + 30))
    assert refused.refused_at == "publickey", refused
    assert "L" in server.root(["passwd", "--status", "bob"]).stdout.split()[1], "bob's account is locked"
    assert server.root(["test", "-d", "/home/bob"]).returncode == 0, "bob's home (data) is kept"
    assert server.read("/home/bob/.google_authenticator") is None and server.read(f"{st.KEYS_DIR}/bob") is None
    # carol gets in with key + TOTP.
    carol = server.login("carol", key=after.key("carol"), code=after.totp("carol").now())
    assert carol.accepted, f"{carol}\n{server.logs()}"
    # alice (on her new file: 1 login by the sync): the old seed is refused, the new one works with either key.
    old = server.login("alice", key=stack.key("alice"), code=stack.totp("alice").now())
    assert old.refused_at == "keyboard-interactive", old
    for key in ("alice", "alice2"):
        time.sleep(0 if key == "alice" else 31)  # 3 logins per 30 s
        # The sync's login 2 used this step's code: each of these takes the next step's (valid in the window).
        new = server.login("alice", key=after.key(key), code=after.totp("alice").at(time.time() + 30))
        assert new.accepted, f"{key}: {new}\n{server.logs()}"
    values = effective(server.root([SSHD, "-T"]).stdout)
    assert values["allowtcpforwarding"] == "yes" and values["allowusers"] == "alice carol"
    # Neither replaced nor rebooted, sshd reloaded, not restarted: the same host key, the same processes.
    assert server.read("/etc/ssh/ssh_host_ed25519_key.pub") == host_key
    assert started_at(server) == started
    # A second sync says there is nothing to do (as carol, who has logins left).
    again = sync(after, "carol")
    assert again.returncode == 0 and "web-1: in sync" in again.stdout, again.stdout + again.stderr
    events = [e["event"] for e in record(server)["events"]]
    assert events[-2:] == ["pending", "applied"], events


def test_a_used_backup_code_stays_used_across_a_sync(booted: tuple[Stack, Server],
                                                     tmp_keys: tuple[Path, dict[str, Path], dict[str, str]]) -> None:
    stack, server = booted
    tmp, _files, public = tmp_keys
    code = stack.outputs["enrollment"]["web-1"]["bob"]["backupCodes"][0]
    assert server.login("bob", key=stack.key("bob"), code=code).accepted
    after = changed(stack, tmp, public, lambda c: c["defaults"].update(allowForwarding=True))  # bob not rotated
    done = sync(after, "alice")
    assert done.returncode == 0 and "confirmed" in done.stdout, done.stdout + done.stderr
    again = server.login("bob", key=stack.key("bob"), code=code)
    assert again.refused_at == "keyboard-interactive", f"a used backup code came back to life: {again}"
    unused = stack.outputs["enrollment"]["web-1"]["bob"]["backupCodes"][1]
    assert server.login("bob", key=stack.key("bob"), code=unused).accepted


# ------------------------------------------------------------------------------------------- faults


def test_a_drop_in_sshd_rejects_is_refused_before_reload(booted: tuple[Stack, Server],
                                                          tmp_keys: tuple[Path, dict[str, Path], dict[str, str]]) -> None:
    stack, server = booted
    before = record(server)["applied"]["serial"]
    state = copy.deepcopy(stack.outputs["desiredState"]["web-1"])
    state["files"][st.DROPIN] += "ThisIsNotAnSshdDirective yes\n"
    status = record(server)
    request = {"state": state, "signature": sshsig.sign(st.signed_message(st.normal(state), status["nonce"]),
                                                        stack.outputs["sync"]["signingKey"], st.SIGNATURE_NAMESPACE)}
    login = server.login("alice", key=stack.key("alice"), code=stack.totp("alice").now(), keep=True)
    with login:
        answer = login.run(["sudo", "-n", "/usr/local/sbin/totp-vps-activate", "apply"], stdin=json.dumps(request).encode())
    assert answer.status == 1 and "sshd -t rejects the configuration" in answer.stdout, answer
    after = record(server)
    assert after["applied"]["serial"] == before and after["pending"] is None
    assert after["events"][-1]["event"] == "refused" or after["events"][-2]["event"] == "rolled back", after["events"]
    assert "ThisIsNot" not in (server.read(st.DROPIN) or "")
    # Still reachable with the previous configuration.
    assert server.login("bob", key=stack.key("bob"), code=stack.totp("bob").now()).accepted


def test_a_killed_client_between_apply_and_confirm_is_rolled_back_within_the_bound(
        booted: tuple[Stack, Server], tmp_keys: tuple[Path, dict[str, Path], dict[str, str]]) -> None:
    stack, server = booted
    tmp, _files, public = tmp_keys
    before = record(server)["applied"]["serial"]
    after = changed(stack, tmp, public, lambda c: c["admins"].append({"name": "dave", "sshKeys": [public["dave"]]}))
    argv = [sys.executable, "-m", "vpsctl", "sync", "--from", str(after.outputs_file), "--host", "127.0.0.1", "--as", "alice",
            "--identity", str(after.key_files["alice"]), "--confirm-within", "15"]
    client = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while record(server)["pending"] is None:  # applied, provisional: kill the client before it confirms
        assert client.poll() is None and time.monotonic() < deadline, client.communicate()[0]
        time.sleep(0.05)
    client.send_signal(signal.SIGKILL)
    client.wait()
    assert record(server)["pending"]["phase"] in ("applying", "awaiting-confirmation")
    time.sleep(20)  # the bound (15 s) and the watchdog's one-second poll
    now = record(server)
    assert now["pending"] is None and now["applied"]["serial"] == before, now
    rolled = [e for e in now["events"] if e["event"] == "rolled back"]
    assert rolled and "no confirmation within 15 s" in rolled[-1]["detail"], now["events"]
    assert server.read(f"{st.KEYS_DIR}/dave") is None
    assert "dave" not in effective(server.root([SSHD, "-T"]).stdout)["allowusers"]
    assert server.login("bob", key=stack.key("bob"), code=stack.totp("bob").now()).accepted


def test_a_change_nobody_could_confirm_is_refused_before_connecting(
        booted: tuple[Stack, Server], tmp_keys: tuple[Path, dict[str, Path], dict[str, str]]) -> None:
    stack, server = booted
    tmp, _files, public = tmp_keys
    after = changed(stack, tmp, public, lambda c: c.update(admins=[{"name": "carol", "sshKeys": [public["carol"]]}]))
    logins_before = server.logs().count("Accepted publickey")
    done = sync(after, "alice")
    assert done.returncode == 1 and "alice is not an admin in the new state" in done.stdout, done.stdout + done.stderr
    assert server.logs().count("Accepted publickey") == logins_before, "sync connected anyway"
    assert record(server)["events"][-1]["event"] == "applied"


def test_a_port_change_logs_in_on_the_new_port_then_the_previous_one(tmp_path: Path) -> None:
    """The outputs carry previousSshPort as Pulumi hands numbers over (22.0): the sync still tries it."""
    files, public = keys_in(tmp_path, ("alice",))
    config = base_config(public, 2222, ("alice",))
    config["defaults"]["previousSshPort"] = 22
    stack = make_stack(tmp_path, config, files, "moved")
    outputs = json.loads(stack.outputs_file.read_text())
    assert outputs["servers"]["web-1"]["previousSshPort"] == 22.0
    (target,) = sync_targets(outputs, None, "127.0.0.1", ["22=10022", "2222=12222"])
    assert target.ports == [(2222, 12222), (22, 10022)]


# ---------------------------------------------------------------------- what the agent itself refuses


USED: dict[str, set[str]] = {}


def agent_apply(server: Server, stack: Stack, admin: str, request: dict[str, Any]) -> dict[str, Any]:
    code = stack.fresh_code(admin, USED.setdefault(f"{server.port}-{admin}", set()))
    with server.login(admin, key=stack.key(admin), code=code, keep=True) as login:
        done = login.run(["sudo", "-n", "/usr/local/sbin/totp-vps-activate", "apply"], stdin=json.dumps(request).encode())
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_unsigned_foreign_or_replayed_states_are_refused(booted: tuple[Stack, Server]) -> None:
    stack, server = booted
    state = st.normal(stack.outputs["desiredState"]["web-1"])
    state["summary"]["note"] = "changed"  # any change at all
    nonce = record(server)["nonce"]
    other_key = sshsig.sign(st.signed_message(state, nonce), ed25519_private("stranger"), st.SIGNATURE_NAMESPACE)
    assert "signature does not verify" in agent_apply(server, stack, "alice", {"state": state, "signature": other_key})["reason"]
    assert "not signed" in agent_apply(server, stack, "bob", {"state": state})["reason"]
    old = sshsig.sign(st.signed_message(state, "0" * 32), stack.outputs["sync"]["signingKey"], st.SIGNATURE_NAMESPACE)
    assert "signature does not verify" in agent_apply(server, stack, "alice", {"state": state, "signature": old})["reason"]
    assert record(server)["pending"] is None


def ed25519_private(label: str) -> str:
    key, _ = ed25519_key(label)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                             serialization.NoEncryption()).decode()


def test_confirm_from_the_connection_that_applied_is_refused(booted: tuple[Stack, Server],
                                                             tmp_keys: tuple[Path, dict[str, Path], dict[str, str]]) -> None:
    stack, server = booted
    tmp, _files, public = tmp_keys
    after = changed(stack, tmp, public, lambda c: c["defaults"].update(allowForwarding=True))
    state = st.normal(after.outputs["desiredState"]["web-1"])
    nonce = record(server)["nonce"]
    signature = sshsig.sign(st.signed_message(state, nonce), after.outputs["sync"]["signingKey"], st.SIGNATURE_NAMESPACE)
    alice_code = stack.fresh_code("alice", USED.setdefault(f"{server.port}-alice", set()))
    with server.login("alice", key=stack.key("alice"), code=alice_code, keep=True) as login:
        agent = ["sudo", "-n", "/usr/local/sbin/totp-vps-activate"]
        applied = login.run([*agent, "apply"], stdin=json.dumps({"state": state, "signature": signature,
                                                                 "confirmWithin": 60}).encode())
        serial = json.loads(applied.stdout)["serial"]
        same = login.run([*agent, "confirm", serial])
        assert same.status == 1 and "opened before the change" in same.stdout, same
        # From the server's console (no SSH session at all) neither.
        assert "runs in an SSH session" in server.agent("confirm", serial).stdout
        bob_code = stack.fresh_code("bob", USED.setdefault(f"{server.port}-bob", set()))
        with server.login("bob", key=stack.key("bob"), code=bob_code, keep=True) as second:
            confirmed = second.run([*agent, "confirm", serial])
        assert confirmed.status == 0 and json.loads(confirmed.stdout)["result"] == "confirmed", confirmed
    assert record(server)["applied"]["serial"] == serial
    # Applying the same state again changes nothing.
    nonce = record(server)["nonce"]
    again = sshsig.sign(st.signed_message(state, nonce), after.outputs["sync"]["signingKey"], st.SIGNATURE_NAMESPACE)
    assert agent_apply(server, stack, "bob", {"state": state, "signature": again})["result"] == "unchanged"
