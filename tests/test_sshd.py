"""The rendered sshd drop-in and PAM file on the host's real OpenSSH server: config checks and logins.

Every login goes to a real /usr/sbin/sshd with Debian's sshd_config plus the rendered files (see
sshd_harness). Each concern has its own admin, so the TOTP rate limit (3 logins / 30 s, successes
included) and the no-reuse rule of one never disturb another.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pyotp
import pytest
from conftest import require_root, require_tool
from sshd_harness import LOCKDOWN_DROPIN, PAM_FILE, REAL_DROPIN, Sshd, effective, new_key, running_sshd, sshd_config

from cloudinit import Admin, Server, hardening, render_user_data
from cloudinit.render import effective_settings, write_files
from cloudinit.secrets import AdminSecrets, fresh_admin_secrets, fresh_key_pair
from lab.ssh import Login

# One admin per concern (see the module docstring).
ADMINS = ("ok", "keyonly", "wrongcode", "nokey", "reuse", "scratch", "ratelimit", "nofile", "pw", "agent")
HOST_FILES = ("/etc/passwd", "/etc/shadow", "/etc/group", "/etc/pam.d/sshd", "/etc/ssh/ssh_host_ed25519_key")


@dataclass
class Fleet:
    """One rendered server and the private halves of everything in it."""

    server: Server
    user_data: str
    keys: dict[str, paramiko.PKey]
    secrets: dict[str, AdminSecrets]

    def totp(self, user: str) -> pyotp.TOTP:
        return pyotp.TOTP(self.secrets[user].seed)

    def code(self, user: str, steps_ahead: int = 0) -> str:
        """The TOTP code ``steps_ahead`` 30-s steps from now (WINDOW_SIZE 3 accepts one step either side)."""
        return self.totp(user).at(time.time() + 30 * steps_ahead)

    def wrong_code(self, user: str) -> str:
        valid = {self.code(user, k) for k in range(-3, 4)}
        guess = (int(self.code(user)) + 500_000) % 1_000_000
        while f"{guess:06d}" in valid:
            guess = (guess + 1) % 1_000_000
        return f"{guess:06d}"


# Admins whose key is not Ed25519: every key type the model accepts (bar security keys) must log in.
KEY_KINDS = {"rsa": "rsa", "ecdsa256": "ecdsa-p256", "ecdsa384": "ecdsa-p384", "ecdsa521": "ecdsa-p521"}


def make_fleet(image: str = "debian-12", admins: tuple[str, ...] = ADMINS) -> Fleet:
    keys: dict[str, paramiko.PKey] = {}
    people = []
    for name in admins:
        keys[name], public = new_key(f"{name}@laptop", KEY_KINDS.get(name, "ed25519"))
        people.append(Admin(name=name, ssh_keys=(public,)))
    server = Server(name="web-1", admins=tuple(people), allowed_cidrs=("198.51.100.0/24",), image=image)
    secrets = {name: fresh_admin_secrets(server.backup_codes) for name in admins}
    return Fleet(server=server, user_data=render_user_data(server, secrets, fresh_key_pair()), keys=keys, secrets=secrets)


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return make_fleet(admins=ADMINS + tuple(KEY_KINDS))


@pytest.fixture(scope="module")
def root_key() -> tuple[paramiko.PKey, str]:
    return new_key("root@laptop")


@pytest.fixture(scope="module")
def sshd(fleet: Fleet, root_key: tuple[paramiko.PKey, str]) -> Iterator[Sshd]:
    require_root()
    require_tool("sshd")
    with running_sshd(fleet.user_data, files={"/home/nofile/.google_authenticator": None}, root_keys=[root_key[1]]) as server:
        yield server


def fresh_key() -> paramiko.PKey:
    return new_key("stranger")[0]


# ------------------------------------------------------------------------- assertions (and guards)


def assert_accepted(result: Login, server: Sshd) -> None:
    assert result.accepted, f"{result}\n{server.logs()}"
    assert result.steps == (("publickey", "partial"), ("keyboard-interactive", "success")), str(result)
    assert result.host_key == server.host_key, "the server did not present the pinned host key"


def assert_refused(result: Login, at: str) -> None:
    assert not result.accepted, str(result)
    assert result.refused_at == at, str(result)


def assert_key_only_refused(result: Login) -> None:
    """The key alone gets a partial success: the server still wants the code."""
    assert not result.accepted, f"the key alone logged in: {result}"
    assert result.steps == (("publickey", "partial"),), str(result)


def assert_no_password_prompt(result: Login) -> None:
    assert result.prompts, f"no prompt at all: {result}"
    assert not [p for p in result.prompts if "password" in p.lower()], f"a password was asked for: {result}"


def missing_effective(server: Server, sshd_t_output: str) -> list[str]:
    """The lines activate.sh demands from ``sshd -T`` that are not there (empty: safe to restart)."""
    have = set(sshd_t_output.splitlines())
    return [line for line in effective_settings(server.ssh_port) if line not in have]


# ----------------------------------------------------------------------------------- sshd -t / -T


def host_openssh() -> tuple[int, int]:
    out = subprocess.run([require_tool("ssh"), "-V"], capture_output=True, text=True, check=False).stderr
    found = re.search(r"OpenSSH_(\d+)\.(\d+)", out)
    assert found, out
    return int(found.group(1)), int(found.group(2))


@pytest.fixture(scope="module")
def sshd_t(fleet: Fleet) -> dict[str, str]:
    require_root()
    require_tool("sshd")
    checked = sshd_config(fleet.user_data, "-t")
    assert checked.returncode == 0, checked.stderr
    dumped = sshd_config(fleet.user_data, "-T")
    assert dumped.returncode == 0, dumped.stderr
    assert not missing_effective(fleet.server, dumped.stdout)
    return effective(dumped.stdout)


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("usepam", "yes"),
        ("authenticationmethods", "publickey,keyboard-interactive"),
        ("kbdinteractiveauthentication", "yes"),
        ("passwordauthentication", "no"),
        ("permitemptypasswords", "no"),
        ("permitrootlogin", "no"),
        ("pubkeyauthentication", "yes"),
        ("allowusers", " ".join(ADMINS + tuple(KEY_KINDS))),
        ("maxauthtries", str(hardening.MAX_AUTH_TRIES)),
        ("hostkey", "/etc/ssh/ssh_host_ed25519_key"),
        ("port", "22"),
        ("x11forwarding", "no"),
        ("allowtcpforwarding", "no"),
        ("allowagentforwarding", "no"),
        ("permittunnel", "no"),
        ("loglevel", "VERBOSE"),
    ],
)
def test_effective_setting(sshd_t: dict[str, str], keyword: str, value: str) -> None:
    assert sshd_t.get(keyword) == value


@pytest.mark.parametrize("directive", sorted(hardening.crypto_for("debian-12")))
def test_effective_crypto_is_the_hardening_data(sshd_t: dict[str, str], directive: str) -> None:
    assert sshd_t[directive.lower()] == hardening.crypto_for("debian-12")[directive]


def test_every_image_the_host_can_parse() -> None:
    """Each image's drop-in on this sshd: where every listed algorithm is one the host's OpenSSH has,
    sshd takes it and the effective lists are the data; where the image's list names newer algorithms,
    this older sshd refuses it (which is why every image only gets the names its own OpenSSH has)."""
    require_root()
    host = host_openssh()
    assert host >= hardening.IMAGES["debian-12"], f"CI runs Debian 12's OpenSSH or newer, found {host}"
    parsed = []
    for image in sorted(hardening.IMAGES):
        other = make_fleet(image, admins=("ok",))
        result = sshd_config(other.user_data, "-T")
        listed = hardening.KEX + hardening.CIPHERS + hardening.MACS + hardening.HOST_KEY_ALGORITHMS + hardening.PUBKEY_ALGORITHMS
        image_names = {n for values in hardening.crypto_for(image).values() for n in values.split(",")}
        too_new = sorted(n for n, since in listed if n in image_names and since > host)
        if too_new:
            assert result.returncode != 0, f"{image}: sshd {host} accepted {too_new}, which it should not know"
            continue
        assert result.returncode == 0, f"{image}: {result.stderr}"
        got = effective(result.stdout)
        for directive, value in hardening.crypto_for(image).items():
            assert got[directive.lower()] == value, f"{image} {directive}"
        assert not missing_effective(other.server, result.stdout), image
        parsed.append(image)
    assert "debian-12" in parsed and "ubuntu-22.04" in parsed, parsed


def test_custom_port_is_effective() -> None:
    require_root()
    admin = Admin(name="ok", ssh_keys=(new_key("ok")[1],))
    server = Server(name="db-1", admins=(admin,), allowed_cidrs=("198.51.100.0/24",), ssh_port=2222)
    user_data = render_user_data(server, {"ok": fresh_admin_secrets(5)}, fresh_key_pair())
    for dropin in (LOCKDOWN_DROPIN, REAL_DROPIN):  # the first boot and the activated server listen alike
        dumped = sshd_config(user_data, "-T", dropin=dropin)
        assert dumped.returncode == 0, dumped.stderr
        assert effective(dumped.stdout)["port"] == "2222", dropin
    assert missing_effective(server, dumped.stdout) == []


def test_sshd_t_misses_usepam_no_but_the_effective_check_catches_it(fleet: Fleet) -> None:
    require_root()
    dropin = str(write_files(fleet.user_data)[REAL_DROPIN]["content"])
    assert "\nUsePAM yes\n" in dropin
    broken = dropin.replace("\nUsePAM yes\n", "\nUsePAM no\n")
    checked = sshd_config(fleet.user_data, "-t", files={REAL_DROPIN: broken})
    assert checked.returncode == 0, "sshd -t now catches UsePAM no; the effective check is still the one to trust"
    dumped = sshd_config(fleet.user_data, "-T", files={REAL_DROPIN: broken})
    assert dumped.returncode == 0, dumped.stderr
    assert missing_effective(fleet.server, dumped.stdout) == ["usepam yes"]
    # What it would have done: keyboard-interactive has nothing to ask without PAM, so nobody gets in.
    with running_sshd(fleet.user_data, files={REAL_DROPIN: broken}) as locked_out:
        result = locked_out.login("ok", key=fleet.keys["ok"], code=fleet.code("ok"))
        logs = locked_out.logs()
    assert_refused(result, "publickey")
    assert "not allowed because account is locked" in logs, logs


# ------------------------------------------------------------------------------------------ logins


def test_key_and_right_code_is_accepted(sshd: Sshd, fleet: Fleet) -> None:
    result = sshd.login("ok", key=fleet.keys["ok"], code=fleet.code("ok"))
    assert_accepted(result, sshd)
    assert result.prompts == ("Verification code: ",)
    assert_no_password_prompt(result)


def test_key_only_is_refused(sshd: Sshd, fleet: Fleet) -> None:
    assert_key_only_refused(sshd.login("keyonly", key=fleet.keys["keyonly"]))


def test_key_and_wrong_code_is_refused(sshd: Sshd, fleet: Fleet) -> None:
    result = sshd.login("wrongcode", key=fleet.keys["wrongcode"], code=fleet.wrong_code("wrongcode"))
    assert_refused(result, "keyboard-interactive")
    assert result.prompts == ("Verification code: ",)


def test_code_without_key_is_refused(sshd: Sshd, fleet: Fleet) -> None:
    result = sshd.login("nokey", code=fleet.code("nokey"))
    assert_refused(result, "keyboard-interactive")
    assert result.prompts == (), "the server asked for a code before any key"


def test_an_agent_with_several_keys_still_gets_in(sshd: Sshd, fleet: Fleet) -> None:
    """MaxAuthTries counts every key an agent offers: five others before the right one must not lock out."""
    offered = [fresh_key() for _ in range(5)] + [fleet.keys["agent"]]
    result = sshd.login("agent", key=offered, code=fleet.code("agent"))
    assert result.accepted, f"{result}\n{sshd.logs()}"
    assert [o for m, o in result.steps if m == "publickey"] == ["refused"] * 5 + ["partial"]


@pytest.mark.parametrize("user", sorted(KEY_KINDS))
def test_every_accepted_key_type_logs_in(sshd: Sshd, fleet: Fleet, user: str) -> None:
    assert_accepted(sshd.login(user, key=fleet.keys[user], code=fleet.code(user)), sshd)


def test_unknown_key_is_refused(sshd: Sshd, fleet: Fleet) -> None:
    assert_refused(sshd.login("ok", key=fresh_key(), code=fleet.wrong_code("ok")), "publickey")


def test_unknown_user_is_refused(sshd: Sshd, fleet: Fleet) -> None:
    assert_refused(sshd.login("mallory", key=fleet.keys["ok"]), "publickey")


def test_root_is_refused_even_with_an_authorized_key(sshd: Sshd, root_key: tuple[paramiko.PKey, str]) -> None:
    assert_refused(sshd.login("root", key=root_key[0], code="000000"), "publickey")


def test_password_is_refused(sshd: Sshd, fleet: Fleet) -> None:
    assert_refused(sshd.login("pw", password="correct horse battery staple"), "password")
    # Not as a second factor either.
    assert_refused(sshd.login("pw", key=fleet.keys["pw"], password="correct horse battery staple"), "password")


def test_backup_code_works_once(sshd: Sshd, fleet: Fleet) -> None:
    first, second = fleet.secrets["scratch"].backup_codes[:2]
    assert_accepted(sshd.login("scratch", key=fleet.keys["scratch"], code=first), sshd)
    assert_refused(sshd.login("scratch", key=fleet.keys["scratch"], code=first), "keyboard-interactive")
    assert_accepted(sshd.login("scratch", key=fleet.keys["scratch"], code=second), sshd)


def test_same_totp_code_is_refused_the_second_time(sshd: Sshd, fleet: Fleet) -> None:
    code = fleet.code("reuse")
    assert_accepted(sshd.login("reuse", key=fleet.keys["reuse"], code=code), sshd)
    assert_refused(sshd.login("reuse", key=fleet.keys["reuse"], code=code), "keyboard-interactive")
    # The refusal was about the reused code, not a lockout: the next step's code works.
    assert_accepted(sshd.login("reuse", key=fleet.keys["reuse"], code=fleet.code("reuse", 1)), sshd)


def test_rate_limit_kicks_in(sshd: Sshd, fleet: Fleet) -> None:
    key = fleet.keys["ratelimit"]
    backup = fleet.secrets["ratelimit"].backup_codes
    for code in (fleet.code("ratelimit"), fleet.code("ratelimit", 1), backup[0]):
        assert_accepted(sshd.login("ratelimit", key=key, code=code), sshd)
    # A fourth login inside 30 s, with a valid unused code, is refused.
    fourth = sshd.login("ratelimit", key=key, code=backup[1])
    assert_refused(fourth, "keyboard-interactive")
    assert fourth.prompts == (), "the rate limit should refuse before asking for a code"
    # pam_google_authenticator's RATE_LIMIT message (it calls every attempt in the window "concurrent").
    assert "Too many concurrent login attempts" in sshd.logs()


def test_user_without_totp_file_is_refused(sshd: Sshd, fleet: Fleet) -> None:
    assert not (sshd.homes["nofile"] / ".google_authenticator").exists()
    # The code is right (the seed is in the user-data): the missing file alone refuses the login.
    result = sshd.login("nofile", key=fleet.keys["nofile"], code=fleet.code("nofile"))
    assert_refused(result, "keyboard-interactive")


# ----------------------------------------------------------------- regression guards and lockdown


def test_guard_without_the_dropin_key_only_would_pass(fleet: Fleet) -> None:
    require_root()
    with running_sshd(fleet.user_data, dropin=None) as bare:
        result = bare.login("keyonly", key=fleet.keys["keyonly"])
    assert result.accepted, f"Debian's defaults no longer let a key alone in; this guard proves nothing: {result}"
    with pytest.raises(AssertionError):
        assert_key_only_refused(result)


def test_guard_with_common_auth_a_password_prompt_appears(fleet: Fleet) -> None:
    require_root()
    pam = str(write_files(fleet.user_data)[PAM_FILE]["content"])
    with running_sshd(fleet.user_data, files={PAM_FILE: "@include common-auth\n" + pam}) as weak:
        result = weak.login("ok", key=fleet.keys["ok"], code=fleet.code("ok"))
    assert any("password" in p.lower() for p in result.prompts), str(result)
    with pytest.raises(AssertionError):
        assert_no_password_prompt(result)


def test_lockdown_dropin_lets_nobody_in(fleet: Fleet) -> None:
    require_root()
    with running_sshd(fleet.user_data, dropin=LOCKDOWN_DROPIN) as locked:
        for user in ("ok", "reuse"):
            assert_refused(locked.login(user, key=fleet.keys[user], code=fleet.code(user)), "publickey")
            code_only = locked.login(user, code=fleet.code(user))
            assert_refused(code_only, "keyboard-interactive")
            assert code_only.prompts == ()
        assert_refused(locked.login("pw", password="correct horse battery staple"), "password")


# ------------------------------------------------------------------------------ harness hygiene


def checksums() -> dict[str, str]:
    return {path: hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in HOST_FILES if Path(path).exists()}


def processes_in(pid_namespace: str) -> set[tuple[int, str]]:
    """(pid, start time) of every process in a PID namespace. The start time tells a process from a later
    one that reuses its pid (namespace ids are reused too, so they are only compared while it lives)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "ns" / "pid") == pid_namespace:
                    found.add((int(entry.name), (entry / "stat").read_text().rsplit(")", 1)[1].split()[19]))
    return found


def alive(processes: set[tuple[int, str]]) -> set[tuple[int, str]]:
    still = set()
    for pid, started in processes:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19] == started:
                still.add((pid, started))
    return still


def test_host_etc_stays_untouched_and_teardown_is_clean() -> None:
    require_root()
    before = checksums()
    listing = sorted(p.name for p in Path("/etc/ssh/sshd_config.d").iterdir())
    other = make_fleet(admins=("solo",))
    with running_sshd(other.user_data) as server:
        assert_accepted(server.login("solo", key=other.keys["solo"], code=other.code("solo")), server)
        tree = server.homes["solo"].parent.parent
        assert "solo:" not in Path("/etc/passwd").read_text(), "the admin leaked into the host's /etc/passwd"
        port = server.port
        assert server.pid is not None
        inside = processes_in(os.readlink(f"/proc/{server.pid}/ns/pid"))
        assert len(inside) >= 1
    assert checksums() == before
    assert sorted(p.name for p in Path("/etc/ssh/sshd_config.d").iterdir()) == listing
    assert not tree.exists(), "temp dir left behind"
    assert not server.running
    assert not alive(inside), "a process of the server's namespace is still alive"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_teardown_is_clean_when_the_test_fails() -> None:
    require_root()
    other = make_fleet(admins=("solo",))
    with pytest.raises(RuntimeError, match="boom"), running_sshd(other.user_data) as server:
        tree = server.homes["solo"].parent.parent
        raise RuntimeError("boom")
    assert not server.running and not tree.exists()
