"""`python -m lab sync` changes who gets in to a running lab server, through the lab's own code paths.

A loopback server (tests/sshd_harness.py: the real sshd, PAM, sudo and agent, set up from the same user-data)
stands in for the lab's VM; `--port` points the sync at it instead of a qemu forward. The lab's state comes from
the functions `python -m lab` runs before it boots (tests/test_lab_state.py shows they keep it). The forward a new
port needs is added to a real qemu through its monitor. pam_google_authenticator allows 3 logins per 30 s per
admin and no code twice: each admin below logs in at most once per sync step, in different steps.
"""

from __future__ import annotations

import copy
import json
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pyotp
import pytest
from conftest import require_root, require_tool
from sshd_harness import Server, free_port, load_private_key, running_server
from test_lab_state import lab_up, values, write_config

from lab import vm
from lab.state import LabState
from vpsctl import sshclient

ROOT = Path(__file__).resolve().parent.parent


def lab(*argv: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab", *argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False)


def key(state: LabState, name: str) -> paramiko.PKey:
    return load_private_key(state.key_file(name).read_text())


def totp(outputs: dict[str, Any], admin: str) -> pyotp.TOTP:
    return pyotp.parse_uri(outputs["enrollment"]["web-1"][admin]["otpauthUri"])  # type: ignore[return-value]


def base(port: int) -> dict[str, Any]:
    config = values(("alice", "bob", "dave"), sshPort=port)
    config["defaults"]["allowedCidrs"] = ["127.0.0.0/8"]
    return config


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Path, LabState, Server]]:
    """(config file, the lab's state, the server booted from the user-data the program registered)."""
    require_root()
    require_tool("sshd")
    require_tool("sudo")
    config = write_config(tmp_path / "Pulumi.lab.yaml", base(free_port()))
    state, stack = lab_up(config, tmp_path / "state")
    with running_server(stack.user_data) as server:
        assert server.activation is not None and server.activation.returncode == 0, server.logs()
        yield config, state, server


def test_dry_run_shows_the_plan_then_a_sync_lets_carol_in_and_keeps_bob_out(running: tuple[Path, LabState, Server]) -> None:
    config, state, server = running
    before = json.loads(state.outputs.read_text())
    engine = state.engine.read_bytes()
    changed = copy.deepcopy(base(server.port))
    changed["admins"] = [a for a in changed["admins"] if a["name"] != "bob"] + values(("carol",))["admins"]
    write_config(config, changed)
    port = f"--port={server.port}={server.port}"

    plan = lab("sync", "--config", str(config), "--state-dir", str(state.path), port, "--dry-run", "--as", "dave")
    assert plan.returncode == 3, plan.stdout + plan.stderr
    assert "web-1: -bob +carol" in plan.stdout and "web-1: drifted" in plan.stdout, plan.stdout
    assert state.engine.read_bytes() == engine and json.loads(state.outputs.read_text()) == before, "a dry run kept the state"
    assert not (state.path / "outputs.preview.json").exists()

    done = lab("sync", "--config", str(config), "--state-dir", str(state.path), port)  # as alice: there before and after
    assert done.returncode == 0, done.stdout + done.stderr
    assert "web-1: confirmed" in done.stdout and "FAILED" not in done.stdout, done.stdout
    after = json.loads(state.outputs.read_text())
    assert "lab: carol is new on web-1: enroll it" in done.stdout
    assert after["enrollment"]["web-1"]["carol"]["manualKey"] in done.stdout
    assert "lab: alice" not in done.stdout, "alice kept her seed: no new enrollment for her"
    for image in ("carol.png", "carol.svg"):
        assert stat.S_IMODE((state.path / image).stat().st_mode) == 0o600
    assert f"-i {state.key_file('carol')} -p {server.port}" in done.stdout

    # carol gets in with her lab key and a code of her new seed; bob's key is refused before any code is asked.
    carol = server.login("carol", key=key(state, "carol"), code=totp(after, "carol").now())
    assert carol.accepted, f"{carol}\n{server.logs()}"
    bob = server.login("bob", key=key(state, "bob"), code=totp(before, "bob").now())
    assert bob.refused_at == "publickey", bob
    # The pinned known_hosts line holds for OpenSSH too (under the server's name, whatever the port): the host
    # key is accepted, and then the key alone is refused (no code can be typed in batch mode).
    ssh = subprocess.run(["ssh", "-F", "/dev/null", "-i", str(state.key_file("carol")), "-p", str(server.port),
                          "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "HostKeyAlias=web-1",
                          "-o", f"UserKnownHostsFile={state.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                          "carol@127.0.0.1", "true"], capture_output=True, text=True, timeout=60, check=False)
    assert ssh.returncode == 255 and "Permission denied" in ssh.stderr and "Host key verification" not in ssh.stderr, ssh.stderr


def test_a_port_change_needs_previous_ssh_port_and_is_proved_on_the_new_port(running: tuple[Path, LabState, Server]) -> None:
    config, state, server = running
    old, new = server.port, free_port()
    changed = base(new)
    write_config(config, changed)
    logins = server.logs().count("Accepted publickey")
    refused = lab("sync", "--config", str(config), "--state-dir", str(state.path), f"--port={old}={old}", f"--port={new}={new}")
    assert refused.returncode == 2 and refused.stdout == "", refused.stdout + refused.stderr
    assert refused.stderr == (f"lab: error: servers[0].previousSshPort: sshPort changes from {old} to {new}; set "
                              f"previousSshPort: {old} while it changes, so the sync can log in on the old port (docs/lab.md)\n")
    assert server.logs().count("Accepted publickey") == logins, "the refused sync connected anyway"

    changed["servers"][0]["previousSshPort"] = old
    write_config(config, changed)
    missing = lab("sync", "--config", str(config), "--state-dir", str(state.path), f"--port={old}={old}")
    assert missing.returncode == 2 and f"--port: say where the server's port {new} is reached too" in missing.stderr

    done = lab("sync", "--config", str(config), "--state-dir", str(state.path), f"--port={old}={old}", f"--port={new}={new}")
    assert done.returncode == 0 and "web-1: confirmed" in done.stdout, done.stdout + done.stderr + server.logs()
    outputs = json.loads(state.outputs.read_text())
    bob = sshclient.login(new, "bob", key=key(state, "bob"), code=totp(outputs, "bob").now(), pinned=server.host_key)
    assert bob.accepted, f"{bob}\n{server.logs()}"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", old), timeout=5).close()


def test_a_new_forward_reaches_a_running_qemu_through_its_monitor(tmp_path: Path) -> None:
    qemu = require_tool("qemu-system-x86_64")
    monitor = tmp_path / "monitor.sock"
    # A paused machine (-S) with the lab's network device: enough for qemu's user networking to take forwards.
    process = subprocess.Popen([qemu, "-nodefaults", "-display", "none", "-S", "-accel", "tcg",
                                "-netdev", f"user,id={vm.NETDEV},restrict=on", "-monitor", f"unix:{monitor},server=on,wait=off"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not monitor.exists():
            assert process.poll() is None and time.monotonic() < deadline, "qemu did not start"
            time.sleep(0.05)
        port = vm.add_forward(monitor, 2222)
        table = vm.monitor_command(monitor, "info usernet")
        assert any(line.split()[2:4] == ["127.0.0.1", str(port)] and line.split()[-3] == "2222" for line in table.splitlines()
                   if "HOST_FORWARD" in line), table
        socket.create_connection(("127.0.0.1", port), timeout=5).close()  # qemu listens there now
        taken = vm.monitor_command(monitor, f"hostfwd_add {vm.NETDEV} tcp:127.0.0.1:{port}-:22")
        assert "Could not set up host forwarding rule" in taken, taken
    finally:
        process.kill()
        process.wait()
    with pytest.raises(OSError):
        vm.add_forward(monitor, 2222)
