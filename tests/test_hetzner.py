"""Hetzner Cloud as it is today, at fleet size: the catalogue, the provider schemas, shared firewalls,
the bootstrap key, and the upgrade of a stack written by the previous version (tests/data/)."""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from configs import ed25519_key, example, fleet

from cloudinit import catalogue, cloudconfig, hardening, render, stackconfig
from cloudinit.model import MAX_LIST, Admin, ConfigError, Server
from cloudinit.secrets import fresh_admin_secrets, fresh_key_pair
from components import firewalls, mockengine
from components.naming import OWNER_LABEL

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
SCHEMA: dict[str, Any] = json.loads((DATA / "provider-schemas.json").read_text())
V1: dict[str, Any] = json.loads((DATA / "v1-registrations.json").read_text())
SERVER = "hcloud:index/server:Server"
FIREWALL = "hcloud:index/firewall:Firewall"
SSH_KEY = "hcloud:index/sshKey:SshKey"
TLS = "tls:index/privateKey:PrivateKey"


def admin() -> Admin:
    return Admin(name="alice", ssh_keys=(ed25519_key("alice@laptop")[1],))


def networks(count: int) -> list[str]:
    """``count`` distinct /32 networks from the benchmarking range (198.18.0.0/15)."""
    base = int(ipaddress.ip_address("198.18.0.0"))
    return [f"{ipaddress.ip_address(base + i)}/32" for i in range(count)]


# ---------------------------------------------------------------------------------------------------
# Every registered input against the real provider schemas (tests/data/provider-schemas.json)


def schema_problems(reg: mockengine.Registration) -> list[str]:
    """What the real provider would refuse in ``reg``: unknown or missing inputs, wrong types, enums,
    ignoreChanges naming no input."""
    resource = SCHEMA["resources"].get(reg.type)
    if resource is None:
        return [f"{reg.type} is not in the vendored schema"]
    props = resource["inputProperties"]
    inputs = reg.plain_inputs
    found = [f"{reg.name}: required input {k} missing" for k in resource["requiredInputs"] if k not in inputs]
    for key, value in inputs.items():
        if key not in props:
            found.append(f"{reg.name}: unknown input {key}")
        else:
            found += _type_problems(value, props[key], f"{reg.name}.{key}")
    found += [f"{reg.name}: ignoreChanges names no input {k}" for k in reg.options["ignoreChanges"] if k not in props]
    return found


def _type_problems(value: Any, spec: dict[str, Any], path: str) -> list[str]:
    if spec.get("$ref") == "pulumi.json#/Any":  # Pulumi's own schema: any value (a Command's triggers)
        return []
    if "$ref" in spec:
        kind = SCHEMA["types"][spec["$ref"].removeprefix("#/types/")]
        if "enum" in kind:
            allowed = [e["value"] for e in kind["enum"]]
            return [] if value in allowed else [f"{path}: {value!r} not in {allowed}"]
        if not isinstance(value, dict):
            return [f"{path}: want an object, got {type(value).__name__}"]
        found = [f"{path}: required {k} missing" for k in kind["required"] if k not in value]
        for key, inner in value.items():
            if key not in kind["properties"]:
                found.append(f"{path}: unknown property {key}")
            else:
                found += _type_problems(inner, kind["properties"][key], f"{path}.{key}")
        return found
    if "enum" in spec and value not in [e["value"] for e in spec["enum"]]:
        return [f"{path}: {value!r} not in the enum"]
    kind = spec["type"]
    checks = {
        "string": lambda v: isinstance(v, str),
        # Numbers travel as protobuf doubles: an integer input arrives as a float without a fraction.
        "integer": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and float(v).is_integer(),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
    }
    if not checks[kind](value):
        return [f"{path}: want {kind}, got {value!r}"]
    if kind == "array":
        return [p for i, item in enumerate(value) for p in _type_problems(item, spec["items"], f"{path}[{i}]")]
    if kind == "object" and "additionalProperties" in spec:
        return [p for k, item in value.items() for p in _type_problems(item, spec["additionalProperties"], f"{path}.{k}")]
    return []


def _everything_on() -> dict[str, Any]:
    config = example()
    config["defaults"].update(allowedCidrs=["0.0.0.0/0", "::/0"], allowSshFromAnywhere=True, restrictEgress=True)
    config["servers"][0].update(rebuild=True, allowIcmp=False, ipv6=False, serverType="cax21", image="ubuntu-26.04")
    return config


SCHEMA_RUNS = {
    "example": example,
    "transition": lambda: {**example(), "keepLegacyFirewalls": True},
    "every option": _everything_on,
    "fleet of 60": lambda: fleet(60, 2),
    "operator": lambda: {**example(), "operator": {"admin": "alice", "identityFile": "~/.ssh/id_ed25519"}},
}


@pytest.mark.parametrize("config", list(SCHEMA_RUNS.values()), ids=list(SCHEMA_RUNS))
def test_every_registered_input_matches_the_provider_schema(config: Any) -> None:
    run = mockengine.run(config())
    custom = [r for r in run.registrations if r.custom]
    assert {r.type for r in custom} >= {SERVER, FIREWALL, SSH_KEY, TLS}
    assert [p for r in custom for p in schema_problems(r)] == []


def test_the_schema_check_catches_what_the_provider_would_refuse() -> None:
    run = mockengine.run(example())
    (key,) = run.of_type(SSH_KEY)
    server = run.one(SERVER, "web-1-server")
    firewall = run.of_type(FIREWALL)[0]
    bad = copy.deepcopy(key)
    del bad.inputs["publicKey"]
    assert schema_problems(bad) == ["bootstrap-ssh-key: required input publicKey missing"]
    bad = copy.deepcopy(server)
    bad.inputs.update(datacentre="fsn1-dc14", firewallIds=["fw-1"])
    bad.options["ignoreChanges"] = ["user_data"]
    assert sorted(schema_problems(bad)) == sorted([
        "web-1-server: unknown input datacentre",
        "web-1-server.firewallIds[0]: want integer, got 'fw-1'",
        "web-1-server: ignoreChanges names no input user_data",
    ])  # fmt: skip
    bad = copy.deepcopy(firewall)
    bad.inputs["rules"] = [{"direction": "in", "port": "22", "sourceIps": "198.51.100.0/24"}]
    assert schema_problems(bad) == [
        f"{firewall.name}.rules[0]: required protocol missing",
        f"{firewall.name}.rules[0].sourceIps: want array, got '198.51.100.0/24'",
    ]
    (sync, *_) = mockengine.run(SCHEMA_RUNS["operator"]()).of_type("command:local:Command")
    bad = copy.deepcopy(sync)
    bad.inputs.update(logging="all", stdinFile="-", triggers="serial")
    assert sorted(schema_problems(bad)) == sorted([
        f"{sync.name}.logging: 'all' not in ['stdout', 'stderr', 'stdoutAndStderr', 'none']",
        f"{sync.name}: unknown input stdinFile",
        f"{sync.name}.triggers: want array, got 'serial'",
    ])  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# The catalogue


def test_default_and_example_server_types_are_current() -> None:
    default = Server(name="web-1", admins=(admin(),), allowed_cidrs=("198.51.100.0/24",))
    assert catalogue.SERVER_TYPES[default.server_type].status(default.location) == "current"
    parsed = stackconfig.parse(example())
    assert all(catalogue.SERVER_TYPES[s.server_type].status(s.location) == "current" for s in parsed.servers)
    document = yaml.safe_load((ROOT / "Pulumi.example.yaml").read_text())
    assert document["config"]["totp-vps:defaults"]["serverType"] == catalogue.DEFAULT_SERVER_TYPE


def test_readme_reference_and_examples_name_only_current_types() -> None:
    readme = (ROOT / "README.md").read_text()
    (row,) = [line for line in readme.splitlines() if line.startswith("| `servers[].serverType`")]
    offered, _, refused = row.partition("Hetzner removed")
    named = re.findall(r"`((?:cx|cpx|cax|ccx)\d\d)`", offered)
    assert catalogue.DEFAULT_SERVER_TYPE in named and len(named) >= 3
    assert all(catalogue.SERVER_TYPES[t].retirement is None for t in named), named
    assert all(catalogue.SERVER_TYPES[t].retirement for t in re.findall(r"`((?:cx|cpx|cax|ccx)\d\d)`", refused))


def test_removed_type_is_refused_with_its_replacement() -> None:
    with pytest.raises(ConfigError) as err:
        Server(name="web-1", admins=(admin(),), allowed_cidrs=("198.51.100.0/24",), server_type="cx22", where="servers[0]")
    expected = "servers[0].serverType: cx22 was removed from Hetzner's catalogue on 2026-01-01; use cx23 (got 'cx22')"
    assert str(err.value) == expected


@pytest.mark.parametrize(
    ("server_type", "location", "problem"),
    [
        ("cpx31", "fsn1", "cpx31 was removed from Hetzner's catalogue on 2026-01-01; use cpx32"),
        ("cpx51", "nbg1", "use cpx62"),
        ("cax11", "ash", "cax11 (Arm64 (CAX)) is sold only in fsn1, nbg1, hel1; in ash use dedicated vCPU (CCX) or regular"),
        ("cx23", "sin", "cx23 (cost-optimised (CX)) is sold only in fsn1, nbg1, hel1"),
        ("cx99", "fsn1", "must be a Hetzner server type such as cx23"),
        ("cpx31", "ash", None),  # deprecated there, still sold in 2026: preflight asks the API
        ("ccx13", "sin", None),
        ("cax41", "hel1", None),
    ],
)
def test_server_type_by_location(server_type: str, location: str, problem: str | None) -> None:
    found = catalogue.server_type_problem(server_type, location)
    assert (found is None) if problem is None else (found is not None and problem in found), found


def test_image_without_a_build_for_the_types_architecture_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    x86_only = catalogue.Image("debian-12", (catalogue.X86,), "test")
    monkeypatch.setitem(catalogue.IMAGES, "debian-12", x86_only)
    with pytest.raises(ConfigError) as err:
        Server(name="web-1", admins=(admin(),), allowed_cidrs=("198.51.100.0/24",), server_type="cax11", where="servers[0]")
    assert str(err.value) == "servers[0].image: debian-12 has no arm build for cax11 (got 'debian-12')"
    Server(name="web-1", admins=(admin(),), allowed_cidrs=("198.51.100.0/24",), server_type="cx23")  # x86 still fine


def test_catalogue_data_shape() -> None:
    assert re.fullmatch(r"20\d\d\.\d{1,2}\.\d{1,2}", catalogue.VERSION)
    assert set(catalogue.IMAGES) == set(hardening.IMAGES), "an image needs both its OpenSSH version and its builds"
    for name, kind in catalogue.SERVER_TYPES.items():
        assert kind.name == name and re.fullmatch(r"(cx|cpx|cax|ccx)\d\d", name)
        assert set(kind.family.locations) <= set(catalogue.LOCATIONS)
        assert kind.architecture == (catalogue.ARM if name.startswith("cax") else catalogue.X86)
        if kind.retirement:
            successor = catalogue.SERVER_TYPES[kind.retirement.replacement]
            assert successor.retirement is None and successor.architecture == kind.architecture, name
            assert set(kind.retirement.removed_in) <= set(kind.family.locations)
            assert kind.retirement.removed >= (kind.retirement.deprecated or "")
    for image in catalogue.IMAGES.values():
        assert set(image.architectures) <= {catalogue.X86, catalogue.ARM} and image.packages
    assert all(catalogue.IMAGES[i].architectures == (catalogue.X86, catalogue.ARM) for i in catalogue.IMAGES), (
        "every supported image has an arm64 build with the PAM module and nftables (catalogue.IMAGES[...].packages)"
    )


@pytest.mark.parametrize("image", sorted(catalogue.IMAGES))
def test_arm_servers_render_with_the_packages_that_exist_for_arm64(image: str) -> None:
    server = Server(name="arm-1", admins=(admin(),), allowed_cidrs=("198.51.100.0/24",), server_type="cax11", image=image)
    signer = fresh_key_pair().public_openssh
    user_data = render.render_user_data(server, {"alice": fresh_admin_secrets(5)}, fresh_key_pair(), signer)
    packages = cloudconfig.read(user_data).data["packages"]
    assert isinstance(packages, list) and hardening.PAM_PACKAGE[image] in packages and "nftables" in packages
    assert catalogue.ARM in catalogue.IMAGES[image].architectures
    assert "arm64" in catalogue.IMAGES[image].packages or "Architecture: any" in catalogue.IMAGES[image].packages


# ---------------------------------------------------------------------------------------------------
# Shared firewalls


def test_sixty_servers_with_the_same_rules_share_one_firewall() -> None:
    run = mockengine.run(fleet(60, 2))
    (firewall,) = run.of_type(FIREWALL)
    servers = run.of_type(SERVER)
    assert len(servers) == 60
    assert all(s.plain_inputs["firewallIds"] == [int(mockengine._numeric_id(firewall.name))] for s in servers)
    assert firewall.plain_inputs["labels"] == {OWNER_LABEL: "totp-vps.offline"}


def test_sixty_servers_with_three_rule_sets_register_three_firewalls() -> None:
    config = fleet(60, 2)
    for i, server in enumerate(config["servers"]):
        server.update([{}, {"sshPort": 2222}, {"restrictEgress": True}][i % 3])
    run = mockengine.run(config)
    found = run.of_type(FIREWALL)
    assert len(found) == 3
    by_id = {int(mockengine._numeric_id(f.name)): f for f in found}
    members: dict[str, list[str]] = {}
    for server in run.of_type(SERVER):
        (attached,) = server.plain_inputs["firewallIds"]
        members.setdefault(by_id[attached].name, []).append(server.plain_inputs["name"])
    assert sorted(map(len, members.values())) == [20, 20, 20]


def test_three_hundred_networks_are_split_into_rules_of_at_most_one_hundred() -> None:
    cidrs = networks(300)
    run = mockengine.run({**fleet(1, 1), "defaults": {"allowedCidrs": cidrs}})
    (firewall,) = run.of_type(FIREWALL)
    ssh = [r for r in firewall.plain_inputs["rules"] if r["protocol"] == "tcp"]
    assert [len(r["sourceIps"]) for r in ssh] == [100, 100, 100]
    assert [c for r in ssh for c in r["sourceIps"]] == cidrs
    assert all(r["port"] == "22" and r["direction"] == "in" for r in ssh)


def test_the_longest_network_list_fits_one_firewall_and_a_longer_one_is_refused() -> None:
    """The config takes at most MAX_LIST networks: with ICMP and the egress preset that is still within
    Hetzner's 50 rules per firewall, so no accepted config fails at apply time."""
    config = {**fleet(1, 1), "defaults": {"allowedCidrs": networks(MAX_LIST), "restrictEgress": True, "allowIcmp": True}}
    (firewall,) = mockengine.run(config).of_type(FIREWALL)
    assert len(firewall.plain_inputs["rules"]) <= firewalls.MAX_RULES_PER_FIREWALL
    config["defaults"]["allowedCidrs"] = networks(MAX_LIST + 1)
    with pytest.raises(mockengine.ProgramFailed) as err:
        mockengine.run(config)
    assert str(err.value) == (f"totp-vps config: defaults.allowedCidrs (inherited by srv-0): lists more than {MAX_LIST} "
                              f"networks (got '{MAX_LIST + 1} networks')")
    assert err.value.registrations == []


def test_more_than_fifty_rules_are_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan's own limit, should rules ever grow past the config's bound (here: ten networks per rule)."""
    monkeypatch.setattr(firewalls, "MAX_NETWORKS_PER_RULE", 10)
    config = {**fleet(1, 1), "defaults": {"allowedCidrs": networks(431), "restrictEgress": True}}
    with pytest.raises(mockengine.ProgramFailed) as err:
        mockengine.run(config)
    assert str(err.value).startswith("totp-vps config: defaults.allowedCidrs (inherited by srv-0): needs 51 firewall rules")
    assert "(got '431 networks')" in str(err.value) and "\n" not in str(err.value)
    assert err.value.registrations == []
    mockengine.run({**config, "defaults": {"allowedCidrs": networks(430), "restrictEgress": True}})  # 50 rules fit


def test_more_rule_sets_than_the_project_limit_are_refused_before_registering() -> None:
    config = fleet(51, 1)
    for i, server in enumerate(config["servers"]):
        server["sshPort"] = 2000 + i
    with pytest.raises(mockengine.ProgramFailed) as err:
        mockengine.run(config)
    assert str(err.value).startswith("totp-vps config: servers: need 51 firewalls, over Hetzner's 50 per project")
    assert err.value.registrations == []


def test_a_firewall_keeps_its_identity_when_its_networks_change() -> None:
    """Its rules then change in place (atomic); a new identity would move servers between firewalls,
    and the provider detaches the old one before it attaches the new one."""
    servers = stackconfig.parse(example()).servers
    before = firewalls.plan(servers, "p", "s")
    wider = example()
    wider["defaults"]["allowedCidrs"] = ["198.51.100.0/24", "203.0.113.0/24", *networks(250)]
    after = firewalls.plan(stackconfig.parse(wider).servers, "p", "s")
    assert [f.key for f in before.firewalls] == [f.key for f in after.firewalls]
    assert [f.rules for f in before.firewalls] != [f.rules for f in after.firewalls]
    moved = example()
    moved["servers"][0]["sshPort"] = 2200
    moved_plan = firewalls.plan(stackconfig.parse(moved).servers, "p", "s")
    assert moved_plan.by_server["web-1"][0].key != before.by_server["web-1"][0].key


def test_rule_sets_differing_only_in_networks_get_distinct_stable_names() -> None:
    config = fleet(3, 1)
    config["servers"][1]["allowedCidrs"] = ["203.0.113.0/24"]
    plan = firewalls.plan(stackconfig.parse(config).servers, "totp-vps", "prod")
    keys = [f.key for f in plan.firewalls]
    assert len(keys) == 2 and keys[1] == f"{keys[0]}-2"
    assert [f.servers for f in plan.firewalls] == [("srv-0", "srv-2"), ("srv-1",)]
    assert all(f.name == f"totp-vps-prod-fw-{f.key}" for f in plan.firewalls)


# ---------------------------------------------------------------------------------------------------
# The bootstrap key


def test_no_ssh_key_carries_an_admins_public_key() -> None:
    config = fleet(5, 4)
    run = mockengine.run(config)
    admin_blobs = {a["sshKeys"][0].split()[1] for a in config["admins"]}
    (key,) = run.of_type(SSH_KEY)
    assert key.plain_inputs["publicKey"].split()[1] not in admin_blobs
    (private,) = [r for r in run.of_type(TLS) if r.name == "bootstrap-private-key"]
    assert key.plain_inputs["publicKey"] == mockengine.unwrap(private.outputs["publicKeyOpenssh"]).strip()
    assert key.plain_inputs["name"] == "totp-vps-offline-bootstrap"
    assert all(s.plain_inputs["sshKeys"] == [mockengine._numeric_id(key.name)] for s in run.of_type(SERVER))


def test_the_bootstrap_private_key_is_a_secret_in_state_and_never_an_output() -> None:
    run = mockengine.run(example())
    (private,) = [r for r in run.of_type(TLS) if r.name == "bootstrap-private-key"]
    assert mockengine.is_secret(private.outputs["privateKeyOpenssh"])
    # Past the header every OpenSSH private key shares ("openssh-key-v1", no cipher): this key's own bytes.
    body = "".join(mockengine.unwrap(private.outputs["privateKeyOpenssh"]).splitlines()[1:-1])[100:160]
    trees = [run.stack_outputs, *(r.outputs for r in run.registrations if not r.custom), *(r.inputs for r in run.registrations)]
    assert len(body) == 60 and not any(body in json.dumps(mockengine.unwrap(t)) for t in trees), "the private half went somewhere"


# ---------------------------------------------------------------------------------------------------
# Upgrading a stack written by the previous version (tests/data/v1-registrations.json)

REPLACE_ON_CHANGE = {k for k, v in SCHEMA["resources"][SERVER]["inputProperties"].items() if v.get("willReplaceOnChanges")}


def upgraded(old_config: dict[str, Any], *, transition: bool) -> dict[str, Any]:
    """The previous version's config as the README's upgrade section has it edited: removed server
    types changed to their replacement, no ``rebuild: true`` (the transition refuses it), and the
    transition setting for the first run."""
    config = copy.deepcopy(old_config)
    for section in (config.get("defaults", {}), *config["servers"]):
        retired = catalogue.SERVER_TYPES[section["serverType"]].retirement if "serverType" in section else None
        if retired:
            section["serverType"] = retired.replacement
        section.pop("rebuild", None)
    return {**config, "keepLegacyFirewalls": True} if transition else config


def _redacted(reg: mockengine.Registration) -> dict[str, Any]:
    return mockengine.redact(reg.inputs)  # type: ignore[no-any-return]


def replaced_by(old: dict[str, Any], new: mockengine.Registration) -> list[str]:
    """Inputs that would replace the server: changed (a secret never counts as unchanged) and not ignored."""
    now = _redacted(new)
    return sorted(
        key for key in REPLACE_ON_CHANGE
        if key not in new.options["ignoreChanges"]
        and (old["inputs"].get(key) != now.get(key) or now.get(key) == mockengine.SECRET)
    )  # fmt: skip


def old_firewall_urn(old: dict[str, Any], server: dict[str, Any]) -> str:
    (fw_id,) = server["inputs"]["firewallIds"]
    old_firewalls = [r for r in old["registrations"] if r["type"] == FIREWALL]
    (found,) = [r["urn"] for r in old_firewalls if float(mockengine._numeric_id(r["name"])) == fw_id]
    return found  # type: ignore[no-any-return]


V1_CONFIGS = sorted(V1["configs"])


def test_the_vendored_registrations_come_from_the_previous_version() -> None:
    assert re.fullmatch(r"[0-9a-f]{40}", V1["origin"]["commit"]) and "make_v1_registrations.py" in V1["origin"]["how"]
    assert set(V1_CONFIGS) == {"example", "example-rebuild", "fleet"}
    types = {r["type"] for r in V1["configs"]["example"]["registrations"]}
    assert "totp-vps:index:AdminKeys" in types and FIREWALL in types


@pytest.mark.parametrize("name", V1_CONFIGS)
@pytest.mark.parametrize("transition", [True, False], ids=["transition", "after"])
def test_no_server_of_the_previous_version_is_replaced(name: str, transition: bool) -> None:
    old = V1["configs"][name]
    run = mockengine.run(upgraded(old["config"], transition=transition))
    new_servers = {r.urn: r for r in run.of_type(SERVER)}
    old_servers = [r for r in old["registrations"] if r["type"] == SERVER]
    assert old_servers and {r["urn"] for r in old_servers} <= set(new_servers)
    for server in old_servers:
        assert replaced_by(server, new_servers[server["urn"]]) == [], server["name"]


@pytest.mark.parametrize("name", V1_CONFIGS)
def test_every_kept_resource_keeps_its_urn_or_is_aliased(name: str) -> None:
    old = V1["configs"][name]
    transition = mockengine.run(upgraded(old["config"], transition=True))
    after = mockengine.run(upgraded(old["config"], transition=False))
    admin_keys = {r["urn"] for r in old["registrations"] if r["type"] == SSH_KEY or r["type"] == "totp-vps:index:AdminKeys"}
    legacy = {old_firewall_urn(old, s) for s in old["registrations"] if s["type"] == SERVER}
    for run, gone in ((transition, admin_keys), (after, admin_keys | legacy)):
        kept = {r.urn for r in run.registrations} | {a for r in run.registrations for a in r.options["aliases"]}
        missing = sorted({r["urn"] for r in old["registrations"]} - kept - gone)
        assert missing == []
    # Only the admin keys (uploaded to Hetzner by the previous version) leave in the transition.
    kept = {r.urn for r in transition.registrations} | {a for r in transition.registrations for a in r.options["aliases"]}
    assert {r["urn"] for r in old["registrations"]} - kept == admin_keys


@pytest.mark.parametrize("name", V1_CONFIGS)
def test_transition_attaches_old_and_new_firewall_and_only_the_next_run_detaches(name: str) -> None:
    old = V1["configs"][name]
    transition = mockengine.run(upgraded(old["config"], transition=True))
    after = mockengine.run(upgraded(old["config"], transition=False))
    for run, phase in ((transition, "transition"), (after, "after")):
        firewall_by_id = {float(mockengine._numeric_id(f.name)): f for f in run.of_type(FIREWALL)}
        shared_parent = run.one(firewalls.TYPE, "firewalls").urn
        new_servers = {r.urn: r for r in run.of_type(SERVER)}
        for server in (r for r in old["registrations"] if r["type"] == SERVER):
            attached = [firewall_by_id[i] for i in new_servers[server["urn"]].plain_inputs["firewallIds"]]
            old_urn = old_firewall_urn(old, server)
            holds_old = [f for f in attached if f.urn == old_urn or old_urn in f.options["aliases"]]
            holds_shared = [f for f in attached if f.parent == shared_parent]
            assert holds_shared, f"{phase}: {server['name']} has no shared firewall"
            if phase == "transition":
                assert holds_old, f"{server['name']} lost its old firewall before the new one is attached"
            else:
                assert attached == holds_shared, f"{server['name']} still holds a per-server firewall"
                # An old firewall no longer registered is deleted, after the servers' updates detached it.
                assert all(f.urn != old_urn for f in run.of_type(FIREWALL))
    legacy = [r for r in transition.of_type(FIREWALL) if r.parent != transition.one(firewalls.TYPE, "firewalls").urn]
    if name == "fleet":  # web-1, web-2, web-3 share one rule set: web-1's old firewall becomes the shared one
        assert sorted(r.name for r in legacy) == ["web-2-firewall", "web-3-firewall"]
        old_legacy = {r["name"]: r for r in old["registrations"] if r["type"] == FIREWALL}
        for reg in legacy:  # same URN and rules as before: the transition changes nothing about them but labels
            assert reg.urn == old_legacy[reg.name]["urn"] and reg.plain_inputs["rules"] == old_legacy[reg.name]["inputs"]["rules"]


def test_no_rebuild_during_the_transition() -> None:
    old = V1["configs"]["example-rebuild"]["config"]
    config = {**copy.deepcopy(old), "keepLegacyFirewalls": True}
    config["servers"][0]["serverType"] = "cx23"
    config["defaults"]["serverType"] = "cx23"
    with pytest.raises(mockengine.ProgramFailed) as err:
        mockengine.run(config)
    assert str(err.value) == (
        "totp-vps config: servers[0].rebuild: cannot rebuild while totp-vps:keepLegacyFirewalls is set; "
        "rebuild after the transition (got True)"
    )
    assert err.value.registrations == []


def test_a_server_rebuilt_after_the_transition_gets_the_bootstrap_key() -> None:
    old = V1["configs"]["example"]
    config = upgraded(old["config"], transition=False)
    config["servers"][0]["rebuild"] = True
    run = mockengine.run(config)
    server = run.one(SERVER, "web-1-server")
    (key,) = run.of_type(SSH_KEY)
    assert server.options["ignoreChanges"] == [], "a replacement would take ignored inputs from the state"
    assert server.plain_inputs["sshKeys"] == [mockengine._numeric_id(key.name)]
    (old_server,) = [r for r in old["registrations"] if r["name"] == "web-1-server"]
    assert "sshKeys" in replaced_by(old_server, server), "rebuild: true does replace it, with the new key"
