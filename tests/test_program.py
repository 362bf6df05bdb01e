"""The whole ``__main__.py`` under the mock engine: a realistic fleet, exports, and bad configs."""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from configs import ed25519_key, example, fleet, secrets_from_state
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, rsa

from agent import state as agent_state
from cloudinit.secrets import key_pair_from_private
from components import mockengine

SERVER = "hcloud:index/server:Server"


def test_two_servers_three_admins_register_everything() -> None:
    run = mockengine.run(fleet(2, 3))
    counts: dict[str, int] = {}
    for r in run.registrations:
        counts[r.type] = counts.get(r.type, 0) + 1
    assert counts == {
        "totp-vps:index:BootstrapKey": 1,
        "hcloud:index/sshKey:SshKey": 1,
        "totp-vps:index:SharedFirewalls": 1,
        "hcloud:index/firewall:Firewall": 1,  # both servers have the same rules
        "totp-vps:index:TotpServer": 2,
        "random:index/randomBytes:RandomBytes": 2 * 3 * 2,
        "tls:index/privateKey:PrivateKey": 2 + 1 + 1,  # host keys, the bootstrap key, the state-signing key
        "hcloud:index/server:Server": 2,
    }
    (key,) = run.of_type("hcloud:index/sshKey:SshKey")
    (firewall,) = run.of_type("hcloud:index/firewall:Firewall")
    for server in run.of_type(SERVER):
        assert server.plain_inputs["sshKeys"] == [mockengine._numeric_id(key.name)], "the bootstrap key's id"
        assert server.plain_inputs["firewallIds"] == [int(mockengine._numeric_id(firewall.name))]


SECRET_EXPORTS = {"enrollment", "desiredState", "sync"}


def test_exports_per_server_and_admin_with_enrollment_secret() -> None:
    run = mockengine.run(example())
    outputs = run.stack_outputs
    # No operator in the example: pulumi up converges nothing, so no "operator" export and every server needs a sync.
    assert set(outputs) == {"servers", "syncNeeded", *SECRET_EXPORTS}
    for key in SECRET_EXPORTS:
        assert mockengine.is_secret(outputs[key]) and not list(mockengine.plain_leaves(outputs[key])), key
    servers = outputs["servers"]
    assert set(servers) == {"web-1", "db-1"} and outputs["syncNeeded"] == ["db-1", "web-1"]
    assert all(not mockengine.is_secret(v) for s in servers.values() for v in s.values())
    assert servers["db-1"]["knownHosts"].startswith("[203.0.113.")
    assert set(servers["web-1"]) == {"ipv4", "ipv6", "sshPort", "knownHosts", "hostPublicKey", "sshCommands",
                                     "desiredSerial", "converge"}  # previousSshPort only while a port changes
    assert servers["web-1"]["converge"] == ".venv/bin/python -m vpsctl sync --stack offline --server web-1"
    enrollment = mockengine.unwrap(outputs["enrollment"])
    assert set(enrollment["web-1"]) == {"alice", "bob"} and set(enrollment["db-1"]) == {"alice"}
    assert enrollment["web-1"]["alice"]["otpauthUri"] != enrollment["db-1"]["alice"]["otpauthUri"], "a seed per server"
    # One signing key for the stack: every server's desired state names its public half as the signer.
    states = mockengine.unwrap(outputs["desiredState"])
    sync = mockengine.unwrap(outputs["sync"])
    signer = key_pair_from_private(sync["signingKey"]).public_openssh
    assert set(states) == {"web-1", "db-1"} and all(s["signer"] == signer for s in states.values())
    assert {n: agent_state.serial(s) for n, s in states.items()} == {n: s["desiredSerial"] for n, s in servers.items()}
    assert sync["previousSeeds"] == {"web-1": {}, "db-1": {}}, "nobody rotated yet"


def test_a_port_change_exports_the_previous_port() -> None:
    config = example()
    config["servers"][0].update(sshPort=2222, previousSshPort=22)
    servers = mockengine.unwrap(mockengine.run(config).stack_outputs)["servers"]
    assert (servers["web-1"]["sshPort"], servers["web-1"]["previousSshPort"]) == (2222, 22)
    assert "previousSshPort" not in servers["db-1"]


def test_a_rotation_exports_the_seed_before_it_for_the_sync() -> None:
    config = example()
    before = mockengine.unwrap(mockengine.run(config).stack_outputs)
    config["admins"][1]["rotation"] = 1  # bob
    after = mockengine.unwrap(mockengine.run(config).stack_outputs)
    old = parse_qs(urlparse(before["enrollment"]["web-1"]["bob"]["otpauthUri"]).query)["secret"][0]
    new = parse_qs(urlparse(after["enrollment"]["web-1"]["bob"]["otpauthUri"]).query)["secret"][0]
    assert old != new and after["sync"]["previousSeeds"] == {"web-1": {"bob": old}, "db-1": {}}
    assert after["sync"]["signingKey"] == before["sync"]["signingKey"], "a rotation never changes the stack's signing key"


def test_seed_override_from_secret_config() -> None:
    seed = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    run = mockengine.run(example(), {"seedOverrides": {"bob": seed}})
    enrollment = mockengine.unwrap(run.stack_outputs["enrollment"])
    assert f"secret={seed}&" in enrollment["web-1"]["bob"]["otpauthUri"]
    for r in run.registrations:
        assert seed not in str([v for _, v in mockengine.plain_leaves(r.inputs)])


def test_program_and_vpsctl_read_the_stack_config_alike() -> None:
    """Same file, same state in: the program's user-data is what vpsctl's renderer makes."""
    from cloudinit import render, stackconfig

    parsed = stackconfig.parse(example())
    run = mockengine.run(example())
    signer = mockengine.unwrap(run.one("tls:index/privateKey:PrivateKey", "state-signing-key").outputs["publicKeyOpenssh"])
    assert sorted(s.name for s in parsed.servers) == sorted(r.plain_inputs["name"] for r in run.of_type(SERVER))
    for server in parsed.servers:
        admins, host_key = secrets_from_state(run, server)
        sent = mockengine.unwrap(run.one(SERVER, f"{server.name}-server").inputs["userData"])
        assert sent == render.render_user_data(server, admins, host_key, signer)


def _rsa_key(bits: int) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _dsa_key() -> str:
    key = dsa.generate_private_key(key_size=1024)  # noqa: S505 - a weak key, to see it refused
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _set(path: str, value: Any) -> Any:
    """A config edit: ``servers[0].sshPort`` = value (``-`` deletes)."""

    def edit(config: dict[str, Any]) -> None:
        node: Any = config
        parts = path.replace("]", "").replace("[", ".").split(".")
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        last = parts[-1]
        if value == "-":
            del node[last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return edit


def _crowd(config: dict[str, Any]) -> None:
    config["admins"] = [{"name": f"u{i}", "sshKeys": [ed25519_key(f"u{i}-{k}")[1] for k in range(4)]} for i in range(40)]
    del config["servers"][1]["admins"]


ALICE_KEY = example()["admins"][0]["sshKeys"][0]
WEB = "(inherited by web-1)"  # a value from the defaults is named where it was written, and who inherited it
BAD_CONFIGS = [
    # (id, edit, key named in the error, bad value shown)
    ("cidr-garbage", _set("defaults.allowedCidrs", ["198.51.100.300/24"]), f"defaults.allowedCidrs[0] {WEB}",
     "198.51.100.300/24"),
    ("cidr-host-bits", _set("defaults.allowedCidrs", ["198.51.100.7/24"]), f"defaults.allowedCidrs[0] {WEB}", "198.51.100.7/24"),
    ("world-v4", _set("defaults.allowedCidrs", ["0.0.0.0/0"]), f"defaults.allowedCidrs[0] {WEB}", "0.0.0.0/0"),
    ("world-v6", _set("defaults.allowedCidrs", ["::/0"]), f"defaults.allowedCidrs[0] {WEB}", "::/0"),
    ("no-cidrs", _set("defaults.allowedCidrs", []), f"defaults.allowedCidrs {WEB}", "[]"),
    ("weak-rsa", _set("admins.0.sshKeys", [_rsa_key(2048)]), "admins[0].sshKeys[0]", "2048 bits"),
    ("dsa-key", _set("admins.0.sshKeys", [_dsa_key()]), "admins[0].sshKeys[0]", "ssh-dss"),
    ("key-not-base64", _set("admins.0.sshKeys", ["ssh-ed25519 not*base64 x"]), "admins[0].sshKeys[0]", "not*base64"),
    ("key-type-mismatch", _set("admins.0.sshKeys", ["ssh-rsa " + ALICE_KEY.split()[1]]), "admins[0].sshKeys[0]", "ssh-rsa"),
    ("no-keys", _set("admins.0.sshKeys", []), "admins[0].sshKeys", "[]"),
    ("reserved-name", _set("admins.0.name", "root"), "admins[0].name", "'root'"),
    ("invalid-name", _set("admins.0.name", "Alice Smith"), "admins[0].name", "'Alice Smith'"),
    ("duplicate-admin", _set("admins.1.name", "alice"), "admins[1].name", "'alice'"),
    ("shared-key", _set("admins.1.sshKeys", [ALICE_KEY]), "servers[0].admins", "alice"),
    ("duplicate-server", _set("servers.1.name", "web-1"), "servers[1].name", "'web-1'"),
    ("bad-hostname", _set("servers.0.name", "Web_1"), "servers[0].name", "'Web_1'"),
    ("port-zero", _set("servers.0.sshPort", 0), "servers[0].sshPort", "0"),
    ("port-too-big", _set("servers.0.sshPort", 70000), "servers[0].sshPort", "70000"),
    ("port-string", _set("servers.0.sshPort", "ssh"), "servers[0].sshPort", "'ssh'"),
    ("unknown-image", _set("servers.0.image", "centos-7"), "servers[0].image", "'centos-7'"),
    ("unknown-location", _set("servers.0.location", "mars1"), "servers[0].location", "'mars1'"),
    ("bad-server-type", _set("servers.0.serverType", "huge"), "servers[0].serverType", "'huge'"),
    ("removed-server-type", _set("defaults.serverType", "cx22"), f"defaults.serverType {WEB}", "use cx23 (got 'cx22')"),
    ("arm-outside-the-eu", lambda c: c["servers"][0].update(serverType="cax11", location="ash"), "servers[0].serverType",
     "in ash"),
    ("transition-not-bool", _set("keepLegacyFirewalls", "yes"), "totp-vps:keepLegacyFirewalls", "'yes'"),
    ("empty-admins", _set("admins", []), "admins", "[]"),
    ("empty-servers", _set("servers", []), "servers", "[]"),
    ("server-admins-empty", _set("servers.0.admins", []), "servers[0].admins", "[]"),
    ("unknown-admin-ref", _set("servers.1.admins", ["mallory"]), "servers[1].admins[0]", "'mallory'"),
    ("unknown-setting", _set("sever", [{"name": "x"}]), "totp-vps:sever", "unknown setting; known: admins, backupCodes"),
    ("unknown-server-key", _set("servers.0.sshport", 22), "servers[0].sshport", "known: admins, allowForwarding"),
    ("backup-codes-zero", _set("backupCodes", 0), "backupCodes", "0"),
    ("issuer-colon", _set("issuer", "acme:prod"), "issuer", "'acme:prod'"),
    ("bad-label", _set("servers.0.labels", {"bad key!": "x"}), "servers[0].labels", "'bad key!'"),
    ("no-ip-at-all", lambda c: c["servers"][0].update(ipv4=False, ipv6=False), "servers[0].ipv4", "False"),
    ("flag-not-bool", _set("servers.0.restrictEgress", "yes"), "servers[0].restrictEgress", "'yes'"),
    ("too-big-for-32k", _crowd, "servers[0].admins", "40 admins"),
]


@pytest.mark.parametrize(("edit", "key", "shown"), [b[1:] for b in BAD_CONFIGS], ids=[b[0] for b in BAD_CONFIGS])
def test_bad_config_fails_with_one_line_naming_the_key_before_any_registration(edit: Any, key: str, shown: str) -> None:
    config = copy.deepcopy(example())
    edit(config)
    with pytest.raises(mockengine.ProgramFailed) as err:
        mockengine.run(config)
    message = str(err.value)
    assert message.startswith(f"totp-vps config: {key}: "), message
    assert shown in message
    assert "\n" not in message and "Traceback" not in message
    assert err.value.registrations == [], "nothing may be registered before the config is known good"


@pytest.mark.parametrize(("edit", "value"), [(_set("sever", [{"name": "x"}]), "'x'"), (_set("servers.0.sshport", 2222), "2222")],
                         ids=["unknown-setting", "unknown-server-key"])
def test_an_unknown_setting_is_named_but_its_value_never_quoted(edit: Any, value: str) -> None:
    """It may be a secret set under a misspelt name."""
    config = copy.deepcopy(example())
    edit(config)
    with pytest.raises(mockengine.ProgramFailed) as err:
        mockengine.run(config)
    assert "unknown setting" in str(err.value) and value not in str(err.value) and "(got" not in str(err.value)


@pytest.mark.parametrize(
    ("secret", "key"),
    [({"seedOverrides": {"alice": "SHORT"}}, "seedOverrides.alice"), ({"seedOverrides": {"eve": "A" * 32}}, "seedOverrides.eve")],
)
def test_bad_seed_override_is_reported_without_the_seed(secret: dict[str, Any], key: str) -> None:
    with pytest.raises(mockengine.ProgramFailed) as err:
        mockengine.run(example(), secret)
    assert key in str(err.value) and "SHORT" not in str(err.value)
    assert err.value.registrations == []


def test_seed_override_must_be_stored_encrypted() -> None:
    config = {**example(), "seedOverrides": {"alice": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"}}
    with pytest.raises(mockengine.ProgramFailed) as err:
        mockengine.run(config)
    assert "totp-vps:seedOverrides" in str(err.value) and "--secret" in str(err.value)
    assert "JBSWY3DP" not in str(err.value)
    assert err.value.registrations == []


def test_there_are_at_least_twenty_bad_configs() -> None:
    assert len(BAD_CONFIGS) >= 20
