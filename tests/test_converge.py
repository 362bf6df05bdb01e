"""pulumi up converges (components/converge.py): the sync Command per server under the mock engine (what it
registers, what is secret, when it runs again), and the command line it registers run as the provider runs it,
against a real server (tests/sshd_harness.py) that is still booting, then after a rotation."""

from __future__ import annotations

import copy
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from configs import ed25519_key, example
from conftest import require_root, require_tool
from cryptography.hazmat.primitives import serialization
from sshd_harness import free_port, running_server

from agent import state as st
from cloudinit import stackconfig
from cloudinit.model import ConfigError
from components import mockengine
from components.converge import FIRST_BOOT_WAIT, ConvergeArgs, interpreter, last_line, sync_command
from components.mockengine import DeterministicMocks
from policy import offline
from policy.policies import secret_kinds
from vpsctl import stackoutputs
from vpsctl import sync as vpsctl_sync

ROOT = Path(__file__).resolve().parent.parent
SCHEMA: dict[str, Any] = json.loads((Path(__file__).resolve().parent / "data" / "provider-schemas.json").read_text())
COMMAND = "command:local:Command"
CONVERGE = "totp-vps:index:Converge"
SERVER = "hcloud:index/server:Server"
FIREWALL = "hcloud:index/firewall:Firewall"
OPERATOR = {"admin": "alice", "identityFile": "~/.ssh/id_ed25519"}


def with_operator(config: dict[str, Any], operator: dict[str, str] = OPERATOR) -> dict[str, Any]:
    return {**copy.deepcopy(config), "operator": dict(operator)}


def syncs(run: mockengine.ProgramRun) -> dict[str, mockengine.Registration]:
    """Server name -> its sync Command."""
    return {r.name.removesuffix("-sync"): r for r in run.of_type(COMMAND)}


def triggers(config: dict[str, Any]) -> dict[str, Any]:
    return {name: reg.plain_inputs["triggers"] for name, reg in syncs(mockengine.run(config)).items()}


def rotate(admin: int) -> Any:
    def edit(config: dict[str, Any]) -> None:
        config["admins"][admin]["rotation"] = config["admins"][admin].get("rotation", 0) + 1
    return edit


def on_server(index: int, **settings: Any) -> Any:
    def edit(config: dict[str, Any]) -> None:
        config["servers"][index].update(settings)
    return edit


# ---------------------------------------------------------------------------------------------------
# What the program registers, with and without an operator


def test_without_an_operator_nothing_logs_in_and_the_outputs_say_what_to_run() -> None:
    run = mockengine.run(example())
    assert run.of_type(COMMAND) == [] and run.of_type(CONVERGE) == []
    outputs = mockengine.redact(run.stack_outputs)
    assert outputs["syncNeeded"] == ["db-1", "web-1"]
    for name, server in outputs["servers"].items():
        assert server["converge"] == f".venv/bin/python -m vpsctl sync --stack offline --server {name}"
        assert "converged" not in server and "convergedSerial" not in server
    assert "operator" not in outputs, "None is not exported"


def test_with_an_operator_each_server_gets_one_sync_after_its_server_and_firewall() -> None:
    run = mockengine.run(with_operator(example()))
    commands = syncs(run)
    assert sorted(commands) == ["db-1", "web-1"]
    components = {r.urn: r for r in run.of_type(CONVERGE)}
    for name, reg in commands.items():
        inputs = reg.plain_inputs
        assert components[reg.parent].name == name
        server = run.one(SERVER, f"{name}-server")
        attached = [fw.urn for fw in run.of_type(FIREWALL)
                    if int(mockengine._numeric_id(fw.name)) in server.plain_inputs["firewallIds"]]
        assert attached and {*attached, server.urn} <= set(reg.options["dependencies"])
        argv = shlex.split(inputs["create"])
        assert argv[1:] == ["-m", "vpsctl", "sync", "--from", "-", "--server", name, "--wait", str(FIRST_BOOT_WAIT)]
        # The interpreter is this program's (the venv's), relative to the project root the provider runs in.
        assert not os.path.isabs(argv[0]) and os.path.samefile(ROOT / argv[0], sys.executable)
        assert inputs["logging"] == "stdout" and inputs["addPreviousOutputInEnv"] is False
        assert {"update", "delete", "environment", "interpreter", "dir"}.isdisjoint(inputs)
        assert inputs["triggers"] == [mockengine.unwrap(run.stack_outputs)["servers"][name]["desiredSerial"]]
    outputs = mockengine.redact(run.stack_outputs)
    assert outputs["syncNeeded"] == []
    assert {s["converge"] for s in outputs["servers"].values()} == {"pulumi up"}


def test_the_examples_operator_block_uncommented_makes_pulumi_up_converge() -> None:
    lines = (ROOT / "Pulumi.example.yaml").read_text().splitlines()
    at = lines.index("  # totp-vps:operator:")
    lines[at:at + 3] = [line.replace("# ", "", 1) for line in lines[at:at + 3]]
    plain, _ = stackconfig.from_stack_file(yaml.safe_load("\n".join(lines)))
    run = mockengine.run(plain)
    assert sorted(syncs(run)) == ["db-1", "web-1"]
    assert mockengine.unwrap(run.stack_outputs)["operator"] == OPERATOR


def test_a_new_desired_state_replaces_the_command_so_create_runs() -> None:
    """The SDK registers triggers as replace-on-change (the schema's replaceOnChanges): a replacement is a create."""
    (reg, *_) = mockengine.run(with_operator(example())).of_type(COMMAND)
    assert reg.options["replaceOnChanges"] == ["triggers[*]"]
    assert SCHEMA["resources"][COMMAND]["inputProperties"]["triggers"]["replaceOnChanges"] is True


def test_the_sync_input_is_secret_and_no_other_input_or_output_carries_secret_material() -> None:
    config = with_operator(example())
    rotate(0)(config)  # so that previousSeeds holds seeds too
    run = mockengine.run(config)
    plain = mockengine.unwrap(run.stack_outputs)
    seeds = [st.totp_parts(a["totp"])[0] for s in plain["desiredState"].values() for a in s["admins"]]
    seeds += [seed for by_admin in plain["sync"]["previousSeeds"].values() for seed in by_admin.values()]
    codes = [c for s in plain["enrollment"].values() for a in s.values() for c in a["backupCodes"]]
    signing_key = "".join(plain["sync"]["signingKey"].splitlines()[1:-1])[:40]
    needles = seeds + codes + [signing_key]
    assert len(seeds) == 3 + 2, "alice's and bob's seeds, and alice's previous seed on both servers"
    for reg in syncs(run).values():
        assert mockengine.is_secret(reg.inputs["stdin"])
        stdin = mockengine.unwrap(reg.inputs["stdin"])
        assert signing_key in stdin.replace("\\n", "") and any(seed in stdin for seed in seeds), "the needles are real"
        exposed = [(path, value) for path, value in mockengine.plain_leaves(reg.inputs)]
        assert sorted(path.partition("[")[0] for path, _ in exposed) == ["addPreviousOutputInEnv", "create", "logging",
                                                                          "triggers"]
        for path, value in exposed:
            assert not secret_kinds(str(value)), path
            assert not [n for n in needles if n in str(value)], path
    for path, value in mockengine.plain_leaves(run.stack_outputs["servers"]):
        assert not secret_kinds(str(value)) and not [n for n in needles if n in str(value)], path


def test_the_policy_pack_sees_the_sync_input_secret() -> None:
    """The pack judges by the engine's secret marks (policy/secrecy.py): stdin without Output.secret is sec-02."""
    run = mockengine.run(with_operator(example()))
    ours = {r.urn for r in run.registrations if r.type in (COMMAND, CONVERGE)}
    assert [f for f in offline.check(run) if f.urn in ours] == []
    for reg in run.of_type(COMMAND):
        assert reg.options["additionalSecretOutputs"] == ["stdin"]
        reg.inputs["stdin"] = reg.outputs["stdin"] = mockengine.unwrap(reg.inputs["stdin"])
        reg.options["additionalSecretOutputs"] = []
    assert {f.policy for f in offline.check(run) if f.urn in ours} == {"sec-02"}


def test_the_sync_input_is_what_vpsctl_sync_reads_for_that_one_server() -> None:
    run = mockengine.run(with_operator(example()))
    outputs = mockengine.unwrap(run.stack_outputs)
    for name, reg in syncs(run).items():
        given = stackoutputs.check_shape(json.loads(mockengine.unwrap(reg.inputs["stdin"])), "--from -")
        (target,) = vpsctl_sync.targets(given, None, None, None)  # every server the input names: this one only
        assert target.server == name and target.state == outputs["desiredState"][name]
        assert target.host == outputs["servers"][name]["ipv4"]
        assert " ".join(target.pinned) == outputs["servers"][name]["hostPublicKey"]
        assert given["sync"] == {"signingKey": outputs["sync"]["signingKey"],
                                 "previousSeeds": {name: outputs["sync"]["previousSeeds"][name]}}
        assert given["operator"] == outputs["operator"] == OPERATOR
        assert given["enrollment"] == {}, "sync reads no enrollment, so none travels"


# ---------------------------------------------------------------------------------------------------
# When a sync runs again: its trigger changes exactly when that server's desired state does


TRIGGER_EDITS = {
    # (edit of example() + operator alice, servers whose trigger changes)
    "rotate alice": (rotate(0), {"web-1", "db-1"}),
    "rotate bob": (rotate(1), {"web-1"}),  # bob is not on db-1
    "forwarding on db-1": (on_server(1, allowForwarding=True), {"db-1"}),
    "port of web-1": (on_server(0, sshPort=2200), {"web-1"}),
    "Hetzner labels only": (on_server(0, labels={"role": "api"}), set()),
    "firewall networks only": (lambda c: c["defaults"].update(allowedCidrs=["192.0.2.0/24"]), set()),
}


@pytest.mark.parametrize(("edit", "changed"), list(TRIGGER_EDITS.values()), ids=list(TRIGGER_EDITS))
def test_a_trigger_changes_exactly_when_that_servers_desired_state_changes(edit: Any, changed: set[str]) -> None:
    config = with_operator(example())
    before = triggers(config)
    edit(config)
    run = mockengine.run(config)
    after = {name: reg.plain_inputs["triggers"] for name, reg in syncs(run).items()}
    assert {name for name in before if before[name] != after[name]} == changed
    serials = mockengine.unwrap(run.stack_outputs)["servers"]
    assert all(after[name] == [serials[name]["desiredSerial"]] for name in after)


def test_a_second_identical_run_registers_identical_sync_inputs() -> None:
    """Same config, same state: no input differs, so the engine runs no sync (and the stdin is not re-ordered)."""
    config = with_operator(example())
    first, second = (mockengine.run(config) for _ in range(2))
    assert {n: r.plain_inputs for n, r in syncs(first).items()} == {n: r.plain_inputs for n, r in syncs(second).items()}


class _StdoutMocks(DeterministicMocks):
    """The provider's answer after a sync succeeded: its stdout, trailing newline trimmed."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        rid, state = super().new_resource(args)
        if args.typ == COMMAND:
            server = args.name.removesuffix("-sync")
            state.update(stdout=f"{server}: ~alice(rotated)\n{server}: confirmed (state 0d3eab1383df, proved by a new "
                         "login); checks: 14 passed", stderr="")
        return rid, state


def test_the_outputs_show_what_the_last_sync_proved() -> None:
    run = mockengine.run(with_operator(example()), mocks=_StdoutMocks())
    servers = run.stack_outputs["servers"]
    for name, server in servers.items():
        assert not mockengine.is_secret(server["converged"]) and not mockengine.is_secret(server["convergedSerial"])
        assert server["converged"] == f"{name}: confirmed (state 0d3eab1383df, proved by a new login); checks: 14 passed"
        assert server["convergedSerial"] == server["desiredSerial"]


def test_the_result_is_the_last_line_of_the_sync() -> None:
    assert last_line("web-1: -bob\n\nweb-1: confirmed (state 0d3e)\n") == "web-1: confirmed (state 0d3e)"
    assert last_line("") == last_line(None) == ""


def test_the_interpreter_is_relative_inside_the_project_and_absolute_outside() -> None:
    assert interpreter("/srv/totp-vps/.venv/bin/python", "/srv/totp-vps") == ".venv/bin/python"
    assert interpreter("/opt/py/bin/python3", "/srv/totp-vps") == "/opt/py/bin/python3"
    assert interpreter("/srv/totp-vps-old/.venv/bin/python", "/srv/totp-vps") == "/srv/totp-vps-old/.venv/bin/python"
    assert shlex.split(sync_command("/my dir/python", "web-1", 5))[0] == "/my dir/python"


@pytest.mark.parametrize(("change", "field"), [({"wait": 0}, "wait"), ({"python": ""}, "python"),
                                               ({"operator": stackconfig.Operator("mallory", "k")}, "operator.admin")])
def test_bad_converge_args_fail_at_construction_naming_the_field(change: dict[str, Any], field: str) -> None:
    server = stackconfig.parse(example()).servers[0]
    args: dict[str, Any] = {"server": server, "target": None, "firewalls": [], "signing_key": "",
                            "operator": stackconfig.Operator("alice", "k"), **change}
    with pytest.raises(ConfigError) as err:
        ConvergeArgs(**args)
    assert str(err.value).startswith(f"{field}:")


# ---------------------------------------------------------------------------------------------------
# vpsctl sync --wait


def _stdin(config: dict[str, Any], server: str = "web-1", mocks: pulumi.runtime.Mocks | None = None) -> tuple[str, dict]:
    run = mockengine.run(config, mocks=mocks)
    return mockengine.unwrap(syncs(run)[server].inputs["stdin"]), run.one(SERVER, f"{server}-server").plain_inputs


@pytest.mark.parametrize(("flags", "message"), [
    (["--wait", "-1"], "--wait: -1 is not 0-3600 seconds"),
    (["--wait", "3601"], "--wait: 3601 is not 0-3600 seconds"),
    (["--wait", "60", "--prompt-code"], "--wait and --prompt-code: "),
])
def test_bad_wait_is_one_line_and_exit_2(flags: list[str], message: str) -> None:
    stdin, _ = _stdin(with_operator(example()))
    done = subprocess.run([sys.executable, "-m", "vpsctl", "sync", "--from", "-", "--server", "web-1", *flags],
                          input=stdin, capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"vpsctl sync: error: {message}") and done.stderr.count("\n") == 1


# ---------------------------------------------------------------------------------------------------
# The real command line, run as pulumi-command runs it, against a real server


class _LoopbackMocks(DeterministicMocks):
    """Hetzner's answer, but the server's address is this machine's loopback (where the harness listens)."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        rid, state = super().new_resource(args)
        if args.typ == SERVER:
            state["ipv4Address"] = "127.0.0.1"
        return rid, state


def run_as_the_provider(inputs: dict[str, Any], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """What pulumi-command's local provider does with a Command's inputs (provider/pkg/provider/local/
    commandOutputs.go, ``run``): ``/bin/sh -c CREATE`` (or the interpreter), in its own working directory (the
    project root: the Pulumi CLI starts plugins there) unless ``dir``, with its environment (the CLI's: the venv
    is activated for the program only, so not on PATH here) plus ``environment``, ``stdin`` on standard input;
    stdout without its last newline."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    env.update(inputs.get("environment") or {})
    done = subprocess.run([*(inputs.get("interpreter") or ["/bin/sh", "-c"]), inputs["create"]], input=inputs.get("stdin"),
                          capture_output=True, text=True, cwd=inputs.get("dir") or ROOT, env=env, timeout=timeout, check=False)
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.removesuffix("\n"), done.stderr)


def _operator_stack(tmp_path: Path, port: int, *, identity_of: str = "alice@laptop") -> dict[str, Any]:
    """One server on ``port``, alice and bob, alice the operator with her key in a file (as on her laptop)."""
    key, _ = ed25519_key(identity_of)
    identity = tmp_path / "id_ed25519"
    identity.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                           serialization.NoEncryption()))
    identity.chmod(0o600)
    return {
        "admins": [{"name": n, "sshKeys": [ed25519_key(f"{n}@laptop")[1]]} for n in ("alice", "bob")],
        "defaults": {"allowedCidrs": ["198.51.100.0/24"], "ipv6": False},
        "servers": [{"name": "web-1", "sshPort": port}],
        "operator": {"admin": "alice", "identityFile": str(identity)},
    }


def _sync_inputs(config: dict[str, Any]) -> tuple[dict[str, Any], str]:
    run = mockengine.run(config, mocks=_LoopbackMocks())
    (reg,) = run.of_type(COMMAND)
    return reg.plain_inputs, mockengine.unwrap(run.one(SERVER, "web-1-server").inputs["userData"])


def _next_totp_step() -> None:
    """pam_google_authenticator refuses a code used before (DISALLOW_REUSE), and each sync starts from the
    current step's code: a second sync in the same 30-s step as the last login would be refused."""
    time.sleep(30 - time.time() % 30 + 0.5)


def test_the_command_converges_a_booting_server_then_applies_a_rotation(tmp_path: Path) -> None:
    require_root()
    require_tool("sshd")
    port = free_port()
    config = _operator_stack(tmp_path, port)
    first, user_data = _sync_inputs(config)
    result: dict[str, subprocess.CompletedProcess[str]] = {}
    # At creation the provider runs the sync as soon as Hetzner reports the server running: nothing answers yet.
    started = threading.Thread(target=lambda: result.update(first=run_as_the_provider(first)))
    started.start()
    time.sleep(2)
    with running_server(user_data, boot=False) as server:  # sshd up on the first-boot lockdown, as before runcmd
        deadline = time.monotonic() + 3 * vpsctl_sync.RETRY_EVERY
        while "alice" not in server.logs() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "alice" in server.logs(), f"the sync tried the locked server: {server.logs()}"
        activation = server.agent("boot")  # cloud-init's runcmd, later
        assert activation.returncode == 0, activation.stderr
        started.join(timeout=4 * vpsctl_sync.RETRY_EVERY)
        done = result["first"]
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{server.logs()}"
        lines = done.stdout.splitlines()
        assert lines[0].startswith("web-1: not ready yet, trying every 10 s for up to 600 s: port ")
        assert last_line(done.stdout) == "web-1: in sync", "the first boot applied this very state; a login proved it"

        # Day two: a rotation changes the trigger, so pulumi up runs the sync again (a replacement's create).
        config["admins"][0]["rotation"] = 1
        second, _ = _sync_inputs(config)
        assert second["triggers"] != first["triggers"] and second["create"] == first["create"]
        _next_totp_step()
        done = run_as_the_provider(second)
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{server.logs()}"
        assert "web-1: ~alice(rotated)" in done.stdout.splitlines()
        serial = second["triggers"][0]
        assert last_line(done.stdout).startswith(f"web-1: confirmed (state {st.short(serial)}, proved by a new login)")
        status = json.loads(server.agent("status").stdout)
        assert status["applied"]["serial"] == serial and status["pending"] is None


def test_wait_gives_up_on_a_server_that_stays_locked_down(tmp_path: Path) -> None:
    require_root()
    require_tool("sshd")
    config = _operator_stack(tmp_path, free_port())
    inputs, user_data = _sync_inputs(config)
    with running_server(user_data, boot=False) as server:  # a failed activation leaves the same lockdown
        command = inputs["create"].replace(f"--wait {FIRST_BOOT_WAIT}", "--wait 15")
        started = time.monotonic()
        done = run_as_the_provider({**inputs, "create": command})
        took = time.monotonic() - started
        assert done.returncode == 1, f"{done.stdout}\n{done.stderr}\n{server.logs()}"
        assert vpsctl_sync.RETRY_EVERY <= took < 15 + 10
        assert last_line(done.stdout) == (f"web-1: unreachable (port {server.port}: sshd lets nobody in yet (the first-boot "
                                          "lockdown: the server is still booting, or its first-boot activation failed and "
                                          "its console log says why) (waited 15 s))")


def test_wait_never_retries_a_refused_key(tmp_path: Path) -> None:
    require_root()
    require_tool("sshd")
    config = _operator_stack(tmp_path, free_port(), identity_of="mallory@elsewhere")
    inputs, user_data = _sync_inputs(config)
    with running_server(user_data) as server:
        started = time.monotonic()
        done = run_as_the_provider(inputs)
        assert done.returncode == 1 and time.monotonic() - started < vpsctl_sync.RETRY_EVERY, done.stdout
        assert "not ready yet" not in done.stdout
        assert last_line(done.stdout).startswith(f"web-1: unreachable (login as alice on port {server.port}: login not "
                                                 "accepted (publickey: refused")

