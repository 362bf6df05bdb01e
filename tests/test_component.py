"""TotpServer under the SDK's mock engine: what it registers, what is secret, what stays stable."""

from __future__ import annotations

import base64
import hashlib

import pyotp
import pytest
from configs import ed25519_key, secrets_from_state

from agent import state as agent_state
from cloudinit import cloudconfig, desired, render
from cloudinit.model import Admin, ConfigError, Server
from cloudinit.secrets import KeyPair, seed_from_bytes
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
SIGNER = ed25519_key("state-signing-key")[1]  # the public half the program passes from its tls.PrivateKey


def sudo_and_rotated() -> Server:
    """alice with sudo: totp (a second seed), bob rotated once (two seed slots, the older one kept)."""
    base = make_server()
    options = {"alice": {"sudo": "totp"}, "bob": {"rotation": 1}}
    return make_server(admins=tuple(Admin(name=a.name, ssh_keys=a.ssh_keys, **options.get(a.name, {})) for a in base.admins))


def seed_of(run: mockengine.ProgramRun, name: str) -> str:
    return seed_from_bytes(base64.b64decode(mockengine.unwrap(run.one(RANDOM, name).outputs["base64"])))


def deploy(server: Server, **args: object) -> mockengine.ProgramRun:
    """The server with its shared firewall, as the program wires them (the key id is a stand-in)."""

    def program() -> None:
        plan = firewalls.plan([server], mockengine.PROJECT, "offline")
        shared = SharedFirewalls("firewalls", SharedFirewallsArgs(plan=plan, labels={}))
        wiring = {"ssh_key_ids": [BOOTSTRAP_KEY_ID], "firewall_ids": shared.ids_for(server.name), "signer": SIGNER}
        TotpServer(server.name, TotpServerArgs(server=server, **{**wiring, **args}))  # type: ignore[arg-type]

    return mockengine.run({}, program=program)


def secret_strings(run: mockengine.ProgramRun, server: Server) -> list[str]:
    """Every seed (current, the one before a rotation, sudo's) and backup code of ``server``, and its host key."""
    admins, host_key = secrets_from_state(run, server)
    body = "".join(host_key.private_openssh.splitlines()[1:-1])
    every = [s for a in admins.values() for s in (a, a.sudo) if s is not None]
    previous = [seed_of(run, f"{server.name}-{a.name}-totp-seed-{'ab'[1 - a.rotation % 2]}") for a in server.admins if a.rotation]
    return [s.seed for s in every] + previous + [c for s in every for c in s.backup_codes] + [body[:40]]


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
    assert mockengine.unwrap(srv.inputs["userData"]) == render.render_user_data(server, admins, host_key, SIGNER)


def test_every_child_is_parented_and_named_after_the_instance() -> None:
    run = deploy(make_server())
    comp = run.one(TYPE, "web-1")
    shared = run.one(firewalls.TYPE, "firewalls")
    children = [r for r in run.registrations if r not in (comp, shared) and r.parent != shared.urn]
    assert len(children) == 3 * 2 + 2  # per admin seed + codes; host key, server (the firewall is shared)
    assert all(r.parent == comp.urn for r in children)
    assert all(r.name.startswith("web-1-") for r in children)


def test_a_rotated_admin_has_two_seed_slots_and_sudo_totp_its_own_seed_and_codes() -> None:
    run = deploy(sudo_and_rotated())
    comp = run.one(TYPE, "web-1")
    names = sorted(r.name for r in run.of_type(RANDOM))
    assert names == sorted([
        "web-1-alice-totp-seed-a", "web-1-alice-backup-codes", "web-1-alice-sudo-seed", "web-1-alice-sudo-backup-codes",
        "web-1-bob-totp-seed-a", "web-1-bob-totp-seed-b", "web-1-bob-backup-codes",
        "web-1-carol-totp-seed-a", "web-1-carol-backup-codes",
    ])  # fmt: skip
    assert all(r.parent == comp.urn for r in run.of_type(RANDOM))
    # Rotation 1 lives in slot b; slot a still holds rotation 0's seed.
    assert run.one(RANDOM, "web-1-bob-totp-seed-b").plain_inputs["keepers"] == {"rotation": "1"}
    assert run.one(RANDOM, "web-1-bob-totp-seed-a").plain_inputs["keepers"] == {"rotation": "0"}


@pytest.mark.parametrize("server", [make_server(), sudo_and_rotated()], ids=["plain", "sudo-totp-and-rotated"])
def test_no_seed_code_or_private_key_leaks_outside_a_secret(server: Server) -> None:
    run = deploy(server)
    needles = secret_strings(run, server)
    sudo = sum(a.sudo == "totp" for a in server.admins)
    rotated = sum(a.rotation > 0 for a in server.admins)
    assert len(needles) == (3 + sudo) * (1 + 5) + rotated + 1
    assert leaks(run, needles) == []
    # The secrets are really there (under markers), so the scan above looked at the right values: the host key
    # in the user-data, every current seed and code in the desired state it carries (as in the desiredState
    # output), the seed before a rotation in previousSeeds.
    user_data = str(mockengine.unwrap(run.one(SERVER, "web-1-server").inputs["userData"]))
    state = cloudconfig.state_of(cloudconfig.read(user_data))
    outputs = mockengine.unwrap(run.one(TYPE, "web-1").outputs)
    assert state == outputs["desiredState"]
    places = user_data.replace("\n", "") + str(state) + str(outputs["previousSeeds"])
    assert all(n in places for n in needles)


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


SECRET_OUTPUTS = {"enrollment", "desiredState", "previousSeeds"}


def test_component_registers_its_outputs_last_with_enrollment_secret() -> None:
    plain = make_server(ssh_port=2222)
    server = make_server(ssh_port=2222, admins=sudo_and_rotated().admins)
    run = deploy(server)
    outputs = run.one(TYPE, "web-1").outputs
    assert set(outputs) == {"ipv4", "ipv6", "knownHosts", "hostPublicKey", "sshCommands", *SECRET_OUTPUTS, "desiredSerial"}
    assert all(mockengine.is_secret(outputs[k]) for k in SECRET_OUTPUTS)
    assert not any(mockengine.is_secret(outputs[k]) for k in outputs if k not in SECRET_OUTPUTS)
    enrollment = mockengine.unwrap(outputs["enrollment"])
    admins, host_key = secrets_from_state(run, server)
    alice = enrollment["alice"]
    assert alice["otpauthUri"].startswith("otpauth://totp/totp-vps:alice@web-1?secret=" + admins["alice"].seed)
    assert alice["backupCodes"] == list(admins["alice"].backup_codes)
    assert alice["totpFile"] == desired.totp_file(admins["alice"])
    # sudo: totp enrolls a second account with its own seed and codes; the others have none.
    sudo = admins["alice"].sudo
    assert sudo is not None and sudo.seed != admins["alice"].seed
    parsed = pyotp.parse_uri(alice["sudo"]["otpauthUri"])
    assert (parsed.secret, parsed.issuer, parsed.name) == (sudo.seed, "totp-vps", alice["sudo"]["account"])
    assert alice["sudo"]["account"] != alice["account"], "a phone shows the two apart"
    assert alice["sudo"]["backupCodes"] == list(sudo.backup_codes) and alice["sudo"]["totpFile"] == desired.totp_file(sudo)
    assert "sudo" not in enrollment["bob"] and "sudo" not in enrollment["carol"]
    ip = mockengine.unwrap(outputs["ipv4"])
    assert f"[{ip}]:2222 {host_key.public_openssh}" in outputs["knownHosts"].splitlines()
    assert outputs["sshCommands"]["bob"] == f"ssh -p 2222 bob@{ip}"
    # The desired state: what the renderer makes of the same secrets, signed-for by the stack's key; its serial in plain.
    state = mockengine.unwrap(outputs["desiredState"])
    assert state == desired.desired_state(server, admins, SIGNER)
    assert state["signer"] == " ".join(SIGNER.split()[:2])
    assert outputs["desiredSerial"] == agent_state.serial(state)
    assert outputs["desiredSerial"] != mockengine.unwrap(deploy(plain).one(TYPE, "web-1").outputs["desiredSerial"])
    # Only a rotated admin has a seed before the last rotation: the one its other slot still holds.
    assert mockengine.unwrap(outputs["previousSeeds"]) == {"bob": seed_of(run, "web-1-bob-totp-seed-a")}


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

    stand_in = KeyPair("-----BEGIN x-----\n" + "A" * 300, ed25519_key("stand-in")[1])
    cloudinit.render._placeholder_key_pair.cache_clear()  # the size check's stand-in key is not a secret
    monkeypatch.setattr("cloudinit.render.fresh_key_pair", lambda: stand_in)
    try:
        again = mockengine.unwrap(deploy(server).one(SERVER, "web-1-server").inputs["userData"])
    finally:  # the cached stand-in must not outlive this test
        cloudinit.render._placeholder_key_pair.cache_clear()
    assert again == baseline


def rotated(server: Server, rotations: dict[str, int]) -> Server:
    return make_server(admins=tuple(Admin(name=a.name, ssh_keys=a.ssh_keys, rotation=rotations.get(a.name, 0))
                                    for a in server.admins))


def test_rotation_replaces_only_that_admins_secrets_and_keeps_the_seed_before() -> None:
    server = make_server()
    once, twice = rotated(server, {"bob": 1}), rotated(server, {"bob": 2})
    before, after, again = deploy(server), deploy(once), deploy(twice)

    def current(run: mockengine.ProgramRun, s: Server) -> dict[str, str]:
        return {a: x.seed for a, x in secrets_from_state(run, s)[0].items()}

    for admin in server.admin_names:
        name = f"web-1-{admin}-backup-codes"
        changed = before.one(RANDOM, name).plain_inputs["keepers"] != after.one(RANDOM, name).plain_inputs["keepers"]
        assert changed == (admin == "bob"), name
        slot_a = f"web-1-{admin}-totp-seed-a"
        assert before.one(RANDOM, slot_a).plain_inputs == after.one(RANDOM, slot_a).plain_inputs, "rotation 1 leaves slot a"
    assert {r.name for r in after.of_type(RANDOM)} - {r.name for r in before.of_type(RANDOM)} == {"web-1-bob-totp-seed-b"}
    seeds = [current(before, server), current(after, once), current(again, twice)]
    assert seeds[0]["alice"] == seeds[1]["alice"] == seeds[2]["alice"]
    assert len({s["bob"] for s in seeds}) == 3, "every rotation gives bob a new seed"
    # The seed before each rotation is the one a server not synced since still has.
    outputs = [mockengine.unwrap(r.one(TYPE, "web-1").outputs["previousSeeds"]) for r in (before, after, again)]
    assert outputs == [{}, {"bob": seeds[0]["bob"]}, {"bob": seeds[1]["bob"]}]
    # Rotation 2 replaces slot a (rotation 0's seed); slot b keeps rotation 1's, now the previous one.
    assert again.one(RANDOM, "web-1-bob-totp-seed-b").plain_inputs == after.one(RANDOM, "web-1-bob-totp-seed-b").plain_inputs
    assert again.one(RANDOM, "web-1-bob-totp-seed-a").plain_inputs["keepers"] == {"rotation": "2"}


def test_the_current_seed_slot_answers_to_the_first_versions_name() -> None:
    """0.1 named an admin's seed ``<server>-<admin>-totp-seed``: that name is an alias of whichever slot is current,
    so an upgraded stack keeps every enrolled phone working."""
    for rotation, current in ((0, "a"), (1, "b"), (2, "a")):
        run = deploy(rotated(make_server(), {"bob": rotation}))
        slots = {r.name: r for r in run.of_type(RANDOM) if r.name.startswith("web-1-bob-totp-seed-")}
        old = run.one(RANDOM, f"web-1-bob-totp-seed-{current}").urn.replace("totp-seed-" + current, "totp-seed")
        assert [n for n, r in slots.items() if old in r.options["aliases"]] == [f"web-1-bob-totp-seed-{current}"], rotation


def test_seed_override_carries_an_enrollment_over_and_stays_secret() -> None:
    seed = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    server = make_server()
    run = deploy(server, seed_overrides={"alice": seed.lower()})
    seeds = sorted(r.name for r in run.of_type(RANDOM) if "totp-seed" in r.name)
    assert seeds == ["web-1-bob-totp-seed-a", "web-1-carol-totp-seed-a"]
    user_data = mockengine.unwrap(run.one(SERVER, "web-1-server").inputs["userData"])
    (alice,) = [a for a in cloudconfig.state_of(cloudconfig.read(user_data))["admins"] if a["name"] == "alice"]
    assert alice["totp"].splitlines()[0] == seed, "the first line of ~/.google_authenticator is the seed"
    assert mockengine.unwrap(run.one(TYPE, "web-1").outputs["enrollment"])["alice"]["manualKey"].replace(" ", "") == seed
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


@pytest.mark.parametrize("missing", ["ssh_key_ids", "firewall_ids", "signer"])
def test_a_server_without_its_key_firewall_or_signer_registers_nothing(missing: str) -> None:
    server = make_server()
    wiring: dict[str, object] = {"ssh_key_ids": [BOOTSTRAP_KEY_ID], "firewall_ids": [1], "signer": SIGNER}
    del wiring[missing]
    with pytest.raises(mockengine.ProgramFailed) as err:
        mockengine.run({}, program=lambda: TotpServer(server.name, TotpServerArgs(server=server, **wiring)))  # type: ignore[arg-type]
    assert "ssh_key_ids, firewall_ids and signer are required" in str(err.value)
    assert err.value.registrations == []
