"""The policy pack, through the engine's analyzer code path.

Every case runs the real program under the mock engine (or mutates such a run's recorded registrations
where the renderer would refuse to produce the bad state), builds real AnalyzeRequest /
AnalyzeStackRequest protobufs and calls the SDK's analyzer servicer, the object ``PolicyPack`` serves
to ``pulumi preview --policy-pack``.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import test_gates
import yaml
from pulumi.runtime import rpc

from cloudinit import hardening, stackconfig
from components import firewalls, mockengine, totp_server
from components.mockengine import ProgramRun, Registration
from policy import offline, policies

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "Pulumi.example.yaml"
FIREWALL = policies.FIREWALL
SERVER = policies.SERVER
ALL_IDS = [p.name for p in policies.build_policies() if p.name != policies.WAIVED]
SEED = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # a well-known sample base32 seed, 32 characters


def example_values() -> tuple[dict[str, Any], dict[str, Any]]:
    return stackconfig.from_stack_file(yaml.safe_load(EXAMPLE.read_text()))


@pytest.fixture(scope="module")
def example_run() -> ProgramRun:
    """The example stack with a service account and a `sudo: totp` admin (test_gates.config): every policy
    has something to judge."""
    return mockengine.run(test_gates.config())


def mandatory(findings: list[offline.Finding]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in findings:
        if f.level == "mandatory":
            out.setdefault(f.policy, []).append(f.message)
    return out


# ---------------------------------------------------------------------------------------------------
# Mutations of a recorded run (inputs and the mock state of a custom resource move together).


def mutate(run: ProgramRun, type_: str, name: str, change: Callable[[Registration], None]) -> ProgramRun:
    bad = copy.deepcopy(run)
    change(bad.one(type_, name))
    return bad


def _both(reg: Registration, key: str, value: Any) -> None:
    reg.inputs[key] = value
    if reg.custom:
        reg.outputs[key] = copy.deepcopy(value)


def add_rule(rule: dict[str, Any]) -> Callable[[Registration], None]:
    def change(reg: Registration) -> None:
        _both(reg, "rules", [*reg.inputs["rules"], rule])

    return change


def user_data(edit: Callable[[str], str]) -> Callable[[Registration], None]:
    def change(reg: Registration) -> None:
        text = mockengine.unwrap(reg.inputs["userData"])
        changed = edit(text)
        assert changed != text, "the mutation did not apply"
        _both(reg, "userData", rpc.wrap_rpc_secret(changed))

    return change


def replace(old: str, new: str) -> Callable[[str], str]:
    return lambda text: text.replace(old, new)


def option(key: str, value: Any) -> Callable[[Registration], None]:
    def change(reg: Registration) -> None:
        reg.options[key] = value

    return change


def prop(key: str, value: Any) -> Callable[[Registration], None]:
    return lambda reg: _both(reg, key, value)


def service_as_wide_as_admins(run: ProgramRun) -> None:
    """The desired state's service account from every network the firewall admits (the model refuses to
    render this: the component's output is edited)."""
    reg = run.one("totp-vps:index:TotpServer", "web-1")
    state = mockengine.unwrap(reg.outputs["desiredState"])
    state["serviceAccounts"][0]["fromCidrs"] = ["198.51.100.0/24", "2001:db8:1234::/48"]
    reg.outputs["desiredState"] = rpc.wrap_rpc_secret(state)


def stack_output(key: str, value: Any) -> Callable[[ProgramRun], None]:
    def change(run: ProgramRun) -> None:
        run.stack_outputs[key] = value

    return change


def shared_firewall(server: str) -> tuple[str, str]:
    """(type, name) of the shared firewall the example's ``server`` is attached to."""
    plain, _ = example_values()
    plan = firewalls.plan(stackconfig.parse(plain).servers, mockengine.PROJECT, "offline")
    return FIREWALL, f"firewalls-{plan.by_server[server][0].key}"


WEB_FW = shared_firewall("web-1")
DB_FW = shared_firewall("db-1")
WEB = (SERVER, "web-1-server")
OFFICE = "198.51.100.0/24"
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----"


def inbound(protocol: str, port: str, *sources: str) -> Callable[[Registration], None]:
    return add_rule({"direction": "in", "protocol": protocol, "port": port, "sourceIps": list(sources or [OFFICE])})


def in_state(edit: Callable[[dict[str, Any]], None]) -> Callable[[Registration], None]:
    """Edit the desired state inside the rendered user-data (the renderer itself refuses to produce these)."""
    return user_data(lambda text: test_gates.embed(text, edit))


def drop_port(port: str) -> Callable[[Registration], None]:
    return lambda reg: _both(reg, "rules", [r for r in reg.inputs["rules"] if r.get("port") != port])


def describe(text: str) -> Callable[[Registration], None]:
    return lambda reg: _both(reg, "rules", [{**reg.inputs["rules"][0], "description": text}])


# policy id -> (label, resource, mutation): the deliberately bad variants, each named for the policy
# that must catch it (resource None: the mutation takes the whole run).
BAD: dict[str, list[tuple[str, tuple[str, str] | None, Callable[..., None]]]] = {
    "fw-01": [
        ("world-open SSH (IPv4)", WEB_FW, inbound("tcp", "22", "0.0.0.0/0")),
        ("world-open SSH (IPv6)", WEB_FW, inbound("tcp", "22", "::/0")),
    ],
    "fw-02": [("inbound UDP 123", WEB_FW, inbound("udp", "123"))],
    "fw-03": [
        ("inbound HTTP", WEB_FW, inbound("tcp", "80")),
        ("inbound UDP", WEB_FW, inbound("udp", "51820")),
        ("inbound port range", WEB_FW, inbound("tcp", "22-25")),
    ],
    "fw-04": [
        ("egress without DNS", DB_FW, drop_port("53")),
        ("egress without NTP", DB_FW, drop_port("123")),
        ("egress only HTTPS", WEB_FW, add_rule({"direction": "out", "protocol": "tcp", "port": "443"})),
    ],
    "srv-01": [("missing firewall", WEB, prop("firewallIds", []))],
    "srv-02": [
        ("user-data not secret", WEB, option("additionalSecretOutputs", [])),
        ("user-data missing", WEB, prop("userData", "")),
    ],
    "srv-03": [("user-data changes replace the server", WEB, option("ignoreChanges", ["sshKeys"]))],
    "srv-04": [("unsupported image", WEB, prop("image", "centos-7"))],
    "srv-05": [
        ("an extra runcmd entry", WEB, user_data(lambda t: t.replace("runcmd:\n", "runcmd:\n  - [touch, /tmp/x]\n"))),
        ("another top-level key", WEB, user_data(lambda t: t + "chpasswd: {expire: false}\n")),
    ],
    # The desired state's sshd, PAM and sudo files: one variant per policy here, every class in test_gates.py.
    **{pid: [(v.label, WEB, in_state(v.edit))] for pid, v in {v.policy: v for v in reversed(test_gates.VARIANTS)}.items()
       if pid not in ("svc-02", "svc-03", "pam-04", "sudo-01")},
    "svc-02": [("a service account let in from anywhere", WEB, in_state(next(v.edit for v in test_gates.VARIANTS
                                                                                     if v.policy == "svc-02")))],
    "svc-03": [("a root shell for a service account", WEB, in_state(next(v.edit for v in test_gates.VARIANTS
                                                                                  if v.policy == "svc-03")))],
    "pam-04": [("sudo without the code", WEB, in_state(next(v.edit for v in test_gates.VARIANTS
                                                                    if v.policy == "pam-04")))],
    "sudo-01": [("NOPASSWD for a sudo: totp admin", WEB, in_state(next(v.edit for v in test_gates.VARIANTS
                                                                                if v.policy == "sudo-01")))],
    "sec-01": [
        ("seed leaked to a plain output", None, stack_output("seed", SEED)),
        ("backup codes in a plain output", None, stack_output("codes", ["12345678", "23456789"])),
        ("otpauth URI in a plain output", None, stack_output("uri", f"otpauth://totp/x?secret={SEED}")),
        ("private key in a plain output", None, stack_output("key", PRIVATE_KEY)),
    ],
    "sec-02": [
        ("seed in a label", WEB_FW, prop("labels", {"note": SEED})),
        ("otpauth URI in a rule description", WEB_FW, describe(f"otpauth://totp/x?secret={SEED}")),
        ("user-data not secret", WEB, lambda reg: _both(reg, "userData", mockengine.unwrap(reg.inputs["userData"]))),
    ],
    "srv-06": [("a firewall of another stack", WEB, lambda reg: _both(reg, "firewallIds",
                                                                     [*mockengine.unwrap(reg.inputs["firewallIds"]), 4242]))],
    "svc-04": [("a service account as wide as the admins", None, service_as_wide_as_admins)],
}


def variants() -> list[Any]:
    return [pytest.param(pid, where, change, id=f"{pid}: {label}")
            for pid, cases in BAD.items() for label, where, change in cases]


def test_every_policy_has_a_violating_variant() -> None:
    # svc-01 is advisory by design: test_a_service_account_is_a_visible_exemption
    assert sorted(BAD) == sorted(set(ALL_IDS) - {"svc-01"})
    assert sum(map(len, BAD.values())) >= 10


def test_ids_are_stable_and_titled() -> None:
    for p in policies.build_policies():
        assert p.name == policies.WAIVED or p.name.split("-")[0] in {"fw", "srv", "sshd", "pam", "sec", "svc", "sudo"}
        assert p.description and "\n" not in p.description
        assert p.remediation_steps


@pytest.mark.parametrize("policy_id", [i for i in ALL_IDS if i != "svc-01"])
def test_example_stack_passes(example_run: ProgramRun, policy_id: str) -> None:
    findings = offline.check(example_run)
    assert [f for f in findings if f.policy == policy_id] == []


def test_example_stack_has_zero_findings() -> None:
    plain, secret = example_values()
    assert offline.check(mockengine.run(plain, secret)) == []


def test_a_service_account_is_a_visible_exemption(example_run: ProgramRun) -> None:
    findings = offline.check(example_run)
    assert {f.policy for f in findings} == {"svc-01"} and {f.level for f in findings} == {"advisory"}
    assert all("service account deploy logs in with its key alone (no TOTP) from 198.51.100.7/32" in f.message
               for f in findings)


def test_digits_inside_a_digest_are_no_backup_codes() -> None:
    """A desired serial is a hex digest, and some hold two runs of eight digits between letters; codes written
    out stand alone, and the stack's own codes are found glued to anything."""
    digest = "a12345678b" + "c" * 20 + "e87654321f"
    assert "a list of 8-digit backup codes" not in policies.secret_kinds(digest)
    for listed in ("12345678 87654321", "12345678,87654321", '["12345678", "87654321"]', "12345678\n87654321"):
        assert "a list of 8-digit backup codes" in policies.secret_kinds(listed), listed
    known = policies.Known({}, {"12345678"})
    assert known.kinds("code12345678x") == {"a backup code of this stack"}


@pytest.mark.parametrize("image", sorted(hardening.IMAGES))
@pytest.mark.parametrize("server_type", ["cx23", "cax11"])
def test_every_image_on_x86_and_arm_is_policy_clean(image: str, server_type: str) -> None:
    plain, secret = example_values()
    plain["defaults"] = {**plain["defaults"], "image": image, "serverType": server_type}
    plain["servers"] = [{k: v for k, v in s.items() if k != "image"} for s in plain["servers"]]
    assert offline.check(mockengine.run(plain, secret)) == []


@pytest.mark.parametrize(("policy_id", "where", "change"), variants())
def test_bad_variant_is_caught_by_its_policy(example_run: ProgramRun, policy_id: str, where: Any, change: Any) -> None:
    if where is None:
        bad = copy.deepcopy(example_run)
        change(bad)
    else:
        bad = mutate(example_run, *where, change)
    findings = offline.check(bad)
    caught = mandatory(findings)
    assert policy_id in caught, findings
    for message in caught[policy_id]:
        assert "Remedy: " in message
        assert SEED not in message and "12345678" not in message and "BEGIN" not in message  # names paths, not values


# ---------------------------------------------------------------------------------------------------
# Preview: unknown values give an advisory "cannot check at preview", never a pass, never a crash.

UNKNOWN_CASES = {
    "fw-01": (WEB_FW, "rules"),
    "fw-02": (WEB_FW, "rules"),
    "fw-03": (WEB_FW, "rules"),
    "fw-04": (DB_FW, "rules"),
    "srv-01": (WEB, "firewallIds"),
    "srv-02": (WEB, "userData"),
    "srv-04": (WEB, "image"),
    "srv-05": (WEB, "userData"),
    **{pid: (WEB, "userData") for pid in ALL_IDS if pid.startswith(("sshd-", "pam-", "sudo-")) or pid in ("svc-02", "svc-03")},
    "sec-02": (WEB, "ipv4Address"),
}


@pytest.mark.parametrize("policy_id", sorted(UNKNOWN_CASES))
def test_unknown_at_preview_is_advisory_not_pass(example_run: ProgramRun, policy_id: str) -> None:
    where, key = UNKNOWN_CASES[policy_id]
    bad = mutate(example_run, *where, prop(key, rpc.UNKNOWN))
    findings = [f for f in offline.check(bad) if f.policy == policy_id]
    assert findings, f"{policy_id} reported nothing for an unknown {key}"
    assert all(f.level == "advisory" and "during preview" in f.message for f in findings), findings


def test_unknown_stack_output_is_advisory_for_sec_01(example_run: ProgramRun) -> None:
    bad = copy.deepcopy(example_run)
    bad.stack_outputs["servers"]["web-1"]["ipv4"] = rpc.UNKNOWN
    findings = [f for f in offline.check(bad) if f.policy == "sec-01"]
    assert [f.level for f in findings] == ["advisory"] and "during preview" in findings[0].message


def test_srv_03_reads_options_which_are_known_at_preview(example_run: ProgramRun) -> None:
    bad = mutate(example_run, *WEB, prop("userData", rpc.UNKNOWN))
    assert "srv-03" not in {f.policy for f in offline.check(bad)}
    bad = mutate(bad, *WEB, option("ignoreChanges", []))
    assert "srv-03" in mandatory(offline.check(bad))


def test_unknown_does_not_hide_a_violation_found_before_it(example_run: ProgramRun) -> None:
    bad = mutate(example_run, *WEB, option("additionalSecretOutputs", []))
    bad = mutate(bad, *WEB, prop("userData", rpc.UNKNOWN))
    srv02 = [f for f in offline.check(bad) if f.policy == "srv-02"]
    assert {f.level for f in srv02} == {"mandatory", "advisory"}


# ---------------------------------------------------------------------------------------------------
# Waivers and pack config


def test_waiver_label_turns_violation_into_advisory_note(example_run: ProgramRun) -> None:
    bad = mutate(example_run, *WEB_FW, inbound("tcp", "443"))
    bad = mutate(bad, *WEB_FW, prop("labels", {"role": "web", "totp-vps.waive/fw-03": "acme-http-01"}))
    findings = offline.check(bad)
    assert "fw-03" not in mandatory(findings)
    notes = [f for f in findings if f.policy == policies.WAIVED]
    assert len(notes) == 1 and notes[0].level == "advisory"
    assert "fw-03 waived by label totp-vps.waive/fw-03=acme-http-01" in notes[0].message


def test_waiver_naming_no_policy_is_reported(example_run: ProgramRun) -> None:
    bad = mutate(example_run, *WEB_FW, prop("labels", {"totp-vps.waive/fw-99": "typo"}))
    notes = [f for f in offline.check(bad) if f.policy == policies.WAIVED]
    assert len(notes) == 1 and "names no policy" in notes[0].message


def test_allow_ssh_from_anywhere_is_a_visible_waiver() -> None:
    plain, secret = example_values()
    plain = {**plain, "defaults": {**plain["defaults"], "allowedCidrs": ["0.0.0.0/0", "::/0"], "allowSshFromAnywhere": True}}
    findings = offline.check(mockengine.run(plain, secret))
    assert mandatory(findings) == {}
    notes = [f.message for f in findings if f.policy == policies.WAIVED]
    assert len(notes) == 4  # per server's firewall, one per IP version
    assert all("fw-01 waived by label totp-vps.waive/fw-01=allowSshFromAnywhere" in n for n in notes)


def test_rebuild_is_a_visible_srv_03_waiver() -> None:
    plain, secret = example_values()
    plain = {**plain, "servers": [{**plain["servers"][0], "rebuild": True}]}
    findings = offline.check(mockengine.run(plain, secret))
    assert mandatory(findings) == {}
    notes = [f.message for f in findings if f.policy == policies.WAIVED]
    assert notes and all("srv-03 waived by label totp-vps.waive/srv-03=rebuild" in n for n in notes)


def test_component_and_pack_agree_on_the_waiver_prefix() -> None:
    assert totp_server.WAIVER_PREFIX == policies.WAIVER_PREFIX


def test_stack_policies_cannot_be_waived_by_label(example_run: ProgramRun) -> None:
    bad = mutate(example_run, *WEB_FW, prop("labels", {"note": SEED, "totp-vps.waive/sec-02": "no"}))
    assert "sec-02" in mandatory(offline.check(bad))


@pytest.mark.parametrize("config", [{"fw-03": "advisory"}, {"fw-03": {"enforcementLevel": "advisory"}}])
def test_pack_config_sets_the_enforcement_level(example_run: ProgramRun, config: dict[str, Any]) -> None:
    bad = mutate(example_run, *WEB_FW, inbound("tcp", "80"))
    findings = [f for f in offline.check(bad, config) if f.policy == "fw-03"]
    assert findings and {f.level for f in findings} == {"advisory"}


def test_pack_config_disabled(example_run: ProgramRun) -> None:
    bad = mutate(example_run, *WEB_FW, inbound("tcp", "80"))
    assert [f for f in offline.check(bad, {"fw-03": "disabled"}) if f.policy == "fw-03"] == []


def test_pack_config_other_settings_keep_the_default_level(example_run: ProgramRun) -> None:
    bad = mutate(example_run, *WEB_FW, inbound("tcp", "80"))
    assert "fw-03" in mandatory(offline.check(bad, {"fw-03": {"note": "kept mandatory"}}))


def test_pack_main_is_never_imported() -> None:
    assert "policy.__main__" not in sys.modules


# ---------------------------------------------------------------------------------------------------
# vpsctl check, as a user runs it


def vpsctl(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "vpsctl", "check", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def write_config(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    document = yaml.safe_load(EXAMPLE.read_text())
    change(document["config"])
    path = tmp_path / "Pulumi.test.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_vpsctl_check_example_passes_fast() -> None:
    start = time.monotonic()
    result = vpsctl("--config", str(EXAMPLE))
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("no violations:")
    assert elapsed <= 3.0, f"vpsctl check took {elapsed:.2f} s"


def test_vpsctl_check_mandatory_violation_exits_1(tmp_path: Path) -> None:
    # A seed pasted into a label passes config validation (it is a valid label value) but leaks.
    path = write_config(tmp_path, lambda c: c["totp-vps:servers"][0]["labels"].update(note=SEED))
    result = vpsctl("--config", str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "web-1-server  hcloud:index/server:Server" in result.stdout
    assert "sec-02  mandatory" in result.stdout and "labels.note carries a base32 TOTP seed" in result.stdout
    assert SEED not in result.stdout + result.stderr


def test_vpsctl_check_advisory_only_exits_0(tmp_path: Path) -> None:
    def world(c: dict[str, Any]) -> None:
        c["totp-vps:defaults"].update(allowedCidrs=["0.0.0.0/0"], allowSshFromAnywhere=True)

    result = vpsctl("--config", str(write_config(tmp_path, world)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "waived  advisory   fw-01 waived by label totp-vps.waive/fw-01=allowSshFromAnywhere" in result.stdout
    assert "0 mandatory, 2 advisory" in result.stdout


def test_vpsctl_check_policy_config_lowers_a_level(tmp_path: Path) -> None:
    path = write_config(tmp_path, lambda c: c["totp-vps:servers"][0]["labels"].update(note=SEED))
    pack_config = tmp_path / "policy-config.json"
    pack_config.write_text(json.dumps({"sec-02": {"enforcementLevel": "advisory"}}))
    result = vpsctl("--config", str(path), "--policy-config", str(pack_config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sec-02  advisory" in result.stdout


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        ("config:\n  totp-vps:admins: 3\n", "admins: needs a list"),
        ("config:\n  totp-vps:colour: blue\n", "unknown setting"),
        ("[not, a, mapping]\n", "is not a stack config"),
        ("config: {\n", "is not valid YAML"),
    ],
)
def test_vpsctl_check_bad_config_exits_2_with_one_line(tmp_path: Path, content: str, expect: str) -> None:
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text(content)
    result = vpsctl("--config", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and expect in result.stderr
    assert "Traceback" not in result.stderr


def test_vpsctl_check_missing_file_exits_2(tmp_path: Path) -> None:
    result = vpsctl("--config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2 and "cannot read" in result.stderr and "Traceback" not in result.stderr


def test_vpsctl_check_bad_policy_config_exits_2(tmp_path: Path) -> None:
    pack_config = tmp_path / "policy-config.json"
    pack_config.write_text(json.dumps({"fw-99": "advisory"}))
    result = vpsctl("--config", str(EXAMPLE), "--policy-config", str(pack_config))
    assert result.returncode == 2 and "fw-99" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------------
# The pack as the CLI starts it: policy/__main__.py serves the analyzer over gRPC.


def test_pack_serves_the_same_policies_over_grpc(example_run: ProgramRun) -> None:
    import grpc
    from google.protobuf import empty_pb2
    from pulumi.runtime.proto import analyzer_pb2_grpc

    env = {**os.environ, "PYTHONPATH": ""}
    server = subprocess.Popen([sys.executable, "-u", "__main__.py"], cwd=ROOT / "policy", env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = analyzer_pb2_grpc.AnalyzerStub(channel)
            info = stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=10)
            assert info.name == policies.PACK_NAME
            assert [p.name for p in info.policies] == [p.name for p in policies.build_policies()]
            bad = mutate(example_run, *WEB_FW, inbound("tcp", "22", "0.0.0.0/0"))
            response = stub.Analyze(offline.analyze_request(bad.one(*WEB_FW)), timeout=10)
            assert [d.policyName for d in response.diagnostics] == ["fw-01"]
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_docs_list_every_policy() -> None:
    text = (ROOT / "docs" / "policy.md").read_text()
    for p in policies.build_policies():
        level = p.enforcement_level.value if p.enforcement_level else "mandatory"
        assert f"| `{p.name}` | {p.description.replace('<', '&lt;').replace('>', '&gt;')} | {level} |" in text
