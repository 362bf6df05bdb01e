"""A real first boot: the project's rendered user-data boots a Debian VM under qemu (software emulation),
real cloud-init applies it from a NoCloud seed, and only key + TOTP gets in.

Per guest release, one module-scoped boot set: the good user-data plus one copy per injected fault, all
booted at once (they share the two host cores; together they finish sooner than one after another).
Login plan per good guest, within pam_google_authenticator's RATE_LIMIT 3 30 per user (refusals that
reach PAM count too): alice = one key+TOTP login and one wrong code; bob = one backup code twice. Key-only,
code-only, password and OpenSSH batch attempts never reach PAM.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pyotp
import pytest
from conftest import require, require_root, require_tool

from cloudinit import enrollment, hardening, render
from cloudinit.secrets import known_hosts_line
from lab import faults, image, ssh, stack
from lab.vm import VM, Report
from vpsctl.verify import verify

pytestmark = pytest.mark.vm

RELEASES = ("debian-12", "debian-13")
# debian-12 keeps the example's port 22; debian-13 moves SSH to 2222 so a non-default Port is proven too.
SSH_PORT = {"debian-12": None, "debian-13": 2222}
FAULTS = tuple(faults.FAULTS)
BOOT_TIMEOUT = 420  # seconds for all guests of a release to report (they take ~2 min together)


@dataclass
class Boot:
    """One booted guest and what the host knows about it."""

    vm: VM
    report: Report
    lab: stack.LabServer
    keys: dict[str, stack.LabKey]
    known_hosts: Path

    @property
    def port(self) -> int:
        return self.vm.host_port

    def seed(self, admin: str) -> pyotp.TOTP:
        return pyotp.TOTP(self.lab.admins[admin].seed)

    def login(self, admin: str, *, key: paramiko.PKey | None = None, code: str | None = None,
              password: str | None = None) -> ssh.Login:
        return ssh.login(self.port, admin, key=key, code=code, password=password, pinned=self.lab.host_key.public_openssh,
                         keep=True)

    def context(self) -> str:
        """What to show when an assertion about this guest fails (no secrets: status and console)."""
        return (f"\ncloud-init status:\n{self.report.out('status')}\nerrors: {self.report.errors}\n"
                f"activation log:\n{self.report.data['output_log']}\nserial log ends:\n{self.vm.serial_tail(40)}")


def wrong_code(totp: pyotp.TOTP) -> str:
    """A 6-digit code that is valid in no step of the server's window around now."""
    now = time.time()
    valid = {totp.at(now + step * 30) for step in range(-4, 5)}
    candidate = (int(totp.now()) + 500_000) % 1_000_000
    while f"{candidate:06d}" in valid:
        candidate = (candidate + 1) % 1_000_000
    return f"{candidate:06d}"


@pytest.fixture(scope="module", params=RELEASES)
def boots(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str | None, Boot]]:
    """release -> {None: good boot, fault name: faulty boot}, all running until the module ends."""
    release: str = request.param
    require_root()
    for tool in ("qemu-system-x86_64", "qemu-img", "genisoimage", "mmdebstrap", "mkfs.ext4", "ssh"):
        require_tool(tool)
    require(sys.platform == "linux", "needs Linux")
    started = time.monotonic()
    img = image.ensure(release)
    built = time.monotonic() - started
    key_dir = tmp_path_factory.mktemp(f"keys-{release}")
    key_dir.chmod(0o700)
    document = stack.load_document()
    admins = [a["name"] for a in document["config"]["totp-vps:admins"]]
    keys = {name: stack.make_key(key_dir, name) for name in admins}
    server = stack.lab_config(document, image=release, ssh_port=SSH_PORT[release], keys={n: k.public for n, k in keys.items()})
    lab = stack.render_server(server)
    user_data = {None: lab.user_data} | {f: faults.inject(lab.user_data, f, server) for f in FAULTS}
    with contextlib.ExitStack() as exits:
        # One vCPU each: four guests share two host cores, and more emulated vCPUs than host cores only add
        # contention (measured: see docs/lab.md).
        vms = {name: exits.enter_context(VM(img, data, server.ssh_port, server.name, cpus=1)) for name, data in user_data.items()}
        # Registered last, so it runs first: all guests shut down in parallel, then each VM is reaped.
        exits.callback(lambda: [v.monitor("system_powerdown") for v in vms.values()])
        reports = {name: vm.wait_report(BOOT_TIMEOUT) for name, vm in vms.items()}
        out: dict[str | None, Boot] = {}
        for name, vm in vms.items():
            known_hosts = key_dir / f"known_hosts-{name or 'good'}"
            known_hosts.write_text(known_hosts_line("127.0.0.1", vm.host_port, lab.host_key.public_openssh) + "\n")
            out[name] = Boot(vm=vm, report=reports[name], lab=lab, keys=keys, known_hosts=known_hosts)
        print(f"\nlab {release}: image ready in {built:.0f} s; {len(vms)} guests booted at once; cloud-init done after "
              + ", ".join(f"{n or 'good'} {vm.ready_after:.0f} s" for n, vm in vms.items()), file=sys.stderr)
        yield out


@pytest.fixture
def good(boots: dict[str | None, Boot]) -> Boot:
    return boots[None]


# --- inside the good guest -------------------------------------------------------------------------

def test_cloud_init_done_without_errors(good: Boot) -> None:
    assert good.report.status == "done", good.context()
    assert good.report.errors == [], good.context()
    assert "totp-vps: activated" in good.report.data["output_log"], good.context()


def test_cloud_init_schema_valid(good: Boot) -> None:
    schema = good.report.out("schema")
    assert good.report.rc("schema") == 0 and "Valid" in schema and "Invalid" not in schema, schema


def test_effective_sshd_settings(good: Boot) -> None:
    effective = good.report.effective_sshd
    wanted = set(render.effective_settings(good.lab.server.ssh_port))
    wanted |= {f"{d.lower()} {v}" for d, v in hardening.crypto_for(good.lab.server.image).items()}
    wanted |= {f"allowusers {name}" for name in good.lab.server.admin_names}  # sshd -T: one line per user
    assert wanted <= effective, f"missing: {sorted(wanted - effective)}"
    assert "denyusers *" not in effective  # the first-boot lockdown is gone


JOB_STARTING = "7d4958e842da4a758f6c1cdc7b36dcc5"  # systemd catalog: a unit's start job begins
JOB_DONE = "39f53479d3a045ac8e11786248231fbf"  # systemd catalog: a unit's start job finished


def test_sshd_first_starts_after_cloud_init_wrote_the_lockdown(good: Boot) -> None:
    """sshd must never serve the image's stock configuration (key alone would pass): its first start
    comes after cloud-init.service, whose write_files puts the lockdown drop-in in place."""
    entries = [json.loads(line) for line in good.report.out("unit_jobs").splitlines() if line.startswith("{")]

    def first(units: set[str], message_id: str) -> int:
        times = [int(e["__MONOTONIC_TIMESTAMP"]) for e in entries if e.get("UNIT") in units and e.get("MESSAGE_ID") == message_id]
        assert times, f"no {message_id} record for {units}: {[e.get('MESSAGE') for e in entries]}"
        return min(times)

    # The init (network) stage's unit: cloud-init.service, renamed cloud-init-network.service in 24.3.
    init_stage = {"cloud-init.service", "cloud-init-network.service"}
    assert first({"ssh.service"}, JOB_STARTING) > first(init_stage, JOB_DONE)


def test_totp_files_owned_by_admin_mode_0400(good: Boot) -> None:
    files = {f["path"]: f for f in good.report.data["totp_files"]}
    for admin in good.lab.server.admin_names:
        entry = files.get(f"/home/{admin}/.google_authenticator")
        assert entry is not None, files
        assert (entry["owner"], entry["mode"]) == (admin, "400"), entry


def test_metadata_block_in_place(good: Boot) -> None:
    nft = good.report.out("nft")
    assert good.report.rc("nft") == 0, nft
    assert "ip daddr 169.254.169.254 meta skuid != 0" in nft and "reject" in nft, nft


def test_ntp_client_active(good: Boot) -> None:
    assert good.report.out("chrony").strip() == "active", good.report.out("chrony")


def test_user_data_copies_root_only(good: Boot) -> None:
    for entry in good.report.data["user_data"]:
        assert (entry.get("owner"), entry.get("mode")) == ("root", "600"), entry
    # Every file of the instance is root-only, except markers cloud-init writes after runcmd (they hold a
    # timestamp, no user-data): boot-finished and the final stage's semaphores.
    late = ("/boot-finished", "/sem/")
    open_to_others = [f["path"] for f in good.report.data["cloud_files"]
                      if f.get("type") == "file" and int(f["mode"], 8) & 0o077 and not any(m in f["path"] for m in late)]
    assert open_to_others == []
    # No TOTP seed in any file a non-root user can read (cloud-init state, logs, /etc, /run/cloud-init).
    assert good.report.data["seed_exposed"] == []


# --- logins from the host --------------------------------------------------------------------------

def test_host_key_is_the_pinned_one(good: Boot) -> None:
    with ssh.login(good.port, "alice", key=good.keys["alice"].pkey()) as attempt:
        assert attempt.host_key == " ".join(good.lab.host_key.public_openssh.split()[:2])


def test_key_and_totp_accepted(good: Boot) -> None:
    with good.login("alice", key=good.keys["alice"].pkey(), code=good.seed("alice").now()) as attempt:
        assert attempt.accepted, f"{attempt}{good.context()}"
        assert attempt.prompts and "code" in attempt.prompts[0].lower()
        status, out = attempt.run("id -un && sudo -n true && echo sudo-ok")
        assert status == 0 and "alice" in out and "sudo-ok" in out, out


def test_vpsctl_verify_passes_against_the_booted_server(good: Boot) -> None:
    """The day-two command proves the live guest, from stack outputs shaped as the program exports them.
    One key + TOTP login as alice with the next step's code (DISALLOW_REUSE). It runs before the refusal
    tests below: OpenSSH >= 9.8 (debian-13) penalises a source address after failed logins
    (PerSourcePenalties), and every test connects from the same address."""
    server, pub = good.lab.server, good.lab.host_key.public_openssh
    outputs = {
        "servers": {server.name: {"sshPort": server.ssh_port, "hostPublicKey": pub,
                                  "knownHosts": known_hosts_line("127.0.0.1", good.port, pub)}},
        "enrollment": {server.name: {a: {"otpauthUri": enrollment.otpauth_uri(s.seed, server.issuer, enrollment.account(a, server.name))}
                                     for a, s in good.lab.admins.items()}},
    }
    report = verify("127.0.0.1", good.port, "alice", good.keys["alice"].pkey(), outputs, server.name, at=time.time() + 30)
    assert report.passed, report.render() + good.context()
    assert {c.id for c in report.checks} >= {"host-01", "auth-01", "auth-02", "auth-03", "sshd-01", "pam-01"}


def test_key_only_refused(good: Boot) -> None:
    with good.login("bob", key=good.keys["bob"].pkey()) as attempt:
        assert attempt.steps == (("publickey", "partial"),), attempt  # the key was a partial success, no more


def test_code_without_key_refused(good: Boot) -> None:
    with good.login("alice", code=good.seed("alice").now()) as attempt:
        assert not attempt.accepted and attempt.refused_at is not None, attempt


def test_key_and_wrong_code_refused(good: Boot) -> None:
    code = wrong_code(good.seed("alice"))
    with good.login("alice", key=good.keys["alice"].pkey(), code=code) as attempt:
        assert not attempt.accepted and attempt.refused_at == "keyboard-interactive", attempt


def test_password_refused(good: Boot) -> None:
    with good.login("alice", password="correct horse battery staple") as attempt:
        assert not attempt.accepted, attempt


def test_backup_code_accepted_once(good: Boot) -> None:
    code = good.lab.admins["bob"].backup_codes[0]
    with good.login("bob", key=good.keys["bob"].pkey(), code=code) as first:
        assert first.accepted, f"{first}{good.context()}"
    with good.login("bob", key=good.keys["bob"].pkey(), code=code) as second:
        assert not second.accepted and second.refused_at == "keyboard-interactive", second


def test_openssh_batch_mode_with_key_only_refused(good: Boot) -> None:
    done = ssh.openssh_batch(good.port, "alice", good.keys["alice"].path, good.known_hosts)
    assert done.returncode == 255, done
    assert "Permission denied" in done.stderr, done.stderr  # not "Host key verification failed": the pin matched


# --- fault injection: each fails closed and says so in cloud-init status ---------------------------

@pytest.mark.parametrize("fault", FAULTS)
def test_fault_reported_by_cloud_init(boots: dict[str | None, Boot], fault: str) -> None:
    boot = boots[fault]
    assert boot.report.status == "error", boot.context()
    assert "ACTIVATION FAILED" in boot.report.data["output_log"], boot.context()
    assert faults.EXPECTED_REASON[fault] in boot.report.data["output_log"], boot.context()
    assert any("runcmd" in e or "scripts" in e for e in boot.report.errors), boot.report.errors
    assert "DenyUsers *" in boot.report.out("dropin"), boot.report.out("dropin")


@pytest.mark.parametrize("fault", FAULTS)
def test_fault_fails_closed(boots: dict[str | None, Boot], fault: str) -> None:
    boot = boots[fault]
    admin = boot.lab.server.admin_names[0]
    key = boot.keys[admin].pkey()
    with boot.login(admin, key=key) as key_only:
        assert not key_only.accepted, key_only
    with boot.login(admin, key=key, code=boot.seed(admin).now()) as key_and_code:
        assert key_and_code.refused_at == "publickey", key_and_code  # refused at the key: the lockdown denies everyone
    with boot.login(admin, password="correct horse battery staple") as password:
        assert not password.accepted, password
    done = ssh.openssh_batch(boot.port, admin, boot.keys[admin].path, boot.known_hosts)
    assert done.returncode == 255 and "Permission denied" in done.stderr, done.stderr

