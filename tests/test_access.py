"""Service accounts and sudo modes on a real server (tests/sshd_harness.py: sshd, PAM, sudo, the agent).

The server listens on 127.0.0.1; a client binds 127.0.0.2 (a service account's network) or 127.0.0.3
(outside it) as its source address, which sshd sees as the connection's address.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pyotp
import pytest
from configs import Fleet, make_fleet
from conftest import assert_no_terminal_and_no_forwarding, require_root, require_tool
from sshd_harness import SSHD, Server, effective, new_key, running_server

from agent import state as st
from cloudinit.model import ServiceAccount

INSIDE, OUTSIDE = "127.0.0.2", "127.0.0.3"
DEPLOY_KEY, DEPLOY_PUBLIC = new_key("deploy@ci")
BACKUP_KEY, BACKUP_PUBLIC = new_key("backups@ci")


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    accounts = (
        ServiceAccount(name="deploy", ssh_keys=(DEPLOY_PUBLIC,), from_cidrs=("127.0.0.2/32",), command="/bin/echo deployed"),
        ServiceAccount(name="backups", ssh_keys=(BACKUP_PUBLIC,), from_cidrs=("127.0.0.2/32",),
                       sudo_commands=("/usr/bin/id -u",)),
    )
    return make_fleet(("alice", "sudoer", "sudoer2", "nosudo"), service_accounts=accounts,
                      admin_options={"sudoer": {"sudo": "totp"}, "sudoer2": {"sudo": "totp"}, "nosudo": {"sudo": "none"}})


@pytest.fixture(scope="module")
def server(fleet: Fleet) -> Iterator[Server]:
    require_root()
    require_tool("sshd")
    require_tool("sudo")
    with running_server(fleet.user_data) as running:
        assert running.activation is not None and running.activation.returncode == 0, running.logs()
        yield running


# ------------------------------------------------------------------------------ service accounts


def test_a_service_account_gets_in_with_its_key_alone_from_its_network(server: Server) -> None:
    attempt = server.login("deploy", key=DEPLOY_KEY, source=INSIDE)
    assert attempt.accepted and attempt.steps == (("publickey", "success"),), f"{attempt}\n{server.logs()}"


def test_a_service_account_is_refused_from_elsewhere(server: Server) -> None:
    attempt = server.login("deploy", key=DEPLOY_KEY, source=OUTSIDE)
    assert attempt.refused_at == "publickey", attempt


def test_a_service_account_runs_only_its_forced_command(server: Server) -> None:
    with server.login("deploy", key=DEPLOY_KEY, source=INSIDE, keep=True) as attempt:
        done = attempt.run("cat /etc/shadow; id")
    assert done.status == 0 and done.stdout == "deployed\n", done


def test_a_service_account_gets_no_terminal_and_no_forwarding(server: Server) -> None:
    with server.login("deploy", key=DEPLOY_KEY, source=INSIDE, keep=True) as attempt:
        assert_no_terminal_and_no_forwarding(attempt, server.port)


def test_a_service_account_runs_exactly_its_sudo_commands(server: Server) -> None:
    with server.login("backups", key=BACKUP_KEY, source=INSIDE, keep=True) as attempt:
        allowed = attempt.run("sudo -n /usr/bin/id -u")
        other_args = attempt.run("sudo -n /usr/bin/id")
        shell = attempt.run("sudo -n /bin/sh -c id")
    assert allowed.status == 0 and allowed.stdout.strip() == "0", allowed
    assert other_args.status != 0 and shell.status != 0, (other_args, shell)


def test_a_service_account_is_no_admin(server: Server, fleet: Fleet) -> None:
    assert server.read("/home/deploy/.google_authenticator") is None, "a service account has no TOTP file"
    groups = server.root(["id", "-nG", "deploy"]).stdout.split()
    assert st.ADMIN_GROUP not in groups
    for source, admin in ((INSIDE, "alice"), ("127.0.0.1", "alice")):
        values = effective(server.root([SSHD, "-T", "-C", f"user={admin},host=h,addr={source},laddr=127.0.0.1,lport=22"]).stdout)
        assert values["authenticationmethods"] == "publickey,keyboard-interactive", (source, values)
    key_only = server.login("alice", key=fleet.keys["alice"], source=INSIDE)
    assert key_only.steps == (("publickey", "partial"),), "an admin from a service network still needs the code"


# -------------------------------------------------------------------------------------- sudo modes


def sudo_code(fleet: Fleet, admin: str, steps_ahead: int = 0) -> str:
    sudo = fleet.secrets[admin].sudo
    assert sudo is not None
    return pyotp.TOTP(sudo.seed).at(time.time() + 30 * steps_ahead)


def test_sudo_totp_asks_for_a_code_of_the_sudo_seed(server: Server, fleet: Fleet) -> None:
    with server.login("sudoer", key=fleet.keys["sudoer"], code=fleet.code("sudoer"), keep=True) as attempt:
        asks = attempt.run("sudo -n true")
        right = attempt.run("sudo -S -p '' id -u", stdin=(sudo_code(fleet, "sudoer") + "\n").encode())
        secret = attempt.run(f"cat {st.SUDO_TOTP_DIR}/sudoer; ls {st.SUDO_TOTP_DIR}")
        reset = attempt.run(f"rm -f {st.SUDO_TOTP_DIR}/sudoer")
        agent = attempt.run("sudo -n /usr/local/sbin/totp-vps-activate status")
    assert asks.status != 0 and "password is required" in asks.stderr, asks
    assert agent.status == 0 and '"applied"' in agent.stdout, f"a sudo: totp admin cannot run the agent (vpsctl sync): {agent}"
    assert right.status == 0 and right.stdout.strip() == "0", f"{right}\n{server.logs()}"
    assert secret.status != 0 and "Permission denied" in secret.stderr, "the admin can read the sudo secret"
    assert reset.status != 0 and server.read(f"{st.SUDO_TOTP_DIR}/sudoer") is not None, "the admin could reset it"


def test_sudo_totp_refuses_a_wrong_code_and_the_login_seeds_code(server: Server, fleet: Fleet) -> None:
    """(Another admin: sudo tries a refused code three times, each counting against the module's rate limit.)"""
    with server.login("sudoer2", key=fleet.keys["sudoer2"], code=fleet.code("sudoer2"), keep=True) as attempt:
        login_code = attempt.run("sudo -S -p '' id -u", stdin=(fleet.code("sudoer2", 1) + "\n").encode())
        wrong = attempt.run("sudo -S -p '' id -u", stdin=b"000000\n")
    assert login_code.status != 0 and "incorrect" in login_code.stderr, "the login seed's code opened sudo"
    assert wrong.status != 0, wrong
    assert "Invalid verification code for sudoer2" in server.logs()


def test_sudo_none_has_no_sudo_but_can_run_the_agent(server: Server, fleet: Fleet) -> None:
    with server.login("nosudo", key=fleet.keys["nosudo"], code=fleet.code("nosudo"), keep=True) as attempt:
        denied = attempt.run("sudo -n true")
        listed = attempt.run("sudo -n -l")
        agent = attempt.run("sudo -n /usr/local/sbin/totp-vps-activate status")
    assert denied.status != 0, denied
    assert "/usr/local/sbin/totp-vps-activate" in listed.stdout and "(ALL" not in listed.stdout, listed
    assert agent.status == 0 and '"applied"' in agent.stdout, agent


def test_sudo_nopasswd_is_todays_behaviour(server: Server, fleet: Fleet) -> None:
    with server.login("alice", key=fleet.keys["alice"], code=fleet.code("alice"), keep=True) as attempt:
        done = attempt.run("sudo -n id -u")
    assert done.status == 0 and done.stdout.strip() == "0", done
