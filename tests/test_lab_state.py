"""The lab's state survives runs (no VM: the program part, through the functions `python -m lab` calls).

Two runs of the real program against the same state folder give the same seeds, keys, host key and outputs, as
`pulumi up` keeps a stack's state; --fresh, a rotation or a new admin change exactly what they should. The stateful
mock engine makes real randomness for what it creates. Files holding secrets are 0600 in a 0700 folder.
"""

from __future__ import annotations

import copy
import json
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from configs import ed25519_key
from conftest import require_tool

from agent import state as st
from cloudinit import cloudconfig
from components import mockengine
from lab import show, stack
from lab.state import LabState, config_name
from lab.up import LabStack, up
from vpsctl.errors import CliError


def values(admins: tuple[str, ...] = ("alice", "bob"), **server: Any) -> dict[str, Any]:
    return {
        "issuer": "lab-test",
        "admins": [{"name": name, "sshKeys": [ed25519_key(f"{name}@laptop")[1]]} for name in admins],
        "defaults": {"allowedCidrs": ["198.51.100.0/24"]},
        "servers": [{"name": "web-1", **server}],
    }


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"config": {f"totp-vps:{k}": v for k, v in config.items()}}))
    return path


def lab_up(config: Path, state_dir: Path, *, server: str | None = None, release: str = "debian-12",
           identities: dict[str, dict[str, str]] | None = None) -> tuple[LabState, LabStack]:
    """What `python -m lab` does before it boots: read the config, open the state, run the program."""
    choice = stack.choose(stack.load_document(config), server)
    state = LabState.open(state_dir, server=choice.server.name, create=True)
    with state.writing():
        return state, up(choice, state, release, identities or {})


def seeds(lab: LabStack) -> dict[str, str]:
    return {a: str(lab.enrollment(a)["otpauthUri"]) for a in lab.server.admin_names}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_two_runs_keep_every_secret_and_give_identical_outputs(tmp_path: Path) -> None:
    config = write_config(tmp_path / "Pulumi.dev.yaml", values())
    state, first = lab_up(config, tmp_path / "state")
    outputs, engine = state.outputs.read_bytes(), state.engine.read_bytes()
    keys = {n: state.key_file(n).read_bytes() for n in ("alice", "bob")}
    assert len(first.made) == 7, first.made  # 2 x (seed, codes), the host key, the signing and the bootstrap key

    state, second = lab_up(config, tmp_path / "state")
    assert second.made == ()
    assert state.outputs.read_bytes() == outputs and state.engine.read_bytes() == engine
    assert {n: state.key_file(n).read_bytes() for n in keys} == keys
    assert seeds(second) == seeds(first) and second.host_key == first.host_key
    assert second.user_data == first.user_data
    # outputs.json is what `pulumi stack output --json --show-secrets` gives: the program's outputs, secrets shown.
    assert json.loads(outputs) == second.outputs and "BEGIN OPENSSH PRIVATE KEY" in second.outputs["sync"]["signingKey"]
    assert state.known_hosts.read_text() == f"web-1 {' '.join(first.host_key.split()[:2])}\n"


def test_fresh_makes_new_seeds_keys_and_host_key(tmp_path: Path) -> None:
    config = write_config(tmp_path / "Pulumi.dev.yaml", values())
    state, first = lab_up(config, tmp_path / "state")
    key = state.key_file("alice").read_bytes()
    state.fresh()
    state, again = lab_up(config, tmp_path / "state")
    assert len(again.made) == 7
    assert set(seeds(again).values()).isdisjoint(seeds(first).values())
    assert again.host_key != first.host_key and state.key_file("alice").read_bytes() != key
    assert again.outputs["sync"]["signingKey"] != first.outputs["sync"]["signingKey"]


def test_the_stack_changes_only_what_the_config_asks_for(tmp_path: Path) -> None:
    config = values(("alice", "bob"))
    state, first = lab_up(write_config(tmp_path / "Pulumi.dev.yaml", config), tmp_path / "state")
    changed = copy.deepcopy(config)
    changed["admins"][0]["rotation"] = 1  # alice: a new seed and codes, the old seed kept for the sync
    changed["admins"][1:] = [{"name": "carol", "sshKeys": [ed25519_key("carol@laptop")[1]]}]  # bob out, carol in
    state, second = lab_up(write_config(tmp_path / "Pulumi.dev.yaml", changed), tmp_path / "state")
    made = {urn.rpartition("::")[2] for urn in second.made}
    assert made == {"web-1-alice-totp-seed-b", "web-1-alice-backup-codes", "web-1-carol-totp-seed-a",
                    "web-1-carol-backup-codes"}, made
    assert seeds(second)["alice"] != seeds(first)["alice"] and second.host_key == first.host_key
    previous = second.outputs["sync"]["previousSeeds"]["web-1"]["alice"]
    assert f"secret={previous}&" in seeds(first)["alice"], "the seed before the rotation is kept for the sync"
    engine = state.read(state.engine)["resources"]
    assert not [urn for urn in engine if "-bob-" in urn], "bob's secrets are gone from the state, as pulumi up deletes them"
    assert state.key_file("carol").exists() and state.key_file("bob").exists()  # bob's key waits in case he comes back
    carol = next(a for a in second.outputs["desiredState"]["web-1"]["admins"] if a["name"] == "carol")
    assert carol["keys"] == [state.key("carol").public]


def test_new_randomness_is_real_and_the_engine_state_is_checked() -> None:
    config = values()
    runs = [mockengine.StatefulMocks() for _ in range(2)]
    outputs = [mockengine.unwrap(mockengine.run(config, mocks=m, stack="lab").stack_outputs) for m in runs]
    # The deterministic engine would give both runs the same seeds; real randomness never does.
    assert outputs[0]["enrollment"]["web-1"]["alice"]["otpauthUri"] != outputs[1]["enrollment"]["web-1"]["alice"]["otpauthUri"]
    assert outputs[0]["servers"]["web-1"]["hostPublicKey"] != outputs[1]["servers"]["web-1"]["hostPublicKey"]
    with pytest.raises(ValueError, match="not a mock engine state"):
        mockengine.StatefulMocks({"resources": {}})


def test_the_guest_boots_the_user_data_the_program_registered(tmp_path: Path) -> None:
    config = write_config(tmp_path / "Pulumi.dev.yaml", values(sshPort=2222, image="ubuntu-24.04"))
    _state, lab = lab_up(config, tmp_path / "state", release=stack.guest_release("ubuntu-24.04"))
    assert lab.server.image == "debian-12" and lab.server.ssh_port == 2222  # the image mapped, the port as written
    booted = cloudconfig.state_of(cloudconfig.read(lab.user_data))
    assert st.serial(booted) == lab.outputs["servers"]["web-1"]["desiredSerial"]


def test_file_modes_and_the_enrollment_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    zbarimg = require_tool("zbarimg")
    state, lab = lab_up(write_config(tmp_path / "Pulumi.dev.yaml", values(admins=("alice",))), tmp_path / "state")
    assert mode(state.path) == 0o700 and mode(state.keys) == 0o700
    for secret in (state.engine, state.outputs, state.lab_file, state.key_file("alice")):
        assert mode(secret) == 0o600, secret
    show.enrollment(lab, "alice", state.path, uri=True)
    shown = capsys.readouterr().out
    uri = str(lab.enrollment("alice")["otpauthUri"])
    assert uri in shown and "Backup codes (each works once): " + " ".join(lab.enrollment("alice")["backupCodes"]) in shown
    png, svg = state.path / "alice.png", state.path / "alice.svg"
    assert mode(png) == mode(svg) == 0o600 and svg.read_text().lstrip().startswith("<?xml")
    decoded = subprocess.run([zbarimg, "--raw", "-q", str(png)], capture_output=True, text=True, check=True).stdout.strip()
    assert decoded == uri


def test_sudo_totp_admins_get_the_sudo_enrollment_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = values(admins=("alice",))
    config["admins"][0]["sudo"] = "totp"
    state, lab = lab_up(write_config(tmp_path / "Pulumi.dev.yaml", config), tmp_path / "state")
    show.enrollment(lab, "alice", state.path, uri=False)
    shown = capsys.readouterr().out
    assert "alice@web-1 sudo (lab-test)" in shown and "otpauth://" not in shown
    assert (state.path / "alice-sudo.png").exists() and mode(state.path / "alice-sudo.svg") == 0o600


def test_your_own_key_replaces_the_throwaway_one(tmp_path: Path) -> None:
    _private, line = ed25519_key("mine")
    identity = {"alice": {"file": str(tmp_path / "id_mine"), "public": line}}
    _state, lab = lab_up(write_config(tmp_path / "Pulumi.dev.yaml", values()), tmp_path / "state", identities=identity)
    keys = {a["name"]: a["keys"] for a in lab.outputs["desiredState"]["web-1"]["admins"]}
    assert keys["alice"] == [line] and keys["bob"] != [line]


def test_errors_name_the_setting_where_the_user_wrote_it(tmp_path: Path) -> None:
    config = values()
    config["servers"] = [{"name": "web-1"}, {"name": "db-1", "image": "ubuntu-26.04", "penaltyExemptCidrs": ["198.51.100.0/28"]}]
    path = write_config(tmp_path / "Pulumi.dev.yaml", config)
    assert stack.guest_release("ubuntu-26.04") == "debian-13"  # its sshd has PerSourcePenalties: so has the guest
    _state, lab = lab_up(path, tmp_path / "db", server="db-1", release="debian-13")
    assert lab.server.image == "debian-13" and lab.server.penalty_exempt_cidrs == ("198.51.100.0/28",)
    with pytest.raises(ValueError, match=r"^servers\[1\]\.penaltyExemptCidrs: needs OpenSSH >= 9\.8"):
        lab_up(path, tmp_path / "db12", server="db-1", release="debian-12")  # --image debian-12 for that server
    config["defaults"]["allowedCidrs"] = ["198.51.100.7/24"]
    with pytest.raises(ValueError, match=r"^defaults\.allowedCidrs\[0\] \(inherited by web-1\): is not a network address"):
        lab_up(write_config(path, config), tmp_path / "bad")


def test_a_state_folder_holds_one_lab_and_nothing_else(tmp_path: Path) -> None:
    busy = tmp_path / "home"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine\n")
    before = mode(busy)
    with pytest.raises(CliError, match="is not empty and holds no lab state"):
        LabState.open(busy, server="web-1", create=True)
    assert mode(busy) == before and [p.name for p in busy.iterdir()] == ["notes.txt"], "a refused folder is left as it was"
    config = values()
    config["servers"].append({"name": "db-1"})
    path = write_config(tmp_path / "Pulumi.dev.yaml", config)
    lab_up(path, tmp_path / "state")
    with pytest.raises(CliError, match="holds the lab of server 'web-1', not 'db-1'"):
        lab_up(path, tmp_path / "state", server="db-1")
    assert config_name(path) == "dev" and config_name(Path("stack.yml")) == "stack"


def test_identity_is_a_private_key_whose_public_half_the_lab_derives(tmp_path: Path) -> None:
    keygen = require_tool("ssh-keygen")
    for kind, bits in (("ed25519", []), ("rsa", ["-b", "2048"])):
        subprocess.run([keygen, "-q", "-t", kind, *bits, "-N", "", "-C", "me", "-f", str(tmp_path / kind)], check=True)
    public = (tmp_path / "ed25519.pub").read_text().split()
    assert stack.identity_public(tmp_path / "ed25519").split()[:2] == public[:2]
    with pytest.raises(CliError, match=r"^--identity: .*ed25519\.pub is a public key; give the private key file"):
        stack.identity_public(tmp_path / "ed25519.pub")
    renamed = tmp_path / "looks-private"
    renamed.write_text((tmp_path / "ed25519.pub").read_text())
    with pytest.raises(CliError, match="is a public key"):
        stack.identity_public(renamed)  # by its content, whatever the name
    with pytest.raises(ValueError, match=r"^--identity: RSA keys need at least 3072 bits"):
        stack.identity_public(tmp_path / "rsa")  # the servers would refuse it: said before anything is made


def test_service_accounts_get_lab_keys_and_the_operator_the_lab_key_file(tmp_path: Path) -> None:
    config = values()
    config["serviceAccounts"] = [{"name": "deploy", "sshKeys": [ed25519_key("deploy@ci")[1]], "fromCidrs": ["198.51.100.0/28"]}]
    config["operator"] = {"admin": "bob", "identityFile": "~/.ssh/id_ed25519"}
    state, lab = lab_up(write_config(tmp_path / "Pulumi.dev.yaml", config), tmp_path / "state")
    account = lab.outputs["desiredState"]["web-1"]["serviceAccounts"][0]
    blob = state.key("deploy").public.split()[1]
    assert mode(state.key_file("deploy")) == 0o600 and len(account["keys"]) == 1 and blob in account["keys"][0]
    assert account["fromCidrs"] == ["198.51.100.0/28"], "the account's networks stay as written"
    assert lab.outputs["operator"] == {"admin": "bob", "identityFile": str(state.key_file("bob"))}
