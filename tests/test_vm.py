"""Real first boots: the program's user-data (the real program under the mock engine) boots Debian guests
under qemu (software emulation), real cloud-init and the real agent apply it, and each guest is then proven
from the host the way a user meets it: logins, access policies, day two through `vpsctl sync`, socket
activation, penalties, faults.

One boot set, every guest at once with one vCPU each (the fault guest niced: it is looked at last):

  debian-12   port 22    first boot, logins, access policies, day two; a client killed between apply and confirm
  debian-13   port 2222  the same, with a drop-in sshd -t rejects instead; OpenSSH 10 with the host exempt from
                         PerSourcePenalties: failed logins never shut it out
  socket      debian-13 starting sshd through ssh.socket (as Ubuntu does), port 2222: the agent hands the listener
              to ssh.service; a day-two port change to 22 (previousSshPort: the sync logs in on the old port);
              the penalties' control (no exemption: failed logins do shut the host out)
  socket-pam-package-missing  the PAM module's package gone before cloud-init's package step: the first boot
              fails closed and cloud-init reports it (the other faults of lab/faults.py: tests/test_sshd.py)

Each guest runs its checks in order in a thread of its own from the moment its report arrives, so one guest's
waits (for the next TOTP step, for a watchdog) overlap the others' work; each test waits for one check of one
guest and reports it. pam_google_authenticator takes 3 tries per 30 s per TOTP file and each 30-s code once:
a Budget per file waits where needed. The guests see the host as 10.0.2.2 (qemu's user network).
`-k` selects guests too: only the guests of the selected tests boot.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
import pyotp
import pytest
from configs import ROOT, Stack, keys_in, make_stack, sync
from conftest import assert_no_terminal_and_no_forwarding, require, require_root, require_tool

from agent import state as st
from cloudinit import hardening, render, stackconfig
from cloudinit.secrets import known_hosts_line
from lab import faults, image, ssh
from lab.vm import VM, Report, VMError
from vpsctl import sshclient, sshsig
from vpsctl.sync import AGENT, agent_command, locked_down

pytestmark = pytest.mark.vm

SERVER = "web-1"
HOST, GUEST = "10.0.2.2", "10.0.2.15"  # qemu's user network: the host as the guest sees it, and the guest
NETWORK = "10.0.2.0/24"
BOOT_TIMEOUT = 1200  # seconds for a guest's report, all guests booting at once (on a busy host)
DEADLINE = 2400  # seconds from the start of the boot set for any check to finish
LOGIN_TIMEOUT = 60.0
KEYS = ("alice", "alice2", "bob", "carol", "dave", "sudoer", "sudoer2", "nosudo", "deploy", "backups", "elsewhere",
        "stranger")
MOVED_TO = 22  # the socket guest's port after its day-two port change


@dataclass(frozen=True)
class Variant:
    """One guest of the boot set."""

    name: str
    image: str
    """The lab image (a release, or a variant of one)."""
    port: int
    """sshPort at the first boot."""
    families: tuple[str, ...]
    """The families of checks it runs, in order."""
    more_ports: tuple[int, ...] = ()
    """Guest ports forwarded besides ``port``: where sshd must NOT listen, or the port it moves to."""
    exempt: bool = False
    """penaltyExemptCidrs: the host's address."""
    fault: str | None = None

    @property
    def release(self) -> str:
        """The server's image in the stack config."""
        return image.VARIANTS[self.image][0] if self.image in image.VARIANTS else self.image

    @property
    def everyone(self) -> bool:
        """Admins in every sudo mode and service accounts (the access family needs them)."""
        return "access" in self.families


FULL = ("first-boot", "logins", "access", "day-two")
# Four guests: on this project's 2-CPU test machines every guest costs minutes of emulated boot. The faults that
# break the desired state (sshd-dropin-broken, pam-weakened) are the agent's own refusals, proven at a first boot on
# the loopback servers (tests/test_sshd.py) and at day two here; the one the package system causes boots here.
VARIANTS = (
    # The two day-two faults, one on each release (the debian-12 guest boots sooner: it takes the longer one).
    Variant("debian-12", "debian-12", 22, (*FULL, "day-two-killed")),
    Variant("debian-13", "debian-13", 2222, (*FULL, "day-two-refused", "penalties-exempt"), exempt=True),
    # A custom port at the first boot, the default one after a day-two port change; the penalties' control.
    Variant("socket", "debian-13-socket", 2222, ("first-boot", "socket", "port-change", "penalties-control"), more_ports=(22,)),
    # The socket holds port 22 until the agent hands it over: the failed guest forwards 22 too.
    Variant("socket-pam-package-missing", "debian-13-socket", 2222, ("faults",), more_ports=(22,),
            fault="pam-package-missing"),
)


def config(variant: Variant, public: Mapping[str, str]) -> dict[str, Any]:
    """The stack config of one guest's first boot."""
    admins: list[dict[str, Any]] = [{"name": n, "sshKeys": [public[n]]} for n in ("alice", "bob")]
    out: dict[str, Any] = {"issuer": "vm-test", "admins": admins, "servers": [{"name": SERVER}],
                           "defaults": {"allowedCidrs": [NETWORK], "image": variant.release, "sshPort": variant.port}}
    if variant.exempt:
        out["defaults"]["penaltyExemptCidrs"] = [f"{HOST}/32"]
    if variant.everyone:
        admins += [{"name": "sudoer", "sshKeys": [public["sudoer"]], "sudo": "totp"},
                   {"name": "sudoer2", "sshKeys": [public["sudoer2"]], "sudo": "totp"},
                   {"name": "nosudo", "sshKeys": [public["nosudo"]], "sudo": "none"}]
        out["serviceAccounts"] = [
            {"name": "deploy", "sshKeys": [public["deploy"]], "fromCidrs": [f"{HOST}/32"], "command": "/bin/echo deployed"},
            {"name": "backups", "sshKeys": [public["backups"]], "fromCidrs": [f"{HOST}/32"], "sudoCommands": ["/usr/bin/id -u"]},
            # Inside the firewall's networks, but not the host's address.
            {"name": "elsewhere", "sshKeys": [public["elsewhere"]], "fromCidrs": ["10.0.2.128/25"]},
        ]
    return out


def later_configs(variant: Variant, before: dict[str, Any], public: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The configs a guest's later syncs bring, by name."""
    out: dict[str, dict[str, Any]] = {}
    if "port-change" in variant.families:
        out["moved"] = copy.deepcopy(before)
        out["moved"]["defaults"].update(sshPort=MOVED_TO, previousSshPort=before["defaults"]["sshPort"])
    if "day-two" not in variant.families:
        return out
    after = copy.deepcopy(before)
    admins = {a["name"]: a for a in after["admins"]}
    after["admins"] = [{"name": "alice", "sshKeys": [public["alice"], public["alice2"]], "rotation": 1},
                       {"name": "carol", "sshKeys": [public["carol"]]},
                       *(admins[n] for n in ("sudoer", "sudoer2", "nosudo") if n in admins)]
    after["defaults"]["allowForwarding"] = True
    dave = copy.deepcopy(after)
    dave["admins"].append({"name": "dave", "sshKeys": [public["dave"]]})
    return {**out, "after": after, "dave": dave}


# -------------------------------------------------------------------------------- TOTP bookkeeping


class Budget:
    """One TOTP file as pam_google_authenticator keeps it: RATE_LIMIT 3 30 (every try counts: right, wrong, a
    backup code) and DISALLOW_REUSE (each 30-s step's code works once). Waits rather than fail a login."""

    TRIES, WINDOW = 3, 31.0  # a second more than the module's 30 s: the guest's clock is the host's, roughly

    def __init__(self, totp: pyotp.TOTP) -> None:
        self.totp = totp
        self.tries: list[float] = []
        self.used: set[int] = set()

    def _room(self, tries: int) -> None:
        while True:
            now = time.time()
            recent = sorted(t for t in self.tries if t > now - self.WINDOW)
            if len(recent) + tries <= self.TRIES:
                return
            time.sleep(recent[0] + self.WINDOW - now + 0.1)

    def tried(self, tries: int = 1) -> None:
        """Room for ``tries`` (waiting if needed), counted as made now."""
        self._room(tries)
        self.tries += [time.time()] * tries

    def code(self) -> str:
        """A code the server takes now: this step's, else the next or the last one's (WINDOW_SIZE 3)."""
        self.tried()
        while True:
            step = int(time.time() // 30)
            free = [s for s in (step, step + 1, step - 1) if s not in self.used]
            if free:
                self.used.add(free[0])
                return self.totp.at(free[0] * 30)
            time.sleep((step + 1) * 30 - time.time() + 0.5)

    def wrong(self) -> str:
        """A code valid in no step near now (a try all the same)."""
        self.tried()
        valid = {self.totp.at(time.time() + 30 * k) for k in range(-4, 5)}
        guess = (int(self.totp.now()) + 500_000) % 1_000_000
        while f"{guess:06d}" in valid:
            guess = (guess + 1) % 1_000_000
        return f"{guess:06d}"

    def before_sync(self, tries: int) -> None:
        """`vpsctl sync` computes its own codes (this step's, then the next one's): none of them used yet."""
        while max(self.used, default=-1) >= int(time.time() // 30):
            time.sleep(30 - time.time() % 30 + 0.5)
        self._room(tries)

    def after_sync(self, started: float, tries: int) -> None:
        self.tries += [time.time()] * tries
        self.used |= set(range(int(started // 30), int(time.time() // 30) + 2))


# ---------------------------------------------------------------------------------------- a guest


@dataclass
class Outcome:
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    started: float = 0.0
    seconds: float = 0.0


@dataclass(repr=False)
class Guest:
    """One booted guest: its VM, its stacks, what the host knows and what its checks found."""

    variant: Variant
    vm: VM
    stack: Stack
    key_files: dict[str, Path]
    later: dict[str, Stack] = field(default_factory=dict)
    report: Report | None = None
    ssh_port: int = 0
    """The server's SSH port now (a port change moves it)."""
    console: sshclient.Login | None = None
    """alice's first login, kept open: root commands over it without spending logins."""
    sessions: list[sshclient.Login] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    outcomes: dict[tuple[str, str], Outcome] = field(default_factory=dict)
    budgets: dict[tuple[str, str], Budget] = field(default_factory=dict)
    keys: dict[str, paramiko.PKey] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Guest({self.variant.name})"

    @property
    def pinned(self) -> str:
        return str(self.stack.outputs["servers"][SERVER]["hostPublicKey"])

    def key(self, name: str) -> paramiko.PKey:
        if name not in self.keys:
            self.keys[name] = self.stack.key(name)
        return self.keys[name]

    def budget(self, admin: str, stack: Stack | None = None, sudo: bool = False) -> Budget:
        enrolled = (stack or self.stack).outputs["enrollment"][SERVER][admin]
        totp = pyotp.parse_uri((enrolled["sudo"] if sudo else enrolled)["otpauthUri"])
        assert isinstance(totp, pyotp.TOTP)
        return self.budgets.setdefault((f"{admin}{' sudo' if sudo else ''}", totp.secret), Budget(totp))

    def host_port(self, guest_port: int | None = None) -> int:
        return self.vm.host_ports[guest_port or self.ssh_port]

    def login(self, user: str, key: str | None = None, *, code: str | None = None, password: str | None = None,
              port: int | None = None, keep: bool = False) -> sshclient.Login:
        """The project's SSH client against this guest, host key pinned (HostKeyMismatch otherwise)."""
        attempt = sshclient.login(self.host_port(port), user, key=self.key(key) if key else None, code=code,
                                  password=password, pinned=self.pinned, timeout=LOGIN_TIMEOUT, keep=keep)
        if keep and attempt.accepted:
            self.sessions.append(attempt)
        return attempt

    def admin_login(self, admin: str, stack: Stack | None = None, key: str | None = None, *, keep: bool = False,
                    port: int | None = None) -> sshclient.Login:
        """Key + a fresh code of ``admin``'s seed in ``stack`` (default: the first boot's)."""
        code = self.budget(admin, stack).code()
        return self.login(admin, key or admin, code=code, keep=keep, port=port)

    def root(self, script: str, stdin: bytes | None = None, timeout: float = 300) -> sshclient.Result:
        """``script`` as root over the console."""
        assert self.console is not None, "no console: alice's first login did not get in"
        return self.console.run(["sudo", "-n", "sh", "-c", script], stdin=stdin, timeout=timeout)

    def out(self, script: str) -> str:
        done = self.root(script)
        assert done.status == 0, f"`{script}` as root: {done.output}"
        return done.stdout

    def agent(self, *args: str, stdin: bytes | None = None) -> dict[str, Any]:
        assert self.console is not None, "no console: alice's first login did not get in"
        return agent_command(self.console, *args, stdin=stdin, timeout=300)

    def sync(self, stack: Stack, admin: str, *extra: str) -> subprocess.CompletedProcess[str]:
        """`vpsctl sync` as ``admin`` against this guest's forwarded ports."""
        ports = [arg for guest, host in self.vm.host_ports.items() for arg in ("--port", f"{guest}={host}")]
        return sync(stack, admin, *ports, *extra, timeout=600)

    def auth_log(self, lines: int = 12) -> str:
        """The end of what sshd and PAM logged, over the console (why a login was refused)."""
        if self.console is None or self.console.transport is None or not self.console.transport.is_active():
            return ""
        done = self.console.run(["sudo", "-n", "sh", "-c", f"journalctl -b --no-pager -o short-monotonic | grep -E 'sshd|pam_' "
                                 f"| grep -v COMMAND= | tail -n {lines}"])
        return f"\nsshd and PAM said:\n{done.stdout}"

    def context(self) -> str:
        """What to show when a check fails (no secrets: cloud-init's status and the console's end)."""
        report = self.report
        status = f"cloud-init status:\n{report.out('status')}\nerrors: {report.errors}\nactivation log:\n" \
                 f"{report.data['output_log']}" if report else "no report"
        return f"\n{status}\nserial log ends:\n{self.vm.serial_tail(30)}"

    def need(self, fact: str) -> Any:
        """A fact an earlier check established; a clear failure when that check failed."""
        assert fact in self.facts, f"an earlier check of {self.variant.name} failed before it established {fact!r}"
        return self.facts[fact]

    def run(self, boot_deadline: float) -> None:
        """All checks of this guest in order (a thread of its own)."""
        failed: BaseException | None = None
        try:
            self.report = self.vm.wait_report(max(60.0, boot_deadline - time.monotonic()))
        except VMError as exc:
            failed = exc
        self.facts["ready after"] = self.vm.ready_after
        for family in self.variant.families:
            for check in FAMILIES[family]:
                outcome = self.outcomes[(family, check.__name__)]
                outcome.started = time.monotonic()
                try:
                    if failed is not None:
                        raise failed
                    check(self)
                except BaseException as exc:  # noqa: BLE001 - pytest.raises fails with a BaseException; the test raises it
                    outcome.error = exc
                finally:
                    outcome.seconds = time.monotonic() - outcome.started
                    outcome.done.set()


def known_hosts(g: Guest, guest_port: int | None = None) -> Path:
    """A known_hosts file pinning the guest's host key at a forwarded port (for the OpenSSH client)."""
    port = g.host_port(guest_port)
    path = g.key_files["alice"].parent / f"known_hosts-{port}"
    path.write_text(known_hosts_line("127.0.0.1", port, g.pinned) + "\n")
    return path


def effective(g: Guest, user: str, addr: str = HOST) -> set[str]:
    """``sshd -T -C`` for one connection: what sshd will do for ``user`` from ``addr``."""
    spec = f"user={user},host=vm-test.invalid,addr={addr},laddr={GUEST},lport={g.ssh_port}"
    return set(g.out(f"/usr/sbin/sshd -T -C {spec}").splitlines())


def listening_ports(g: Guest) -> set[int]:
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in g.out("ss -Hltn").splitlines() if line.strip()}


def unreachable(g: Guest, guest_port: int) -> bool:
    """No SSH session comes up on that guest port (qemu forwards the host port; nothing answers inside)."""
    return g.login("alice", port=guest_port).steps == (("connect", "disconnected"),)


# ------------------------------------------------------------------------------ first boot (report)


def cloud_init_done_and_agent_activated(g: Guest) -> None:
    assert g.report is not None
    assert g.report.status == "done" and g.report.errors == [], g.context()
    serial = g.stack.outputs["servers"][SERVER]["desiredSerial"]
    admins = " ".join(a["name"] for a in g.stack.config["admins"])
    line = f"totp-vps: activated: SSH on port {g.variant.port} needs key + TOTP for: {admins} (state {st.short(serial)})"
    assert line in g.report.data["output_log"], g.context()


def cloud_init_schema_valid(g: Guest) -> None:
    assert g.report is not None
    status, schema = g.report.rc("schema"), g.report.out("schema")
    assert status == 0 and "Valid" in schema and "Invalid" not in schema, schema


JOB_STARTING = "7d4958e842da4a758f6c1cdc7b36dcc5"  # systemd catalog: a unit's start job begins
JOB_DONE = "39f53479d3a045ac8e11786248231fbf"  # systemd catalog: a unit's start job finished


def sshd_first_started_after_the_lockdown(g: Guest) -> None:
    """sshd must never serve the image's stock configuration: its first start comes after cloud-init's init
    stage (cloud-init.service; cloud-init-network.service from 24.3), whose write_files lays the lockdown."""
    assert g.report is not None
    entries = [json.loads(line) for line in g.report.out("unit_jobs").splitlines() if line.startswith("{")]

    def first(units: set[str], message_id: str) -> int:
        times = [int(e["__MONOTONIC_TIMESTAMP"]) for e in entries if e.get("UNIT") in units and e.get("MESSAGE_ID") == message_id]
        assert times, f"no {message_id} record for {units}: {[e.get('MESSAGE') for e in entries]}"
        return min(times)

    assert first({"ssh.service"}, JOB_STARTING) > first({"cloud-init.service", "cloud-init-network.service"}, JOB_DONE)


def totp_files_owned_by_their_admin_mode_0400(g: Guest) -> None:
    assert g.report is not None
    files = {f["path"]: f for f in g.report.data["totp_files"]}
    for admin in (a["name"] for a in g.stack.config["admins"]):
        entry = files.get(f"/home/{admin}/{st.TOTP_FILE}")
        assert entry is not None and (entry["owner"], entry["mode"]) == (admin, "400"), (admin, files)


def metadata_block_in_place(g: Guest) -> None:
    assert g.report is not None
    nft = g.report.out("nft")
    assert g.report.rc("nft") == 0 and "ip daddr 169.254.169.254 meta skuid != 0" in nft and "reject" in nft, nft


def chrony_active(g: Guest) -> None:
    assert g.report is not None
    assert g.report.out("chrony").strip() == "active", g.report.out("chrony")


def user_data_copies_root_only(g: Guest) -> None:
    assert g.report is not None
    for entry in g.report.data["user_data"]:
        assert (entry.get("owner"), entry.get("mode")) == ("root", "600"), entry
    # Markers cloud-init writes after runcmd hold a timestamp, no user-data: boot-finished, the final semaphores.
    late = ("/boot-finished", "/sem/")
    open_to_others = [f["path"] for f in g.report.data["cloud_files"]
                      if f.get("type") == "file" and int(f["mode"], 8) & 0o077 and not any(m in f["path"] for m in late)]
    assert open_to_others == []


def no_seed_readable_by_others(g: Guest) -> None:
    """No TOTP seed in any file a non-root user can read (cloud-init's state, logs, /etc, /run/cloud-init)."""
    assert g.report is not None
    assert g.report.data["totp_files"], "no TOTP file to look for"
    assert g.report.data["seed_exposed"] == []


# ------------------------------------------------------------------------------------------ logins


def key_and_totp_accepted_host_key_pinned(g: Guest) -> None:
    """alice's login (kept as the console): key, then a code prompt, the pinned host key, sudo works."""
    attempt = g.admin_login("alice", keep=True)
    assert attempt.accepted, f"{attempt}{g.context()}"
    assert attempt.host_key == " ".join(g.pinned.split()[:2])
    assert attempt.steps == (("publickey", "partial"), ("keyboard-interactive", "success"))
    assert attempt.prompts and all(sshclient.is_code_prompt(p) for p in attempt.prompts), attempt.prompts
    done = attempt.run("id -un && sudo -n true && echo sudo-ok")
    assert done.status == 0 and done.stdout.split() == ["alice", "sudo-ok"], done
    g.console = attempt


def effective_sshd_needs_both_factors(g: Guest) -> None:
    """`sshd -T -C` per account: admins need key and code from anywhere; a service account from its network
    gets its key alone, no terminal, no forwarding, its forced command. No trace of the lockdown."""
    wanted = set(render.effective_settings(g.ssh_port)) | {f"{d.lower()} {v}" for d, v in
                                                           hardening.crypto_for(g.variant.release).items()}
    for admin in (a["name"] for a in g.stack.config["admins"]):
        for addr in (HOST, "192.0.2.10"):
            have = effective(g, admin, addr)
            assert wanted <= have and "denyusers *" not in have, (admin, addr, sorted(wanted - have))
    for account in g.stack.config.get("serviceAccounts", []):
        if account["fromCidrs"] == [f"{HOST}/32"]:
            have = effective(g, account["name"])
            want = set(st.SERVICE_EFFECTIVE) | {f"forcecommand {account.get('command') or 'none'}"}
            assert want <= have, (account["name"], sorted(want - have))


def listens_on_its_port_only(g: Guest) -> None:
    assert listening_ports(g) == {g.ssh_port}
    for other in g.variant.more_ports:
        assert unreachable(g, other), f"guest port {other} answers"


def key_alone_refused(g: Guest) -> None:
    attempt = g.login("bob", "bob")
    assert attempt.steps == (("publickey", "partial"),) and attempt.offered["publickey"] == ("keyboard-interactive",), attempt


def key_and_wrong_code_refused(g: Guest) -> None:
    who = "nosudo" if g.variant.everyone else "bob"
    attempt = g.login(who, who, code=g.budget(who).wrong())
    assert attempt.refused_at == "keyboard-interactive" and not attempt.accepted, attempt


def password_refused(g: Guest) -> None:
    attempt = g.login("alice", password="correct horse battery staple")
    assert not attempt.accepted and attempt.refused_at == "password", attempt


def code_without_key_refused(g: Guest) -> None:
    attempt = g.login("alice", code=g.stack.totp("alice").now())  # never reaches PAM: the key comes first
    assert not attempt.accepted and attempt.refused_at == "keyboard-interactive", attempt
    assert attempt.offered["keyboard-interactive"] == ("publickey",), "the code was asked before the key"


def backup_code_works_once(g: Guest) -> None:
    code = g.stack.outputs["enrollment"][SERVER]["bob"]["backupCodes"][0]
    budget = g.budget("bob")
    budget.tried()
    first = g.login("bob", "bob", code=code)
    assert first.accepted, f"{first}{g.auth_log()}"
    budget.tried()
    second = g.login("bob", "bob", code=code)
    assert second.refused_at == "keyboard-interactive", second


def openssh_batch_with_key_only_refused(g: Guest) -> None:
    done = ssh.openssh_batch(g.host_port(), "alice", g.key_files["alice"], known_hosts(g))
    assert done.returncode == 255 and "Permission denied" in done.stderr, done.stderr  # the pin matched


# ------------------------------------------------------------------------------------------ access


def service_account_gets_in_with_its_key_alone_and_runs_only_its_command(g: Guest) -> None:
    attempt = g.login("deploy", "deploy", keep=True)
    assert attempt.accepted and attempt.steps == (("publickey", "success"),), f"{attempt}{g.context()}"
    with attempt:
        done = attempt.run("cat /etc/shadow; id")
        assert done.status == 0 and done.stdout == "deployed\n", done
        assert_no_terminal_and_no_forwarding(attempt, g.ssh_port)


def service_account_runs_exactly_its_sudo_commands(g: Guest) -> None:
    with g.login("backups", "backups", keep=True) as attempt:
        assert attempt.accepted, attempt
        allowed = attempt.run("sudo -n /usr/bin/id -u")
        other_args = attempt.run("sudo -n /usr/bin/id")
        shell = attempt.run("sudo -n /bin/sh -c id")
    assert allowed.status == 0 and allowed.stdout.strip() == "0", allowed
    assert other_args.status != 0 and shell.status != 0, (other_args, shell)


def service_account_from_another_network_refused(g: Guest) -> None:
    attempt = g.login("elsewhere", "elsewhere")
    assert attempt.refused_at == "publickey", attempt


def sudo_totp_asks_a_code_of_the_sudo_seed(g: Guest) -> None:
    with g.admin_login("sudoer", keep=True) as attempt:
        assert attempt.accepted, f"{attempt}{g.auth_log()}"
        asks = attempt.run("sudo -n true")
        right = attempt.run("sudo -S -p '' id -u", stdin=(g.budget("sudoer", sudo=True).code() + "\n").encode())
        secret = attempt.run(f"cat {st.SUDO_TOTP_DIR}/sudoer")
    assert asks.status != 0 and "password is required" in asks.stderr, asks
    assert right.status == 0 and right.stdout.strip() == "0", right
    assert secret.status != 0 and "Permission denied" in secret.stderr, "the admin can read the sudo secret"


def sudo_totp_refuses_a_wrong_code_and_the_login_code(g: Guest) -> None:
    """(Another admin: sudo asks three times for each refused code, and each try counts against the file's rate.)"""
    with g.admin_login("sudoer2", keep=True) as attempt:
        assert attempt.accepted, f"{attempt}{g.auth_log()}"
        login_code = attempt.run("sudo -S -p '' id -u", stdin=(g.budget("sudoer2").code() + "\n").encode())
        wrong = attempt.run("sudo -S -p '' id -u", stdin=(g.budget("sudoer2", sudo=True).wrong() + "\n").encode())
    assert login_code.status != 0 and login_code.stdout.strip() != "0", "the login seed's code opened sudo"
    assert wrong.status != 0 and wrong.stdout.strip() != "0", wrong


def sudo_none_has_no_sudo_but_runs_the_agent(g: Guest) -> None:
    with g.admin_login("nosudo", keep=True) as attempt:
        assert attempt.accepted, f"{attempt}{g.auth_log()}"
        denied = attempt.run("sudo -n true")
        listed = attempt.run("sudo -n -l")
        status = attempt.run(["sudo", "-n", AGENT, "status"])
    assert denied.status != 0, denied
    assert AGENT in listed.stdout and "(ALL" not in listed.stdout, listed
    assert status.status == 0 and '"applied"' in status.stdout, status


# ----------------------------------------------------------------------------------------- day two


def machine(g: Guest) -> dict[str, str]:
    """What a reboot, a rebuild or an sshd restart would change."""
    keys = ("boot", "uptime", "host key", "sshd")
    script = ("cat /proc/sys/kernel/random/boot_id; cut -d' ' -f1 /proc/uptime; "
              "cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub; systemctl show --property=MainPID --value ssh.service")
    return dict(zip(keys, g.out(script).splitlines(), strict=True))


def one_sync_offboards_adds_rotates_and_turns_on_forwarding(g: Guest) -> None:
    """remove bob, add carol, rotate alice, a second key for alice, forwarding on: one `vpsctl sync` as alice
    (on her old seed: the stack's previous seeds), confirmed by a new login on her new seed."""
    after = g.later["after"]
    bob = g.admin_login("bob", keep=True)  # logged in while the change happens
    assert bob.accepted, f"{bob}{g.auth_log()}"
    g.facts["bob session"] = bob
    backup = g.stack.outputs["enrollment"][SERVER]["nosudo"]["backupCodes"][0]  # used before the sync
    g.budget("nosudo").tried()
    used = g.login("nosudo", "nosudo", code=backup)
    assert used.accepted, f"{used}{g.auth_log()}"
    g.facts["before"] = machine(g)
    old, new = g.budget("alice"), g.budget("alice", after)
    old.before_sync(2)  # login 1: a round with the new seed's code, then one with the old seed's
    started = time.time()
    done = g.sync(after, "alice")
    old.after_sync(started, 2)
    new.after_sync(started, 1)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{SERVER}: -bob +carol ~alice(rotated, keys +1) sshd: allowForwarding no->yes" in done.stdout, done.stdout
    assert f"{SERVER}: confirmed" in done.stdout and "FAILED" not in done.stdout, done.stdout
    g.facts["synced"] = True


def offboarded_admin_is_out_and_his_session_ended(g: Guest) -> None:
    g.need("synced")
    with pytest.raises((paramiko.SSHException, EOFError, OSError)):
        g.need("bob session").run("id", timeout=20)
    refused = g.login("bob", "bob", code=g.budget("bob").code())  # a valid code of his seed
    assert refused.refused_at == "publickey", refused
    assert g.out("passwd --status bob").split()[1] == "L", "bob's account is not locked"
    assert g.out("test -d /home/bob && echo kept") == "kept\n", "bob's home (his data) is gone"
    left = g.out(f"for f in /home/bob/{st.TOTP_FILE} {st.KEYS_DIR}/bob; do test -e $f && echo $f; done; true")
    assert left == "", f"bob's key or TOTP file is still there: {left}"


def added_admin_gets_in_with_key_and_totp(g: Guest) -> None:
    g.need("synced")
    attempt = g.admin_login("carol", g.later["after"])
    assert attempt.accepted, f"{attempt}{g.auth_log()}"


def rotated_admin_old_seed_refused_new_seed_works_with_either_key(g: Guest) -> None:
    """Her first key with the new seed is what the sync's confirming login used; here the second key."""
    g.need("synced")
    after = g.later["after"]
    g.budget("alice", after).tried()  # the old seed's code is tried against her new file
    old = g.login("alice", "alice", code=g.budget("alice").code())
    assert old.refused_at == "keyboard-interactive", old
    attempt = g.admin_login("alice", after, "alice2")
    assert attempt.accepted, f"{attempt}{g.auth_log()}"


def sshd_shows_the_new_values(g: Guest) -> None:
    g.need("synced")
    have = effective(g, "alice")
    assert {"allowtcpforwarding yes", "allowagentforwarding yes", "allowstreamlocalforwarding yes"} <= have, sorted(have)
    users = {line.split()[1] for line in g.out("/usr/sbin/sshd -T").splitlines() if line.startswith("allowusers ")}
    assert users == {"alice", "carol", "sudoer", "sudoer2", "nosudo", f"deploy@{HOST}/32", f"backups@{HOST}/32",
                     "elsewhere@10.0.2.128/25"}, users


def same_host_key_no_reboot_sshd_reloaded_not_restarted(g: Guest) -> None:
    before, now = g.need("before"), machine(g)
    assert now["boot"] == before["boot"] and float(now["uptime"]) > float(before["uptime"]), (before, now)
    assert now["host key"] == " ".join(g.pinned.split()[:2]) == before["host key"]
    assert now["sshd"] == before["sshd"], "sshd was restarted (a new main process), not reloaded"


def backup_code_used_before_a_sync_stays_used(g: Guest) -> None:
    """nosudo was not rotated: the agent left the file that pam_google_authenticator rewrites alone."""
    g.need("synced")
    codes = g.stack.outputs["enrollment"][SERVER]["nosudo"]["backupCodes"]
    budget = g.budget("nosudo")
    budget.tried()
    again = g.login("nosudo", "nosudo", code=codes[0])
    assert again.refused_at == "keyboard-interactive", f"a used backup code came back to life: {again}"
    budget.tried()
    unused = g.login("nosudo", "nosudo", code=codes[1])
    assert unused.accepted, f"{unused}{g.auth_log()}"


def second_sync_reports_no_change(g: Guest) -> None:
    g.need("synced")
    budget = g.budget("sudoer2", g.later["after"])
    budget.before_sync(1)
    started = time.time()
    done = g.sync(g.later["after"], "sudoer2")
    budget.after_sync(started, 1)
    assert done.returncode == 0 and f"{SERVER}: in sync" in done.stdout, done.stdout + done.stderr
    assert g.agent("status")["applied"]["serial"] == g.later["after"].outputs["servers"][SERVER]["desiredSerial"]


def drop_in_sshd_rejects_is_refused_and_the_server_stays_reachable(g: Guest) -> None:
    g.need("synced")
    after = g.later["after"]
    serial = g.agent("status")["applied"]["serial"]
    state = st.normal(copy.deepcopy(after.outputs["desiredState"][SERVER]))
    state["files"][st.DROPIN] += "ThisIsNotAnSshdDirective yes\n"
    nonce = g.agent("status")["nonce"]
    signature = sshsig.sign(st.signed_message(state, nonce), after.outputs["sync"]["signingKey"], st.SIGNATURE_NAMESPACE)
    answer = g.agent("apply", stdin=json.dumps({"state": state, "signature": signature}).encode())
    assert answer["result"] == "refused" and "sshd -t rejects the configuration" in answer["reason"], answer
    status = g.agent("status")
    assert status["applied"]["serial"] == serial and status["pending"] is None, status
    assert "ThisIsNot" not in g.out(f"cat {st.DROPIN}")
    login = g.admin_login("sudoer", after)
    assert login.accepted, f"the previous configuration no longer lets an admin in: {login}{g.auth_log()}"


def killed_client_is_rolled_back_within_the_bound(g: Guest) -> None:
    """`vpsctl sync` killed between apply and confirm: the agent's watchdog undoes the change by itself."""
    g.need("synced")
    after, dave = g.later["after"], g.later["dave"]
    serial = g.agent("status")["applied"]["serial"]
    budget = g.budget("carol", after)
    budget.before_sync(1)
    ports = [arg for guest, host in g.vm.host_ports.items() for arg in ("--port", f"{guest}={host}")]
    argv = [sys.executable, "-m", "vpsctl", "sync", "--from", str(dave.outputs_file), "--host", "127.0.0.1", *ports,
            "--as", "carol", "--identity", str(dave.key_files["carol"]), "--confirm-within", "15"]
    started = time.time()
    client = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while (pending := g.agent("status")["pending"]) is None:  # applied, provisional: kill it before it confirms
            assert client.poll() is None and time.monotonic() < deadline, client.communicate()[0]
            time.sleep(0.5)
        client.send_signal(signal.SIGKILL)
    finally:
        client.kill()
        client.wait()
        budget.after_sync(started, 1)
    while (now := g.agent("status"))["pending"] is not None:
        assert time.time() < pending["deadline"] + 120, now["pending"]
        time.sleep(1)
    assert now["applied"]["serial"] == serial, now
    rolled = [e for e in now["events"] if e["event"] == "rolled back"]
    assert rolled and rolled[-1]["detail"] == "no confirmation within 15 s", now["events"]
    # Within the bound, or right after the apply when that took longer (the watchdog waits for the agent's lock).
    applied = [e["time"] for e in now["events"] if e["event"] == "pending" and e["serial"] == pending["serial"]]
    assert rolled[-1]["time"] <= max([pending["deadline"], *applied]) + 15, (pending, now["events"])
    assert "No such file" in g.out(f"ls {st.KEYS_DIR}/dave 2>&1 || true")
    assert not any(line.startswith("allowusers dave") for line in g.out("/usr/sbin/sshd -T").splitlines())
    login = g.admin_login("sudoer2", after)
    assert login.accepted, f"the previous configuration no longer lets an admin in: {login}{g.auth_log()}"


# ----------------------------------------------------------------------------------------- penalties


def failed_logins(g: Guest, tries: int = 10) -> list[sshclient.Login]:
    """Logins with a key the server does not know (each a penalty of 5 s where penalties apply), until one is
    turned away before it could try."""
    out = []
    for _ in range(tries):
        out.append(g.login("alice", "stranger"))
        if out[-1].steps == (("connect", "disconnected"),):
            break
    return out


def penalties_logged(g: Guest) -> str:
    """sshd's penalty lines (not sudo's record of the command that looks for them)."""
    return g.out("journalctl -b --no-pager -u ssh.service | grep -i penalty | grep -v COMMAND= || true")


def failed_logins_never_shut_out_an_exempt_source(g: Guest) -> None:
    attempts = failed_logins(g)
    assert all(a.refused_at == "publickey" for a in attempts), attempts
    stack = g.later.get("after") if "synced" in g.facts else g.stack
    login = g.admin_login("sudoer", stack)
    assert login.accepted, f"the exempt host was shut out after failed logins: {login}{g.auth_log()}"
    assert penalties_logged(g) == "", penalties_logged(g)


def failed_logins_shut_out_a_source_that_is_not_exempt(g: Guest) -> None:
    """The control: the same failures without the exemption, and the next good login is turned away."""
    attempts = failed_logins(g)
    assert attempts[-1].steps == (("connect", "disconnected"),), f"no penalty after {len(attempts)} failed logins"
    good = g.admin_login("bob")
    assert not good.accepted and good.steps == (("connect", "disconnected"),), good
    assert "penalty: failed authentication" in penalties_logged(g)


# -------------------------------------------------------------------------------- socket activation


def ssh_socket_handed_over_to_the_service(g: Guest) -> None:
    """The agent moved the listener from ssh.socket (a port of its own) to ssh.service (sshd_config's Port)."""
    states = g.out("for v in is-enabled is-active; do systemctl $v ssh.socket ssh.service; done || true").split()
    assert states == ["disabled", "enabled", "inactive", "active"], states


def port_change_sync_logs_in_on_the_previous_port(g: Guest) -> None:
    """sshPort 2222 -> 22 with previousSshPort 2222: login 1 finds nothing on 22 yet and logs in on 2222, login 2
    proves the new port."""
    moved = g.later["moved"]
    budget = g.budget("alice")
    budget.before_sync(2)
    started = time.time()
    done = g.sync(moved, "alice")
    budget.after_sync(started, 2)
    assert done.returncode == 0 and f"{SERVER}: confirmed" in done.stdout, done.stdout + done.stderr
    assert f"{SERVER}: sshd: sshPort {g.variant.port}->{MOVED_TO}" in done.stdout, done.stdout
    g.ssh_port = MOVED_TO
    g.facts["moved"] = True


def listens_on_the_new_port_only(g: Guest) -> None:
    g.need("moved")
    assert listening_ports(g) == {MOVED_TO}
    assert unreachable(g, g.variant.port), "the old port still answers"
    assert g.agent("status")["applied"]["summary"]["sshPort"] == MOVED_TO


def logins_hold_on_the_new_port(g: Guest) -> None:
    g.need("moved")
    attempt = g.admin_login("bob")
    assert attempt.accepted and attempt.steps == (("publickey", "partial"), ("keyboard-interactive", "success")), \
        f"{attempt}{g.auth_log()}"
    key_alone_refused(g)


# -------------------------------------------------------------------------------------------- faults


def fault_reported_by_cloud_init_and_the_lockdown_stays(g: Guest) -> None:
    assert g.report is not None and g.variant.fault is not None
    assert g.report.status == "error", g.context()
    log = g.report.data["output_log"]
    assert "ACTIVATION FAILED" in log and faults.EXPECTED_REASON[g.variant.fault] in log, g.context()
    assert any("runcmd" in e or "scripts" in e for e in g.report.errors), g.report.errors
    assert g.report.out("dropin") == st.lockdown(g.variant.port), g.report.out("dropin")


def fault_fails_closed(g: Guest) -> None:
    """Key + a valid code, a password and OpenSSH with the key: refused wherever sshd answers (the lockdown
    offers no method at all); and it does answer somewhere."""
    totp = g.stack.totp("alice")
    answered = []
    for port in (g.variant.port, *g.variant.more_ports):
        attempt = g.login("alice", "alice", code=totp.now(), port=port)
        assert not attempt.accepted, attempt
        if attempt.steps == (("connect", "disconnected"),):
            continue
        answered.append(port)
        assert locked_down(attempt), attempt
        assert not g.login("alice", password="correct horse battery staple", port=port).accepted
    assert answered, "no sshd answers at all"
    done = ssh.openssh_batch(g.host_port(answered[0]), "alice", g.key_files["alice"], known_hosts(g, answered[0]))
    assert done.returncode == 255 and "Permission denied" in done.stderr, done.stderr


# ------------------------------------------------------------------------------------------ families

LOGINS = (key_and_totp_accepted_host_key_pinned, effective_sshd_needs_both_factors, listens_on_its_port_only, key_alone_refused,
          key_and_wrong_code_refused, password_refused, code_without_key_refused, backup_code_works_once,
          openssh_batch_with_key_only_refused)
FAMILIES: dict[str, tuple[Callable[[Guest], None], ...]] = {
    "first-boot": (cloud_init_done_and_agent_activated, cloud_init_schema_valid, sshd_first_started_after_the_lockdown,
                   totp_files_owned_by_their_admin_mode_0400, metadata_block_in_place, chrony_active,
                   user_data_copies_root_only, no_seed_readable_by_others),
    "logins": LOGINS,
    "access": (service_account_gets_in_with_its_key_alone_and_runs_only_its_command,
               service_account_runs_exactly_its_sudo_commands, service_account_from_another_network_refused,
               sudo_totp_asks_a_code_of_the_sudo_seed, sudo_totp_refuses_a_wrong_code_and_the_login_code,
               sudo_none_has_no_sudo_but_runs_the_agent),
    "day-two": (one_sync_offboards_adds_rotates_and_turns_on_forwarding, offboarded_admin_is_out_and_his_session_ended,
                added_admin_gets_in_with_key_and_totp, rotated_admin_old_seed_refused_new_seed_works_with_either_key,
                sshd_shows_the_new_values, same_host_key_no_reboot_sshd_reloaded_not_restarted,
                backup_code_used_before_a_sync_stays_used, second_sync_reports_no_change),
    "day-two-refused": (drop_in_sshd_rejects_is_refused_and_the_server_stays_reachable,),
    "day-two-killed": (killed_client_is_rolled_back_within_the_bound,),
    "socket": (key_and_totp_accepted_host_key_pinned, effective_sshd_needs_both_factors, listens_on_its_port_only,
               ssh_socket_handed_over_to_the_service, key_alone_refused),
    "port-change": (port_change_sync_logs_in_on_the_previous_port, listens_on_the_new_port_only, logins_hold_on_the_new_port),
    "penalties-exempt": (failed_logins_never_shut_out_an_exempt_source,),
    "penalties-control": (failed_logins_shut_out_a_source_that_is_not_exempt,),
    "faults": (fault_reported_by_cloud_init_and_the_lockdown_stays, fault_fails_closed),
}


def plan(variant: Variant) -> list[tuple[str, Callable[[Guest], None]]]:
    return [(family, check) for family in variant.families for check in FAMILIES[family]]


# --------------------------------------------------------------------------------------- the boot set


@dataclass
class Fleet:
    guests: dict[str, Guest]
    started: float

    def outcome(self, guest: str, family: str, check: str) -> None:
        found = self.guests[guest].outcomes[(family, check)]
        if not found.done.wait(max(1.0, self.started + DEADLINE - time.monotonic())):
            pytest.fail(f"{guest}: {check} did not finish within {DEADLINE} s of the boot set's start")
        if found.error is not None:
            raise found.error

    def timings(self) -> str:
        lines = [f"VM tests: {len(self.guests)} guests, {time.monotonic() - self.started:.0f} s from the first qemu start"]
        spans: dict[str, list[float]] = {}
        for name, guest in self.guests.items():
            families: dict[str, float] = {}
            for (family, _check), found in guest.outcomes.items():
                families[family] = families.get(family, 0.0) + found.seconds
                if found.done.is_set():
                    spans.setdefault(family, []).extend((found.started, found.started + found.seconds))
            ready = guest.facts.get("ready after") or 0
            lines.append(f"  {name}: report after {ready:.0f} s; " + ", ".join(f"{f} {s:.0f} s" for f, s in families.items()))
            if os.environ.get("VM_CHECK_TIMES"):
                lines += [f"    {c} {o.seconds:.0f} s" for (_f, c), o in guest.outcomes.items() if o.seconds >= 1]
        lines += [f"  {family}: {min(s) - self.started:.0f}-{max(s) - self.started:.0f} s" for family, s in spans.items()]
        return "\n".join(lines)


def cases(*families: str) -> list[Any]:
    return [pytest.param(v.name, f, check.__name__, id=f"{v.name}-{check.__name__}")
            for v in VARIANTS for f, check in plan(v) if f in families]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    require_root()
    for tool in ("qemu-system-x86_64", "qemu-img", "genisoimage", "mmdebstrap", "mkfs.ext4", "ssh"):
        require_tool(tool)
    require(sys.platform == "linux", "needs Linux")
    # Only the guests of the selected tests boot (`-k socket` boots the socket guests).
    chosen = {item.callspec.params["guest"] for item in request.session.items
              if item.path == request.path and hasattr(item, "callspec")}
    variants = [v for v in VARIANTS if v.name in chosen]
    images = {name: image.ensure(name) for name in sorted({v.image for v in variants})}
    key_dir = tmp_path_factory.mktemp("vm-keys")
    key_dir.chmod(0o700)
    files, public = keys_in(key_dir, KEYS)
    configs = {v.name: config(v, public) for v in variants}
    stacks: dict[str, Stack] = {}
    with contextlib.ExitStack() as exits:
        guests: dict[str, Guest] = {}
        started = time.monotonic()
        # The fault guests first: each is niced as soon as its console starts, so the guests with most to do,
        # started next, get the cores (and their own start is not starved).
        for v in sorted(variants, key=lambda v: v.fault is None):
            same = json.dumps(configs[v.name], sort_keys=True)  # the fault guests of an image share one stack
            if same not in stacks:
                stacks[same] = make_stack(key_dir, configs[v.name], files, v.name)
            stack = stacks[same]
            user_data = stack.user_data
            if v.fault is not None:
                user_data = faults.inject(user_data, v.fault, stackconfig.parse(configs[v.name]).servers[0])
            # VMs start from this (the main) thread: qemu dies with it (lab.vm's parent-death signal).
            vm = exits.enter_context(VM(images[v.image], user_data, v.port, SERVER, cpus=1, more_ports=v.more_ports,
                                        nice=10 if v.fault else 0))
            guests[v.name] = Guest(v, vm, stack, files, ssh_port=v.port)

        def power_off() -> None:  # all at once, before each VM is reaped
            for guest in guests.values():
                for session in guest.sessions:
                    session.close()
                guest.vm.monitor("system_powerdown")

        exits.callback(power_off)
        for v in variants:  # the program runs in this thread (the mock engine is process-wide) while the guests boot
            if v.fault is None:
                tag = v.name
                guests[v.name].later = {name: make_stack(key_dir, c, files, f"{tag}-{name}")
                                        for name, c in later_configs(v, configs[v.name], public).items()}
            for family, check in plan(v):
                guests[v.name].outcomes[(family, check.__name__)] = Outcome()
        workers = [threading.Thread(target=g.run, args=(started + BOOT_TIMEOUT,), name=n, daemon=True) for n, g in guests.items()]
        for worker in workers:
            worker.start()
        found = Fleet(guests, started)
        yield found
        for worker in workers:
            worker.join(timeout=max(1.0, started + DEADLINE - time.monotonic()))
        reporter = request.config.pluginmanager.getplugin("terminalreporter")
        capture = request.config.pluginmanager.getplugin("capturemanager")
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line("\n" + found.timings())


# ------------------------------------------------------------------------------------------- the tests


@pytest.mark.parametrize(("guest", "family", "check"), cases("first-boot"))
def test_first_boot(fleet: Fleet, guest: str, family: str, check: str) -> None:
    fleet.outcome(guest, family, check)


@pytest.mark.parametrize(("guest", "family", "check"), cases("logins"))
def test_logins(fleet: Fleet, guest: str, family: str, check: str) -> None:
    fleet.outcome(guest, family, check)


@pytest.mark.parametrize(("guest", "family", "check"), cases("access"))
def test_access_policies(fleet: Fleet, guest: str, family: str, check: str) -> None:
    fleet.outcome(guest, family, check)


@pytest.mark.parametrize(("guest", "family", "check"), cases("socket"))
def test_socket_activation(fleet: Fleet, guest: str, family: str, check: str) -> None:
    fleet.outcome(guest, family, check)


@pytest.mark.parametrize(("guest", "family", "check"), cases("day-two", "day-two-refused", "day-two-killed"))
def test_day_two(fleet: Fleet, guest: str, family: str, check: str) -> None:
    fleet.outcome(guest, family, check)


@pytest.mark.parametrize(("guest", "family", "check"), cases("port-change"))
def test_port_change(fleet: Fleet, guest: str, family: str, check: str) -> None:
    fleet.outcome(guest, family, check)


@pytest.mark.parametrize(("guest", "family", "check"), cases("penalties-exempt", "penalties-control"))
def test_penalties(fleet: Fleet, guest: str, family: str, check: str) -> None:
    fleet.outcome(guest, family, check)


@pytest.mark.parametrize(("guest", "family", "check"), cases("faults"))
def test_faults(fleet: Fleet, guest: str, family: str, check: str) -> None:
    fleet.outcome(guest, family, check)
