"""TotpServer under the SDK's mock engine: what it registers, what is secret, what stays stable."""

from __future__ import annotations

import hashlib

import pytest
from configs import ed25519_key, secrets_from_state

from cloudinit import render
from cloudinit.model import Admin, ConfigError, Server
from cloudinit.secrets import KeyPair
from components import SharedFirewalls, SharedFirewallsArgs, TotpServer, TotpServerArgs, firewalls, mockengine
from components.totp_server import TYPE

FIREWALL = "hcloud:index/firewall:Firewall"
SERVER = "hcloud:index/server:Server"
RANDOM = "random:index/randomBytes:RandomBytes"
TLS = "tls:index/privateKey:PrivateKey"


def make_server(**overrides: object) -> Server:
    admins = tuple(Admin(name=n, ssh_keys=(ed25519_key(f"{n}@laptop")[1],)) for n in ("alice", "bob", "carol"))
    fields: dict[str, object] = {"name": "web-1", "admins": admins, "allowed_cidrs": ("198.51.100.0/24", "2001:db8::/32")}
    fields.update(overrides)
    return Server(**fields)  # type: ignore[arg-type]


BOOTSTRAP_KEY_ID = "4711"


def deploy(server: Server, **args: object) -> mockengine.ProgramRun:
    """The server with its shared firewall, as the program wires them (the key id is a stand-in)."""

    def program() -> None:
        plan = firewalls.plan([server], mockengine.PROJECT, "offline")
        shared = SharedFirewalls("firewalls", SharedFirewallsArgs(plan=plan, labels={}))
        wiring = {"ssh_key_ids": [BOOTSTRAP_KEY_ID], "firewall_ids": shared.ids_for(server.name)}
        TotpServer(server.name, TotpServerArgs(server=server, **{**wiring, **args}))  # type: ignore[arg-type]

    return mockengine.run({}, program=program)


def secret_strings(run: mockengine.ProgramRun, server: Server) -> list[str]:
    admins, host_key = secrets_from_state(run, server)
    body = "".join(host_key.private_openssh.splitlines()[1:-1])
    return [s.seed for s in admins.values()] + [c for s in admins.values() for c in s.backup_codes] + [body[:40]]


def leaks(run: mockengine.ProgramRun, needles: list[str]) -> list[str]:
    """Every place a secret shows up outside a secret marker: inputs, state, component outputs, exports."""
    found = []
    trees = [(f"{r.name}.inputs", r.inputs) for r in run.registrations]
    trees += [(f"{r.name}.outputs", r.outputs) for r in run.registrations]
    trees.append(("stack", run.stack_outputs))
    for where, tree in trees:
        for path, value in mockengine.plain_leaves(tree):
            text = str(value).replace("\n", "")
            if any(n in text for n in needles):
                found.append(f"{where}.{path}")
    return found


def test_firewall_opens_only_ssh_from_the_allowed_networks_and_icmp() -> None:
    run = deploy(make_server(ssh_port=2222))
    (fw,) = run.of_type(FIREWALL)
    rules = fw.plain_inputs["rules"]
    assert {"direction": "in", "protocol": "tcp", "port": "2222", "sourceIps": ["198.51.100.0/24", "2001:db8::/32"],
            "description": "SSH (key + TOTP)"} in rules
    assert [r["protocol"] for r in rules] == ["tcp", "icmp"]
    assert not [r for r in rules if r["protocol"] == "udp"], "no inbound UDP at all: NTP (123) is outbound"
    assert all(r["direction"] == "in" for r in rules), "no egress rules unless asked: any one would deny the rest"


def test_icmp_can_be_turned_off() -> None:
    (fw,) = deploy(make_server(allow_icmp=False)).of_type(FIREWALL)
    assert [r["protocol"] for r in fw.plain_inputs["rules"]] == ["tcp"]


def test_restricted_egress_keeps_dns_ntp_https_and_icmp() -> None:
    (fw,) = deploy(make_server(restrict_egress=True)).of_type(FIREWALL)
    out = {(r["protocol"], r.get("port")) for r in fw.plain_inputs["rules"] if r["direction"] == "out"}
    assert {("udp", "53"), ("tcp", "53"), ("udp", "123"), ("tcp", "443"), ("tcp", "80"), ("icmp", None)} <= out
    assert all(r["destinationIps"] == ["0.0.0.0/0", "::/0"] for r in fw.plain_inputs["rules"] if r["direction"] == "out")


def test_server_inputs_attach_the_firewall_at_creation() -> None:
    run = deploy(make_server(image="debian-13", server_type="cax11", location="hel1", labels={"role": "web"}))
    (fw,) = run.of_type(FIREWALL)
    (srv,) = run.of_type(SERVER)
    inputs = srv.plain_inputs
    assert inputs["firewallIds"] == [int(mockengine._numeric_id(fw.name))], "the firewall's own id, at creation"
    assert (inputs["image"], inputs["serverType"], inputs["location"], inputs["name"]) == ("debian-13", "cax11", "hel1", "web-1")
    assert inputs["labels"] == {"role": "web"}
    assert inputs["sshKeys"] == [BOOTSTRAP_KEY_ID], "the stack's bootstrap key, never an admin's"
    assert inputs["publicNets"] == [{"ipv4Enabled": True, "ipv6Enabled": True}]
    assert srv.parent == run.one(TYPE, "web-1").urn


def test_user_data_changes_are_ignored_unless_a_rebuild_is_asked_for() -> None:
    (srv,) = deploy(make_server()).of_type(SERVER)
    assert set(srv.options["ignoreChanges"]) == {"userData", "sshKeys"}
    assert srv.options["protect"] is False
    (rebuilt,) = deploy(make_server(rebuild=True)).of_type(SERVER)
    assert rebuilt.options["ignoreChanges"] == []


def test_protection_sets_hetzner_and_pulumi_protection() -> None:
    (srv,) = deploy(make_server(protection=True)).of_type(SERVER)
    assert srv.options["protect"] is True
    assert srv.plain_inputs["deleteProtection"] is True and srv.plain_inputs["rebuildProtection"] is True


def test_user_data_is_exactly_the_renderers_output_and_secret() -> None:
    server = make_server()
    run = deploy(server)
    (srv,) = run.of_type(SERVER)
    assert mockengine.is_secret(srv.inputs["userData"])
    admins, host_key = secrets_from_state(run, server)
    assert mockengine.unwrap(srv.inputs["userData"]) == render.render_user_data(server, admins, host_key)


def test_every_child_is_parented_and_named_after_the_instance() -> None:
    run = deploy(make_server())
    comp = run.one(TYPE, "web-1")
    shared = run.one(firewalls.TYPE, "firewalls")
    children = [r for r in run.registrations if r not in (comp, shared) and r.parent != shared.urn]
    assert len(children) == 3 * 2 + 2  # per admin seed + codes; host key, server (the firewall is shared)
    assert all(r.parent == comp.urn for r in children)
    assert all(r.name.startswith("web-1-") for r in children)


def test_no_seed_code_or_private_key_leaks_outside_a_secret() -> None:
    server = make_server()
    run = deploy(server)
    needles = secret_strings(run, server)
    assert len(needles) == 3 + 3 * 5 + 1
    assert leaks(run, needles) == []
    # The secrets are really there (under markers), so the scan above looked at the right values.
    assert all(n in str(mockengine.unwrap(run.one(SERVER, "web-1-server").inputs["userData"])).replace("\n", "")
               for n in needles)


def test_the_leak_scan_catches_a_secret_exported_in_plain() -> None:
    server = make_server()
    run = deploy(server)
    seed = secrets_from_state(run, server)[0]["alice"].seed
    run.stack_outputs["oops"] = {"debug": f"seed={seed}"}
    assert leaks(run, [seed]) == ["stack.oops.debug"]


def test_random_bytes_results_are_secret_in_state() -> None:
    run = deploy(make_server())
    for r in run.of_type(RANDOM):
        assert mockengine.is_secret(r.outputs["base64"]) and mockengine.is_secret(r.outputs["hex"])
    (key,) = run.of_type(TLS)
    assert mockengine.is_secret(key.outputs["privateKeyOpenssh"])


def test_component_registers_its_outputs_last_with_enrollment_secret() -> None:
    server = make_server(ssh_port=2222)
    run = deploy(server)
    outputs = run.one(TYPE, "web-1").outputs
    assert set(outputs) == {"ipv4", "ipv6", "knownHosts", "hostPublicKey", "sshCommands", "enrollment"}
    assert mockengine.is_secret(outputs["enrollment"])
    assert not any(mockengine.is_secret(outputs[k]) for k in outputs if k != "enrollment")
    enrollment = mockengine.unwrap(outputs["enrollment"])
    admins, host_key = secrets_from_state(run, server)
    alice = enrollment["alice"]
    assert alice["otpauthUri"].startswith("otpauth://totp/totp-vps:alice@web-1?secret=" + admins["alice"].seed)
    assert alice["backupCodes"] == list(admins["alice"].backup_codes)
    assert alice["totpFile"] == render.totp_file(admins["alice"])
    ip = mockengine.unwrap(outputs["ipv4"])
    assert f"[{ip}]:2222 {host_key.public_openssh}" in outputs["knownHosts"].splitlines()
    assert outputs["sshCommands"]["bob"] == f"ssh -p 2222 bob@{ip}"


@pytest.mark.parametrize("component", ["TotpServer", "SharedFirewalls", "BootstrapKey"])
def test_constructor_ends_with_register_outputs(component: str) -> None:
    import ast
    import inspect

    import components

    tree = ast.parse(inspect.getsource(getattr(components, component).__init__).strip().replace("\n    ", "\n"))
    body = tree.body[0].body  # type: ignore[attr-defined]
    last = body[-1]
    assert isinstance(last, ast.Expr) and ast.unparse(last).startswith("self.register_outputs(")


def test_same_state_gives_byte_identical_user_data() -> None:
    server = make_server()
    first = mockengine.unwrap(deploy(server).one(SERVER, "web-1-server").inputs["userData"])
    second = mockengine.unwrap(deploy(server).one(SERVER, "web-1-server").inputs["userData"])
    assert hashlib.sha256(first.encode()).digest() == hashlib.sha256(second.encode()).digest()


def test_program_code_never_generates_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every OS randomness source sabotaged, the run still works: secrets come from resources."""
    import os
    import secrets

    def refuse(*_: object) -> bytes:
        raise AssertionError("program code asked the OS for randomness")

    server = make_server()
    baseline = mockengine.unwrap(deploy(server).one(SERVER, "web-1-server").inputs["userData"])
    monkeypatch.setattr(os, "urandom", refuse)
    monkeypatch.setattr(secrets, "token_bytes", refuse)
    monkeypatch.setattr("cloudinit.secrets._os_random.token_bytes", refuse)
    import cloudinit.render

    cloudinit.render._placeholder_key_pair.cache_clear()  # the size check's stand-in key is not a secret
    monkeypatch.setattr("cloudinit.render.fresh_key_pair", lambda: KeyPair("-----BEGIN x-----\n" + "A" * 300, "ssh-ed25519 A"))
    again = mockengine.unwrap(deploy(server).one(SERVER, "web-1-server").inputs["userData"])
    cloudinit.render._placeholder_key_pair.cache_clear()
    assert again == baseline


def test_rotation_replaces_only_that_admins_secrets() -> None:
    server = make_server()
    rotated = make_server(admins=tuple(Admin(name=a.name, ssh_keys=a.ssh_keys, rotation=1 if a.name == "bob" else 0)
                                       for a in server.admins))
    before, after = deploy(server), deploy(rotated)
    for admin in server.admin_names:
        for kind in ("totp-seed", "backup-codes"):
            name = f"web-1-{admin}-{kind}"
            changed = before.one(RANDOM, name).plain_inputs["keepers"] != after.one(RANDOM, name).plain_inputs["keepers"]
            assert changed == (admin == "bob"), name


def test_seed_override_carries_an_enrollment_over_and_stays_secret() -> None:
    seed = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    server = make_server()
    run = deploy(server, seed_overrides={"alice": seed.lower()})
    seeds = sorted(r.name for r in run.of_type(RANDOM) if r.name.endswith("totp-seed"))
    assert seeds == ["web-1-bob-totp-seed", "web-1-carol-totp-seed"]
    user_data = mockengine.unwrap(run.one(SERVER, "web-1-server").inputs["userData"])
    assert "/home/alice/.google_authenticator" in user_data and f"\n      {seed}\n" in user_data
    assert leaks(run, [seed]) == []


@pytest.mark.parametrize(
    ("args", "key"),
    [
        ({"seed_overrides": {"mallory": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"}}, "seedOverrides.mallory"),
        ({"seed_overrides": {"alice": "tooshort"}}, "seedOverrides.alice"),
        ({"seed_overrides": {"alice": "not base32 at all 0189!"}}, "seedOverrides.alice"),
    ],
)
def test_bad_args_fail_at_construction_naming_the_field(args: dict[str, object], key: str) -> None:
    fields: dict[str, object] = {"server": make_server()}
    fields.update(args)
    with pytest.raises(ConfigError) as err:
        TotpServerArgs(**fields)  # type: ignore[arg-type]
    assert str(err.value).startswith(f"{key}:")
    assert "JBSWY3DP" not in str(err.value) and "tooshort" not in str(err.value), "a seed never appears in an error"


@pytest.mark.parametrize("missing", ["ssh_key_ids", "firewall_ids"])
def test_a_server_without_its_key_or_firewall_registers_nothing(missing: str) -> None:
    server = make_server()
    wiring = {"ssh_key_ids": [BOOTSTRAP_KEY_ID], "firewall_ids": [1]}
    del wiring[missing]
    with pytest.raises(mockengine.ProgramFailed) as err:
        mockengine.run({}, program=lambda: TotpServer(server.name, TotpServerArgs(server=server, **wiring)))  # type: ignore[arg-type]
    assert "ssh_key_ids and firewall_ids are required" in str(err.value)
    assert err.value.registrations == []
