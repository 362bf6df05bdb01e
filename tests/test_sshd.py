"""The rendered configuration on the host's real OpenSSH server, PAM and sudo, applied by the real agent.

Every test here talks to a server from tests/sshd_harness.py: the user-data laid down as cloud-init would,
then the agent's first-boot activation. Each concern has its own admin, so the TOTP rate limit (3 logins /
30 s, successes included) and the no-reuse rule of one never disturb another.
"""

from __future__ import annotations

import hashlib
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from configs import Fleet, make_fleet
from conftest import require_root, require_tool
from sshd_harness import SSHD, Server, effective, new_key, running_server

from agent import state as st
from cloudinit import hardening
from cloudinit.render import effective_settings
from lab import faults
from vpsctl.sshclient import Login
from vpsctl.sync import locked_down

# One admin per concern (see the module docstring).
ADMINS = ("ok", "keyonly", "wrongcode", "nokey", "reuse", "scratch", "ratelimit", "nofile", "pw", "agent")
HOST_FILES = ("/etc/passwd", "/etc/shadow", "/etc/group", "/etc/pam.d/sshd", "/etc/ssh/ssh_host_ed25519_key", "/etc/sudoers")
# Admins whose key is not Ed25519: every key type the model accepts (bar security keys) must log in.
KEY_KINDS = {"rsa": "rsa", "ecdsa256": "ecdsa-p256", "ecdsa384": "ecdsa-p384", "ecdsa521": "ecdsa-p521"}


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return make_fleet(ADMINS + tuple(KEY_KINDS), key_kinds=KEY_KINDS)


@pytest.fixture(scope="module")
def root_key() -> tuple[paramiko.PKey, str]:
    return new_key("root@laptop")


@pytest.fixture(scope="module")
def sshd(fleet: Fleet, root_key: tuple[paramiko.PKey, str]) -> Iterator[Server]:
    require_root()
    require_tool("sshd")
    with running_server(fleet.user_data) as server:
        assert server.activation is not None and server.activation.returncode == 0, server.logs()
        # A TOTP file gone from a home (by hand): that admin is refused, never waved through.
        assert server.root(["rm", "/home/nofile/.google_authenticator"]).returncode == 0
        # root with an authorized key in the place sshd reads: still refused.
        server.write(f"{st.KEYS_DIR}/root", root_key[1] + "\n")
        yield server


def fresh_key() -> paramiko.PKey:
    return new_key("stranger")[0]


# ------------------------------------------------------------------------- assertions (and guards)


def assert_accepted(result: Login, server: Server) -> None:
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


def missing_effective(port: int, sshd_t_output: str) -> list[str]:
    """The lines the agent demands from ``sshd -T`` that are not there."""
    have = set(sshd_t_output.splitlines())
    return [line for line in effective_settings(port) if line not in have]


# ----------------------------------------------------------------------------------- sshd -t / -T


def host_openssh() -> tuple[int, int]:
    out = subprocess.run([require_tool("ssh"), "-V"], capture_output=True, text=True, check=False).stderr
    found = re.search(r"OpenSSH_(\d+)\.(\d+)", out)
    assert found, out
    return int(found.group(1)), int(found.group(2))


@pytest.fixture(scope="module")
def sshd_t(sshd: Server, fleet: Fleet) -> dict[str, str]:
    checked = sshd.root([SSHD, "-t"])
    assert checked.returncode == 0, checked.stderr
    dumped = sshd.root([SSHD, "-T"])
    assert dumped.returncode == 0, dumped.stderr
    assert not missing_effective(fleet.server.ssh_port, dumped.stdout)
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
        ("authorizedkeysfile", f"{st.KEYS_DIR}/%u"),
        ("maxauthtries", str(hardening.MAX_AUTH_TRIES)),
        ("hostkey", "/etc/ssh/ssh_host_ed25519_key"),
        ("x11forwarding", "no"),
        ("allowtcpforwarding", "no"),
        ("allowagentforwarding", "no"),
        ("permittunnel", "no"),
        ("loglevel", "VERBOSE"),
    ],
)
def test_effective_setting(sshd_t: dict[str, str], keyword: str, value: str) -> None:
    assert sshd_t.get(keyword) == value


def test_effective_port_is_the_configured_one(sshd_t: dict[str, str], fleet: Fleet) -> None:
    assert sshd_t["port"] == str(fleet.server.ssh_port)


@pytest.mark.parametrize("directive", sorted(hardening.crypto_for("debian-12")))
def test_effective_crypto_is_the_hardening_data(sshd_t: dict[str, str], directive: str) -> None:
    assert sshd_t[directive.lower()] == hardening.crypto_for("debian-12")[directive]


def test_every_image_the_host_can_run() -> None:
    """Each image's configuration on this sshd, applied by the agent: where every listed algorithm is one the
    host's OpenSSH has, the agent activates it and the effective lists are the data; where the image's list
    names newer algorithms, this older sshd refuses it and the agent keeps the lockdown (which is why every
    image only gets the names its own OpenSSH has)."""
    require_root()
    host = host_openssh()
    assert host >= hardening.IMAGES["debian-12"], f"CI runs Debian 12's OpenSSH or newer, found {host}"
    activated = []
    for image in sorted(hardening.IMAGES):
        other = make_fleet(("ok",), image=image)
        listed = hardening.KEX + hardening.CIPHERS + hardening.MACS + hardening.HOST_KEY_ALGORITHMS + hardening.PUBKEY_ALGORITHMS
        image_names = {n for values in hardening.crypto_for(image).values() for n in values.split(",")}
        too_new = sorted(n for n, since in listed if n in image_names and since > host)
        with running_server(other.user_data) as server:
            assert server.activation is not None
            if too_new:
                assert server.activation.returncode == 1, f"{image}: sshd {host} accepted {too_new}, which it should not know"
                assert "sshd -t rejects the configuration" in server.activation.stderr, server.activation.stderr
                assert "DenyUsers *" in (server.read(st.DROPIN) or ""), "a refused activation must leave the lockdown"
                continue
            assert server.activation.returncode == 0, f"{image}: {server.logs()}"
            got = effective(server.root([SSHD, "-T"]).stdout)
        for directive, value in hardening.crypto_for(image).items():
            assert got[directive.lower()] == value, f"{image} {directive}"
        activated.append(image)
    assert "debian-12" in activated and "ubuntu-22.04" in activated, activated


def test_custom_port_is_effective_before_and_after_activation() -> None:
    require_root()
    other = make_fleet(("ok",))
    port = other.server.ssh_port
    with running_server(other.user_data, boot=False) as locked:  # the first boot, before runcmd
        assert effective(locked.root([SSHD, "-T"]).stdout)["port"] == str(port)
    with running_server(other.user_data) as server:
        dumped = server.root([SSHD, "-T"])
    assert effective(dumped.stdout)["port"] == str(port)
    assert missing_effective(port, dumped.stdout) == []


@pytest.mark.parametrize("fault", ["sshd-dropin-broken", "pam-weakened"])
def test_a_first_boot_with_a_broken_state_fails_closed(fault: str) -> None:
    """The lab's faults that break the desired state itself (tests/test_vm.py boots the package fault): the
    first-boot activation says why and fails (cloud-init's runcmd reports its exit status), the lockdown
    stays, and key + a valid code is turned away with no method offered."""
    require_root()
    other = make_fleet(("ok",))
    with running_server(faults.inject(other.user_data, fault, other.server)) as server:
        assert server.activation is not None
        assert server.activation.returncode == 1, server.activation
        said = server.activation.stdout + server.activation.stderr
        assert "ACTIVATION FAILED" in said and faults.EXPECTED_REASON[fault] in said, said
        assert server.read(st.DROPIN) == st.lockdown(other.server.ssh_port)
        attempt = server.login("ok", key=other.keys["ok"], code=other.code("ok"))
    assert not attempt.accepted and locked_down(attempt), attempt


def test_sshd_t_misses_usepam_no_but_the_agent_refuses_it() -> None:
    """`sshd -t` accepts `UsePAM no` (nobody could log in: keyboard-interactive has nothing to ask); the
    agent's effective-settings check refuses it and keeps the lockdown."""
    require_root()
    other = make_fleet(("ok",))
    with running_server(other.user_data, boot=False) as server:
        state = st.unpack((server.read("/etc/totp-vps/desired.json") or "").encode())
        assert "\nUsePAM yes\n" in state["files"][st.DROPIN]
        state["files"][st.DROPIN] = state["files"][st.DROPIN].replace("\nUsePAM yes\n", "\nUsePAM no\n")
        server.write(st.DROPIN, state["files"][st.DROPIN])
        checked = server.root([SSHD, "-t"])
        assert checked.returncode == 0, "sshd -t now catches UsePAM no; the effective check is still the one to trust"
        server.write("/etc/totp-vps/desired.json", st.pack(state).decode(), "0600")
        server.write(st.DROPIN, st.lockdown(other.server.ssh_port))
        activation = server.agent("boot")
        assert activation.returncode == 1 and "usepam" in activation.stderr, activation.stderr
        assert "DenyUsers *" in (server.read(st.DROPIN) or "")
        # What it would have done, installed by hand: nobody gets in.
        server.write(st.DROPIN, state["files"][st.DROPIN])
        server.reload()
        result = server.login("ok", key=other.keys["ok"], code=other.code("ok"))
    assert_refused(result, "publickey")


# ------------------------------------------------------------------------------------------ logins


def test_key_and_right_code_is_accepted(sshd: Server, fleet: Fleet) -> None:
    result = sshd.login("ok", key=fleet.keys["ok"], code=fleet.code("ok"))
    assert_accepted(result, sshd)
    assert result.prompts == ("Verification code: ",)
    assert_no_password_prompt(result)


def test_key_only_is_refused(sshd: Server, fleet: Fleet) -> None:
    assert_key_only_refused(sshd.login("keyonly", key=fleet.keys["keyonly"]))


def test_key_and_wrong_code_is_refused(sshd: Server, fleet: Fleet) -> None:
    result = sshd.login("wrongcode", key=fleet.keys["wrongcode"], code=fleet.wrong_code("wrongcode"))
    assert_refused(result, "keyboard-interactive")
    assert result.prompts == ("Verification code: ",)


def test_code_without_key_is_refused(sshd: Server, fleet: Fleet) -> None:
    result = sshd.login("nokey", code=fleet.code("nokey"))
    assert_refused(result, "keyboard-interactive")
    assert result.prompts == (), "the server asked for a code before any key"


def test_an_agent_with_several_keys_still_gets_in(sshd: Server, fleet: Fleet) -> None:
    """MaxAuthTries counts every key an agent offers: five others before the right one must not lock out."""
    offered = [fresh_key() for _ in range(5)] + [fleet.keys["agent"]]
    result = sshd.login("agent", key=offered, code=fleet.code("agent"))
    assert result.accepted, f"{result}\n{sshd.logs()}"
    assert [o for m, o in result.steps if m == "publickey"] == ["refused"] * 5 + ["partial"]


@pytest.mark.parametrize("user", sorted(KEY_KINDS))
def test_every_accepted_key_type_logs_in(sshd: Server, fleet: Fleet, user: str) -> None:
    assert_accepted(sshd.login(user, key=fleet.keys[user], code=fleet.code(user)), sshd)


def test_unknown_key_is_refused(sshd: Server, fleet: Fleet) -> None:
    assert_refused(sshd.login("ok", key=fresh_key(), code=fleet.wrong_code("ok")), "publickey")


def test_unknown_user_is_refused(sshd: Server, fleet: Fleet) -> None:
    assert_refused(sshd.login("mallory", key=fleet.keys["ok"]), "publickey")


def test_root_is_refused_even_with_an_authorized_key(sshd: Server, root_key: tuple[paramiko.PKey, str]) -> None:
    assert_refused(sshd.login("root", key=root_key[0], code="000000"), "publickey")


def test_password_is_refused(sshd: Server, fleet: Fleet) -> None:
    assert_refused(sshd.login("pw", password="correct horse battery staple"), "password")
    # Not as a second factor either.
    assert_refused(sshd.login("pw", key=fleet.keys["pw"], password="correct horse battery staple"), "password")


def test_a_key_added_by_the_user_is_not_a_key(sshd: Server, fleet: Fleet) -> None:
    """Keys come from the root-owned file the agent writes; ~/.ssh/authorized_keys is not read."""
    stranger, public = new_key("added-by-hand")
    home = "/home/keyonly/.ssh"
    sshd.root(["sh", "-c", f"install -d -o keyonly -m 0700 {home} && echo '{public}' > {home}/authorized_keys"])
    assert_refused(sshd.login("keyonly", key=stranger), "publickey")


def test_backup_code_works_once(sshd: Server, fleet: Fleet) -> None:
    first, second = fleet.secrets["scratch"].backup_codes[:2]
    assert_accepted(sshd.login("scratch", key=fleet.keys["scratch"], code=first), sshd)
    assert_refused(sshd.login("scratch", key=fleet.keys["scratch"], code=first), "keyboard-interactive")
    assert_accepted(sshd.login("scratch", key=fleet.keys["scratch"], code=second), sshd)


def test_same_totp_code_is_refused_the_second_time(sshd: Server, fleet: Fleet) -> None:
    code = fleet.code("reuse")
    assert_accepted(sshd.login("reuse", key=fleet.keys["reuse"], code=code), sshd)
    assert_refused(sshd.login("reuse", key=fleet.keys["reuse"], code=code), "keyboard-interactive")
    # The refusal was about the reused code, not a lockout: the next step's code works.
    assert_accepted(sshd.login("reuse", key=fleet.keys["reuse"], code=fleet.code("reuse", 1)), sshd)


def test_rate_limit_kicks_in(sshd: Server, fleet: Fleet) -> None:
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


def test_user_without_totp_file_is_refused(sshd: Server, fleet: Fleet) -> None:
    assert sshd.read("/home/nofile/.google_authenticator") is None
    # The code is right (the seed is in the user-data): the missing file alone refuses the login.
    result = sshd.login("nofile", key=fleet.keys["nofile"], code=fleet.code("nofile"))
    assert_refused(result, "keyboard-interactive")


def test_admin_totp_file_is_the_admins_own_0400(sshd: Server) -> None:
    listing = sshd.root(["stat", "-c", "%U %a", "/home/ok/.google_authenticator"]).stdout.split()
    assert listing == ["ok", "400"]


# ----------------------------------------------------------------- regression guards and lockdown


def test_guard_without_the_dropin_key_only_would_pass() -> None:
    require_root()
    other = make_fleet(("keyonly",))
    with running_server(other.user_data) as server:
        server.write(st.DROPIN, f"Port {other.server.ssh_port}\nAuthorizedKeysFile {st.KEYS_DIR}/%u\n")  # no drop-in's worth
        server.reload()
        result = server.login("keyonly", key=other.keys["keyonly"])
    assert result.accepted, f"Debian's defaults no longer let a key alone in; this guard proves nothing: {result}"
    with pytest.raises(AssertionError):
        assert_key_only_refused(result)


def test_guard_with_common_auth_a_password_prompt_appears() -> None:
    require_root()
    other = make_fleet(("ok",))
    with running_server(other.user_data) as server:
        server.write("/etc/pam.d/sshd", "@include common-auth\n" + (server.read("/etc/pam.d/sshd") or ""))
        result = server.login("ok", key=other.keys["ok"], code=other.code("ok"))
    assert any("password" in p.lower() for p in result.prompts), str(result)
    with pytest.raises(AssertionError):
        assert_no_password_prompt(result)


def test_lockdown_lets_nobody_in() -> None:
    require_root()
    other = make_fleet(("ok", "pw"))
    with running_server(other.user_data, boot=False) as locked:
        assert_refused(locked.login("ok", key=other.keys["ok"], code=other.code("ok")), "publickey")
        code_only = locked.login("ok", code=other.code("ok"))
        assert_refused(code_only, "keyboard-interactive")
        assert code_only.prompts == ()
        assert_refused(locked.login("pw", password="correct horse battery staple"), "password")


# ------------------------------------------------------------------------------ harness hygiene


def checksums() -> dict[str, str]:
    return {path: hashlib.sha256(Path(path).read_bytes()).hexdigest() for path in HOST_FILES if Path(path).exists()}


def test_host_etc_stays_untouched_and_teardown_is_clean() -> None:
    require_root()
    before = checksums()
    listing = sorted(p.name for p in Path("/etc/ssh/sshd_config.d").iterdir())
    other = make_fleet(("solo",))
    with running_server(other.user_data) as server:
        assert_accepted(server.login("solo", key=other.keys["solo"], code=other.code("solo")), server)
        assert "solo:" not in Path("/etc/passwd").read_text(), "the admin leaked into the host's /etc/passwd"
        tree, port = server.dir, server.port
    assert checksums() == before
    assert sorted(p.name for p in Path("/etc/ssh/sshd_config.d").iterdir()) == listing
    assert not tree.exists(), "temp dir left behind"
    assert not server.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_host_user_with_an_admins_name_does_not_break_the_server() -> None:
    """The agent adopts an existing account (as on a server image that has one) instead of a second entry."""
    require_root()
    other = make_fleet(("nobody2",))
    with running_server(other.user_data, boot=False) as server:
        assert server.root(["useradd", "--no-create-home", "--home-dir", "/home/nobody2", "nobody2"]).returncode == 0
        activation = server.agent("boot")
        assert activation.returncode == 0, server.logs()
        assert server.root(["grep", "-c", "^nobody2:", "/etc/passwd"]).stdout.strip() == "1"
        assert_accepted(server.login("nobody2", key=other.keys["nobody2"], code=other.code("nobody2")), server)


def test_teardown_is_clean_when_the_test_fails() -> None:
    require_root()
    other = make_fleet(("solo",))
    with pytest.raises(RuntimeError, match="boom"), running_server(other.user_data) as server:
        tree = server.dir
        raise RuntimeError("boom")
    assert not server.running and not tree.exists()

