"""The hardened algorithm lists against ssh-audit, paramiko and the OpenSSH client, on a real sshd."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from conftest import require, require_root, require_tool
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sshd_harness import Server, free_port, load_private_key, running_server

from cloudinit import Admin, hardening, render_user_data
from cloudinit import Server as ServerSpec
from cloudinit.secrets import AdminSecrets, fresh_admin_secrets, fresh_key_pair

ADMIN = "alice"


@pytest.fixture(scope="module")
def keyfile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An Ed25519 private key file (0600) for the OpenSSH client, and its public line."""
    private = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path_factory.mktemp("client") / "id_ed25519"
    text = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    path.write_bytes(text)
    path.chmod(0o600)
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return path, f"{public} {ADMIN}@laptop"


def render(public_key: str) -> tuple[str, AdminSecrets]:
    """User-data for one admin on a port of its own (servers running at once cannot share one)."""
    server = ServerSpec(name="web-1", admins=(Admin(name=ADMIN, ssh_keys=(public_key,)),), allowed_cidrs=("198.51.100.0/24",),
                        ssh_port=free_port())
    secrets = fresh_admin_secrets(server.backup_codes)
    return render_user_data(server, {ADMIN: secrets}, fresh_key_pair(), fresh_key_pair().public_openssh), secrets


@pytest.fixture(scope="module")
def rendered(keyfile: tuple[Path, str]) -> tuple[str, AdminSecrets]:
    return render(keyfile[1])


@pytest.fixture(scope="module")
def sshd(rendered: tuple[str, AdminSecrets]) -> Iterator[Server]:
    require_root()
    require_tool("sshd")
    with running_server(rendered[0]) as server:
        assert server.activation is not None and server.activation.returncode == 0, server.logs()
        yield server


def ssh_audit_tool() -> str:
    # The venv's console script sits next to the interpreter running the tests.
    candidate = Path(sys.executable).parent / "ssh-audit"
    path = str(candidate) if candidate.exists() else shutil.which("ssh-audit")
    require(path is not None, "needs ssh-audit (requirements-dev.txt)")
    assert path is not None
    return path


def audit(port: int) -> dict[str, Any]:
    result = subprocess.run([ssh_audit_tool(), "-j", "--skip-rate-test", f"127.0.0.1:{port}"],
                            capture_output=True, text=True, check=False, timeout=60)
    # Exit status: 0 clean, 2 warnings, 3 failures; the JSON says which items.
    assert result.stdout.strip(), result.stderr
    report = json.loads(result.stdout)
    assert report.get("banner", {}).get("software", "").startswith("OpenSSH"), "ssh-audit did not reach the server"
    return report


def failures(report: dict[str, Any]) -> list[str]:
    """Every item ssh-audit rates "fail", as 'section algorithm: reason', plus known CVEs."""
    found = []
    for section in ("kex", "key", "enc", "mac"):
        for item in report.get(section, []):
            for reason in item.get("notes", {}).get("fail", []):
                found.append(f"{section} {item['algorithm']}: {reason}")
    found += [f"cve {c.get('name')}" for c in report.get("cves", [])]
    found += [f"recommendation {k}" for k in report.get("recommendations", {}).get("critical", {}).get("del", {})]
    return found


# sshd directive -> the section ssh-audit files those algorithms under.
SECTIONS = {"KexAlgorithms": "kex", "Ciphers": "enc", "MACs": "mac", "HostKeyAlgorithms": "key"}
DATA = {"kex": hardening.KEX, "enc": hardening.CIPHERS, "mac": hardening.MACS, "key": hardening.HOST_KEY_ALGORITHMS}


def lookup(names: list[str]) -> dict[tuple[str, str], list[str]]:
    """ssh-audit's offline ratings: (section, algorithm) -> notes like '[fail] ...', '[info] ...'."""
    command = [ssh_audit_tool(), "-n", "--lookup", ",".join(names)]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    notes: dict[tuple[str, str], list[str]] = {}
    current: tuple[str, str] | None = None
    for line in result.stdout.splitlines():
        if found := re.match(r"\((kex|key|mac|enc)\) (\S+)\s+-- (.*)$", line):
            current = (found.group(1), found.group(2))
            notes[current] = [found.group(3)]
        elif (found := re.match(r"\s+`- (.*)$", line)) and current:
            notes[current].append(found.group(1))
        else:
            current = None
    assert notes, result.stdout + result.stderr
    return notes


@pytest.mark.parametrize("image", sorted(hardening.IMAGES))
def test_ssh_audit_rates_no_listed_algorithm_fail_for_any_image(image: str) -> None:
    """Offline, so images whose OpenSSH this host does not run are covered too."""
    crypto = hardening.crypto_for(image)
    names = [n for directive in SECTIONS for n in crypto[directive].split(",")]
    notes = lookup(names)
    for directive, section in SECTIONS.items():
        for name in crypto[directive].split(","):
            assert (section, name) in notes, f"{image} {directive}: ssh-audit does not know {name}"
            failed = [n for n in notes[section, name] if n.startswith("[fail]")]
            assert not failed, f"{image} {directive} {name}: {failed}"


def test_since_versions_are_never_earlier_than_ssh_audit_says() -> None:
    """An algorithm listed for an OpenSSH older than the one that introduced it would make that image's
    sshd refuse its config (a locked-out server)."""
    notes = lookup([name for algorithms in DATA.values() for name, _ in algorithms])
    for section, algorithms in DATA.items():
        for name, since in algorithms:
            for note in notes.get((section, name), []):
                if found := re.search(r"available since OpenSSH (\d+)\.(\d+)", note):
                    first = (int(found.group(1)), int(found.group(2)))
                    assert since >= first, f"{name}: listed since OpenSSH {since}, ssh-audit says {first}"


def test_ssh_audit_reports_no_fail(sshd: Server) -> None:
    assert failures(audit(sshd.port)) == []


def test_guard_ssh_audit_failures_are_detected(keyfile: tuple[Path, str]) -> None:
    """Debian's stock algorithm lists DO fail ssh-audit: the check above can see a fail. Before the first boot's
    activation sshd runs the lockdown drop-in, which sets no algorithm: the image's defaults."""
    require_root()
    with running_server(render(keyfile[1])[0], boot=False) as stock:
        assert failures(audit(stock.port)), "ssh-audit found nothing to fail in Debian's defaults"
    # The offline lookup sees a fail too.
    assert lookup(["hmac-sha1"])["mac", "hmac-sha1"][0].startswith("[fail]")


def test_paramiko_negotiates_and_logs_in(sshd: Server, keyfile: tuple[Path, str], rendered: tuple[str, AdminSecrets]) -> None:
    key = load_private_key(keyfile[0].read_text())
    result = sshd.login(ADMIN, key=key, code=pyotp.TOTP(rendered[1].seed).at(time.time()))
    assert result.accepted, f"{result}\n{sshd.logs()}"
    assert result.host_key == sshd.host_key


def test_openssh_client_negotiates_and_reaches_authentication(sshd: Server, keyfile: tuple[Path, str], tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {sshd.host_key}\n")
    result = subprocess.run(
        [require_tool("ssh"), "-v", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={known_hosts}", "-o", "IdentitiesOnly=yes", "-i", str(keyfile[0]),
         "-p", str(sshd.port), f"{ADMIN}@127.0.0.1", "true"],
        capture_output=True, text=True, check=False, timeout=30, env={**os.environ, "SSH_AUTH_SOCK": ""},
    )  # fmt: skip
    # Key exchange and the pinned host key passed; the key was the first factor; BatchMode cannot type
    # the code, so the server refuses at the second factor (not a kex or host-key failure).
    assert result.returncode == 255
    assert "no matching" not in result.stderr and "Host key verification failed" not in result.stderr, result.stderr
    assert "Authenticated using \"publickey\" with partial success" in result.stderr, result.stderr
    assert "Permission denied (keyboard-interactive)" in result.stderr, result.stderr
