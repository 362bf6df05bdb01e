"""vpsctl preflight against a local stand-in of the Hetzner API (tests/hetzner_api.py), through the
official hcloud library: one test per finding, a clean run, bad input; the token is never printed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hetzner_api import FakeHetzner, firewall, server, server_type, ssh_key

from cloudinit import catalogue
from components.naming import OWNER_LABEL
from vpsctl.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "Pulumi.example.yaml"
TOKEN = "hcloud-test-token-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN"  # noqa: S105 - a stand-in
OURS = {OWNER_LABEL: "totp-vps.prod"}
EXAMPLE_FIREWALLS = ("totp-vps-prod-fw-tcp22-icmp-1189d3", "totp-vps-prod-fw-tcp2222-icmp-egress-404145")


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHetzner]:
    fake = FakeHetzner(token=TOKEN)
    with fake.serve() as endpoint:
        monkeypatch.setenv("HCLOUD_ENDPOINT", endpoint)
        monkeypatch.setenv("HCLOUD_TOKEN", TOKEN)
        monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no pulumi CLI: the token comes from HCLOUD_TOKEN
        yield fake


def stack_file(tmp_path: Path, change: Callable[[dict[str, Any]], None] | None = None) -> Path:
    document = yaml.safe_load(EXAMPLE.read_text())
    if change:
        change(document["config"])
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def preflight(capsys: pytest.CaptureFixture[str], path: Path, *extra: str) -> tuple[int, list[str], str]:
    code = main(["preflight", "--config", str(path), *extra])
    out, err = capsys.readouterr()
    assert TOKEN not in out + err, "the token was printed"
    return code, out.splitlines(), err


def findings(lines: list[str]) -> list[str]:
    return lines[:-1]  # the last line sums up


def set_type(api: FakeHetzner, name: str, **per_location: dict[str, Any]) -> None:
    """Replace server type ``name``'s per-location entries with ``per_location``."""
    for i, kind in enumerate(api.data["server_types"]):
        if kind["name"] == name:
            api.data["server_types"][i] = server_type(kind["id"], name, per_location)


def test_clean_run(api: FakeHetzner, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, lines, err = preflight(capsys, stack_file(tmp_path))
    assert code == 0, lines
    assert lines == ["no findings: 2 servers of stack prod fit the Hetzner project"]
    assert "does not expose the account's server limit" in err and "recognised by label only" in err
    pages = [q["page"][0] for path, q in api.requests if path == "/v1/server_types"]
    assert len(pages) > 1, "the server types came in one page: pagination was not exercised"
    assert {path for path, _ in api.requests} == {f"/v1/{c}" for c in ("server_types", "locations", "images", "firewalls",
                                                                        "servers", "ssh_keys")}


def test_our_own_resources_are_no_collision(api: FakeHetzner, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    api.data["servers"] = [server(1, "web-1", OURS), server(2, "db-1", OURS)]
    api.data["firewalls"] = [firewall(10 + i, name, OURS) for i, name in enumerate(EXAMPLE_FIREWALLS)]
    api.data["ssh_keys"] = [ssh_key(5, "totp-vps-prod-bootstrap", OURS)]
    code, lines, _ = preflight(capsys, stack_file(tmp_path))
    assert code == 0, lines


def test_type_not_among_hetzners_types(api: FakeHetzner, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    api.data["server_types"] = [t for t in api.data["server_types"] if t["name"] != "cx23"]
    code, lines, _ = preflight(capsys, stack_file(tmp_path))
    assert code == 1
    assert findings(lines) == [
        f"servers[{i}].serverType: cx23 is not among Hetzner's server types any more (cloudinit/catalogue.py, "
        f"{catalogue.VERSION}, still lists it)" for i in (0, 1)
    ]


def test_type_not_offered_in_the_location(api: FakeHetzner, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    set_type(api, "cx23", fsn1={}, hel1={})  # db-1 runs in nbg1
    code, lines, _ = preflight(capsys, stack_file(tmp_path))
    assert (code, findings(lines)) == (1, ["servers[1].serverType: cx23 is not offered in nbg1 (offered in fsn1, hel1)"])


def test_type_sold_out(api: FakeHetzner, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    set_type(api, "cx23", fsn1={"available": False}, nbg1={})
    code, lines, _ = preflight(capsys, stack_file(tmp_path))
    assert code == 1
    assert findings(lines) == ["servers[0].serverType: cx23 is sold out in fsn1 right now (try another location or type)"]


def test_type_deprecated_in_the_location(api: FakeHetzner, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    soon = {"announced": "2026-10-01T00:00:00+00:00", "unavailable_after": "2099-01-01T00:00:00+00:00"}
    gone = {"announced": "2025-10-16T00:00:00+00:00", "unavailable_after": "2026-01-01T00:00:00+00:00"}
    set_type(api, "cx23", fsn1={"deprecation": soon}, nbg1={"deprecation": gone})
    code, lines, _ = preflight(capsys, stack_file(tmp_path))
    assert code == 1
    assert findings(lines) == [
        "servers[0].serverType: cx23 is deprecated in fsn1, orderable until 2099-01-01",
        "servers[1].serverType: cx23 cannot be ordered in nbg1 since 2026-01-01 (deprecated)",
    ]


def test_location_unknown_to_the_api(api: FakeHetzner, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    api.data["locations"] = [loc for loc in api.data["locations"] if loc["name"] != "nbg1"]
    code, lines, _ = preflight(capsys, stack_file(tmp_path))
    assert (code, findings(lines)) == (1, ["servers[1].location: nbg1 is not a location of the Hetzner API"])


def test_image_without_a_build_for_the_architecture(api: FakeHetzner, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    api.data["images"] = [i for i in api.data["images"] if (i["name"], i["architecture"]) != ("debian-13", "arm")]
    path = stack_file(tmp_path, lambda c: c["totp-vps:servers"][1].update(serverType="cax21"))
    code, lines, _ = preflight(capsys, path)
    assert (code, findings(lines)) == (1, ["servers[1].image: Hetzner has no arm build of debian-13 (for cax21)"])


def test_deprecated_image(api: FakeHetzner, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for i in api.data["images"]:
        if i["name"] == "debian-12" and i["architecture"] == "x86":
            i["deprecation"] = {"announced": "2026-06-30T00:00:00+00:00", "unavailable_after": "2099-06-30T00:00:00+00:00"}
    code, lines, _ = preflight(capsys, stack_file(tmp_path))
    assert code == 1
    assert findings(lines) == ["servers[0].image: Hetzner deprecated its x86 build of debian-12 (usable until 2099-06-30)"]


def test_firewall_limit(api: FakeHetzner, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    api.data["firewalls"] = [firewall(100 + i, f"other-{i}") for i in range(49)]
    code, lines, _ = preflight(capsys, stack_file(tmp_path))
    assert code == 1
    assert findings(lines) == ["firewalls: the project has 49 and this stack adds 2: 51, over Hetzner's 50 per project"]
    api.data["firewalls"] = api.data["firewalls"][:48]
    assert preflight(capsys, stack_file(tmp_path))[0] == 0, "48 + 2 fit"


def test_server_name_taken(api: FakeHetzner, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    api.data["servers"] = [server(77, "db-1", {"team": "other"})]
    code, lines, _ = preflight(capsys, stack_file(tmp_path))
    assert code == 1
    assert findings(lines) == [
        "servers[1].name: a server named db-1 exists in the project (id 77) and is not this stack's "
        f"(no label {OWNER_LABEL}=totp-vps.prod)"
    ]


def test_firewall_name_taken(api: FakeHetzner, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    api.data["firewalls"] = [firewall(42, EXAMPLE_FIREWALLS[0], {OWNER_LABEL: "totp-vps.staging"})]
    code, lines, _ = preflight(capsys, stack_file(tmp_path))
    assert code == 1
    assert findings(lines) == [
        f"firewall {EXAMPLE_FIREWALLS[0]} (servers web-1): the name is taken by firewall 42, which is not this stack's "
        f"(no label {OWNER_LABEL}=totp-vps.prod)"
    ]


def test_ssh_key_name_taken(api: FakeHetzner, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    api.data["ssh_keys"] = [ssh_key(9, "totp-vps-prod-bootstrap")]
    code, lines, _ = preflight(capsys, stack_file(tmp_path))
    assert code == 1
    assert findings(lines) == ["SSH key totp-vps-prod-bootstrap: the name is taken by key 9, which is not this stack's"]


def test_wrong_token_is_one_line_exit_2(api: FakeHetzner, capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HCLOUD_TOKEN", TOKEN[::-1])
    code = main(["preflight", "--config", str(stack_file(tmp_path))])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err == "vpsctl preflight: error: Hetzner API: unauthorized: unable to authenticate\n"
    assert TOKEN[::-1] not in err


@pytest.mark.parametrize(
    ("setup", "expect"),
    [
        (lambda mp, tmp: mp.delenv("HCLOUD_TOKEN"), "no Hetzner token"),
        (lambda mp, tmp: None, "cannot tell the stack name from"),
        (lambda mp, tmp: mp.setenv("HCLOUD_ENDPOINT", "http://127.0.0.1:9/v1"), "could not connect"),
    ],
    ids=["no-token", "unnamed-file", "no-api"],
)
def test_bad_input_is_one_line_exit_2(api: FakeHetzner, capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch, setup: Any, expect: str) -> None:
    setup(monkeypatch, tmp_path)
    path = stack_file(tmp_path)
    if expect.startswith("cannot tell"):
        path = path.rename(tmp_path / "stack.yaml")
    code = main(["preflight", "--config", str(path)])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "") and len(err.splitlines()) == 1 and expect in err, err
    assert TOKEN not in err


def test_bad_config_exits_2_before_asking_the_api(api: FakeHetzner, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = stack_file(tmp_path, lambda c: c["totp-vps:defaults"].update(serverType="cx22"))
    code = main(["preflight", "--config", str(path)])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    # Named where it was written: the defaults, and the server that inherited it.
    assert err.strip() == ("vpsctl preflight: error: defaults.serverType (inherited by web-1): cx22 was removed from "
                           "Hetzner's catalogue on 2026-01-01; use cx23 (got 'cx22')")
    assert api.requests == []


def test_command_line_entry_point(api: FakeHetzner, tmp_path: Path) -> None:
    """As a user runs it: python -m vpsctl preflight --stack NAME, in the stack's directory."""
    stack_file(tmp_path, lambda c: c["totp-vps:defaults"].update(serverType="cax11"))
    (tmp_path / "Pulumi.yaml").write_text("name: totp-vps\nruntime: python\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "vpsctl", "preflight", "--stack", "prod"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "no findings: 2 servers of stack prod fit the Hetzner project\n"
    assert TOKEN not in done.stdout + done.stderr
    architectures = {q["architecture"][0] for path, q in api.requests if path == "/v1/images"}
    assert architectures == {"arm"}, "cax types need arm images"
