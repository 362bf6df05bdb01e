"""totp-vps-activate: apply a desired state to this server, prove it, and undo it unless confirmed.

  boot            first boot (cloud-init runcmd): apply /etc/totp-vps/desired.json, or keep SSH locked and
                  exit 1 (fail closed); every later boot (totp-vps-boot.service): roll back an unconfirmed change
  status          JSON: the applied record, a pending change, drift, the nonce the next state must be signed with
  apply           stdin {"state", "signature", "confirmWithin"}: check, apply, reload sshd; provisional until
                  `confirm`, rolled back by itself after confirmWithin seconds otherwise
  confirm SERIAL  from a NEW SSH connection: a login under the new configuration works
  rollback        undo the pending change now
  watchdog SERIAL (started by apply) roll SERIAL back when its time is up
Exit status: 0 done, 1 refused or failed (reason on stderr and in the JSON), 2 bad usage.

A change is recorded as pending, with a snapshot of everything it touches, BEFORE anything is touched, and
every step repeats safely: an interrupted apply or rollback (client gone, agent killed, reboot) is finished
by the next rollback, from the watchdog, the boot unit or by hand.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import glob
import grp
import json
import lzma
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from agent import pamtest
from agent import state as st

LIB = "/var/lib/totp-vps"
APPLIED, PENDING, SNAPSHOT, NONCE, EVENTS = (f"{LIB}/{n}" for n in ("applied.json", "pending.json", "snapshot.json",
                                                                   "nonce", "events.jsonl"))
BOOT_STATE = "/etc/totp-vps/desired.json"
METADATA_NFT = "/etc/totp-vps/metadata.nft"
LOCK = "/run/totp-vps.lock"
AGENT = "/usr/local/sbin/totp-vps-activate"
BUNDLE = "/usr/local/lib/totp-vps/agent.bundle"
SSHD = "/usr/sbin/sshd"
PAM_MODULE = "pam_google_authenticator.so"
CONFIRM = (10, 900, 120)  # seconds to confirm a change: least, most, default
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


class Refused(Exception):
    """The change is not (or no longer) applied; the message says why, without secrets."""


# ------------------------------------------------------------------------------------ system access


def run(argv: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, input=stdin, capture_output=True, timeout=120, env=ENV, check=False)
    return subprocess.CompletedProcess(argv, done.returncode, done.stdout.decode(errors="replace"),
                                       done.stderr.decode(errors="replace"))


def must(argv: list[str]) -> str:
    done = run(argv)
    if done.returncode:
        detail = (done.stderr or done.stdout).strip().splitlines() or [f"exit {done.returncode}"]
        raise Refused(f"{' '.join(argv[:2])} failed: {detail[-1][:200]}")
    return done.stdout


def read(path: str) -> str | None:
    """A file's text, never through a symlink (homes belong to their users)."""
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), encoding="utf-8", errors="surrogateescape") as fh:
            return fh.read()
    except OSError:
        return None


def write(path: str, data: str | bytes, mode: int, uid: int = 0, gid: int = 0) -> None:
    """Replace ``path`` in one rename, owner and mode set before it appears (a symlink there is replaced)."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".totp-vps.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data)
            os.fchown(fh.fileno(), uid, gid)
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def load(path: str) -> Any:
    text = read(path)
    return None if text is None else json.loads(text)


def save(path: str, data: Any) -> None:
    os.makedirs(LIB, mode=0o700, exist_ok=True)
    write(path, json.dumps(data, indent=1, sort_keys=True) + "\n", 0o600)


def systemd() -> bool:
    return os.path.isdir("/run/systemd/system")


def ticks() -> int:
    """Now, in the clock ticks since boot that /proc/PID/stat gives a process's start in."""
    with open("/proc/uptime") as fh:
        return int(float(fh.read().split()[0]) * os.sysconf("SC_CLK_TCK"))


@contextlib.contextmanager
def locked(wait: float = 0) -> Iterator[None]:
    """One change at a time."""
    with open(LOCK, "a") as handle:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise Refused("another totp-vps change is running here") from None
                time.sleep(0.2)
        yield


def event(kind: str, serial: str | None, detail: str = "") -> None:
    by = os.environ.get("SUDO_USER", "root")
    entry = {"time": int(time.time()), "event": kind, "serial": serial, "detail": detail, "by": by}
    lines = (read(EVENTS) or "").splitlines()[-199:] + [json.dumps(entry, sort_keys=True)]
    os.makedirs(LIB, mode=0o700, exist_ok=True)
    write(EVENTS, "\n".join(lines) + "\n", 0o600)


# ------------------------------------------------------------------------------------------ accounts


def user(name: str) -> pwd.struct_passwd | None:
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    return None


def is_admin(name: str) -> bool:
    with contextlib.suppress(KeyError):
        return name in grp.getgrnam(st.ADMIN_GROUP).gr_mem
    return False


def account_state(name: str) -> dict[str, Any] | None:
    entry = user(name)
    shadow = [f for f in (line.split(":") for line in (read("/etc/shadow") or "").splitlines()) if f[0] == name]
    expiry = shadow[0][7] if shadow and len(shadow[0]) > 7 else ""
    locked = bool(shadow) and len(shadow[0]) > 1 and shadow[0][1].startswith("!")
    return entry and {"shell": entry.pw_shell, "expiry": expiry, "admin": is_admin(name), "locked": locked}


def set_account(name: str, shell: str, expiry: str, admin: bool) -> None:
    """Passwords stay locked whatever else changes: keys and codes only. An account already so is left alone:
    every apply passes every account here, and two commands per account were most of a small change's time."""
    if account_state(name) == {"shell": shell, "expiry": expiry, "admin": admin, "locked": True}:
        return
    must(["usermod", "--lock", "--shell", shell, name])
    must(["chage", "--expiredate", expiry or "-1", name])
    if admin != is_admin(name):
        must(["gpasswd", "--add" if admin else "--delete", name, st.ADMIN_GROUP])


def kill_sessions(uid: int) -> int:
    """SIGKILL every process of ``uid``: its SSH sessions end with them."""
    killed = 0
    for _round in range(5):
        found = [p for p in os.listdir("/proc") if p.isdigit() and (read(f"/proc/{p}/status") or "").count(f"\nUid:\t{uid}\t")]
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
                killed += 1
        if not found:
            break
        time.sleep(0.1)
    return killed


def totp_path(name: str) -> str:
    entry = user(name)
    return os.path.join(entry.pw_dir if entry else f"/home/{name}", st.TOTP_FILE)


def key_path(name: str) -> str:
    return f"{st.KEYS_DIR}/{name}"


def sudo_totp_path(name: str) -> str:
    return f"{st.SUDO_TOTP_DIR}/{name}"


def seed_digest(text: str | None) -> str | None:
    return None if text is None else st.digest(st.totp_parts(text)[0])


def installed_agent() -> dict[str, str]:
    """The installed agent as the renderer lists it: its modules and the launcher."""
    try:
        with open(BUNDLE, "rb") as fh:
            files = st.unbundle(fh.read())
    except (OSError, ValueError, lzma.LZMAError):
        files = {}
    return {**files, st.LAUNCHER: read(AGENT) or ""}


def accounts(state: dict[str, Any]) -> Iterator[tuple[dict[str, Any], bool]]:
    """(account, is a service account)."""
    yield from ((a, False) for a in state["admins"])
    yield from ((s, True) for s in state["serviceAccounts"])


def managed(record: dict[str, Any] | None) -> set[str]:
    return set(record["admins"]) | set(record["serviceAccounts"]) if record else set()


# ------------------------------------------------------------------------------------------ checking


def check_pam_module() -> None:
    if not any(glob.glob(f"{p}/security/{PAM_MODULE}") for p in ("/lib/*", "/usr/lib/*", "/lib", "/usr/lib")):
        raise Refused(f"{PAM_MODULE} missing (libpam-google-authenticator not installed)")


def check_pam() -> None:
    """The installed sshd and sudo stacks need the code: asked through libpam itself, for a probe account."""
    if user(pamtest.PROBE) is None:
        must(["useradd", "--system", "--create-home", "--home-dir", "/var/lib/totp-vps-probe", "--shell", "/usr/sbin/nologin",
              pamtest.PROBE])
    probe = user(pamtest.PROBE)
    if probe is None:
        raise Refused(f"no {pamtest.PROBE} account to ask PAM with")
    sudo = sudo_totp_path(pamtest.PROBE)
    for service, path, owner in (("sshd", os.path.join(probe.pw_dir, st.TOTP_FILE), (probe.pw_uid, probe.pw_gid)),
                                 ("sudo", sudo, (0, 0)), ("sudo-i", sudo, (0, 0))):
        problem = pamtest.check(service, path, lambda p, text, o=owner: write(p, text, 0o400, *o), remove)  # type: ignore[misc]
        if problem:
            raise Refused(f"PAM {service}: {problem}")


def check_sudoers(text: str) -> None:
    visudo = shutil.which("visudo", path=ENV["PATH"])
    if visudo:  # without sudo on the image the file is inert
        with tempfile.NamedTemporaryFile("w", dir="/run") as tmp:
            tmp.write(text)
            tmp.flush()
            done = run([visudo, "-c", "-q", "-f", tmp.name])
        if done.returncode:
            raise Refused(f"visudo rejects the sudoers file: {(done.stderr or done.stdout).strip()[:200]}")


def effective(name: str, addr: str, port: int) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    spec = f"user={name},host=totp-vps.invalid,addr={addr},laddr=0.0.0.0,lport={port}"
    for line in must([SSHD, "-T", "-C", spec]).splitlines():
        keyword, _, value = line.partition(" ")
        values.setdefault(keyword, []).append(value)
    return values


def sshd_files() -> list[str]:
    """The files sshd reads: its main file and the drop-ins its Include names (Debian's and Ubuntu's layout)."""
    return ["/etc/ssh/sshd_config", *sorted(glob.glob("/etc/ssh/sshd_config.d/*.conf"))]


def check_sshd(state: dict[str, Any]) -> None:
    """`sshd -t`, then what sshd will do for every account, from inside and outside its networks."""
    done = run([SSHD, "-t"])
    if done.returncode:
        raise Refused(f"sshd -t rejects the configuration: {(done.stderr or done.stdout).strip()[:300]}")
    port = state["sshPort"]
    inside = [st.first_host(c) for s in state["serviceAccounts"] for c in s["fromCidrs"]]
    texts = [read(p) or "" for p in sshd_files()]
    # Every address any file sshd reads names (a Match Address block), not only the probes.
    addresses = st.probe_addresses(texts) + inside
    # Where no file tells users apart, one question per address answers for all of them (each one costs ~10 ms
    # of CPU; asked per account they were most of a change's time, on top of every sync's two logins).
    blind = st.same_for_every_user(texts)
    common = {"port": [str(port)], "allowusers": st.allow_users(state)}
    checks: list[tuple[str, str, tuple[str, ...], str | None]] = [
        (a["name"], addr, st.admin_lines(state), None) for a in state["admins"] for addr in dict.fromkeys(addresses)]
    checks += [(s["name"], st.first_host(c), (*st.SERVICE_EFFECTIVE, *st.KEY_SOURCES), s.get("command") or "none")
               for s in state["serviceAccounts"] for c in s["fromCidrs"]]
    checks += [("root", addr, ("permitrootlogin no",), None) for addr in dict.fromkeys(addresses)]
    answers: dict[tuple[str, str], dict[str, list[str]]] = {}
    for name, addr, wanted, forced in checks:
        asked = ("", addr) if blind else (name, addr)
        if asked not in answers:
            answers[asked] = effective(name, addr, port)
        have = answers[asked]
        expect = {**common, **{k: [v] for k, v in (line.split(" ", 1) for line in wanted)}}
        if forced:
            expect["forcecommand"] = [forced]
        for keyword, values in expect.items():
            if sorted(have.get(keyword, [])) != sorted(values):
                raise Refused(f"sshd for {name} from {addr}: {keyword} is {have.get(keyword)}, want {values}")


def check_installed(state: dict[str, Any]) -> None:
    """What was installed is byte for byte what the state says, and sshd and PAM judge it as intended."""
    expected = {**state["files"], **{key_path(a["name"]): st.authorized_keys(a, service) for a, service in accounts(state)}}
    for path, text in expected.items():
        if read(path) != text:
            raise Refused(f"{path} does not hold what was installed")
    check_pam()
    check_sshd(state)


# -------------------------------------------------------------------------------------- sshd control


def sshd_unit() -> str:
    for unit in ("ssh.service", "sshd.service"):
        if run(["systemctl", "cat", unit]).returncode == 0:
            return unit
    raise Refused("no ssh.service or sshd.service")


def listener_pid() -> int | None:
    if systemd():
        out = run(["systemctl", "show", "--property=MainPID", "--value", sshd_unit()]).stdout.strip()
    else:
        out = (read("/run/sshd.pid") or "").strip()  # Debian's and Ubuntu's PidFile
    return int(out) if out.isdigit() and out != "0" else None


def listening(pid: int | None) -> dict[int, int]:
    """socket inode -> TCP port, for every listening socket ``pid`` holds."""
    inodes = set()
    for fd in glob.glob(f"/proc/{pid}/fd/*"):
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    rows = [line.split() for t in ("tcp", "tcp6") for line in (read(f"/proc/net/{t}") or "").splitlines()[1:]]
    return {int(f[9]): int(f[1].rsplit(":", 1)[1], 16) for f in rows if len(f) > 9 and f[3] == "0A" and int(f[9]) in inodes}


def reload_sshd(port: int) -> int:
    """sshd reads its configuration again (sessions survive) and listens on ``port`` only. Returns when (ticks
    since boot) it did: a connection accepted later is served by the new configuration."""
    before = set(listening(listener_pid()))
    if systemd():
        unit = sshd_unit()
        if any(run(["systemctl", verb, "--quiet", "ssh.socket"]).returncode == 0 for verb in ("is-enabled", "is-active")):
            # ssh.socket keeps a port of its own: the service takes the listener, so sshd_config's Port is the one
            # source of truth and every later change is a plain reload.
            must(["systemctl", "disable", "--now", "ssh.socket"])
            for leftover in ("ssh.service.d/00-socket.conf", "ssh.socket.d/addresses.conf"):  # Ubuntu's, if any
                remove(f"/etc/systemd/system/{leftover}")
            for verb in ("daemon-reload", "enable", "restart"):
                must(["systemctl", verb, *([unit] if verb != "daemon-reload" else [])])
        else:
            active = run(["systemctl", "is-active", "--quiet", unit]).returncode == 0
            must(["systemctl", "reload" if active else "start", unit])
    else:
        pid = listener_pid()
        if pid is None:
            raise Refused("sshd is not running (no /run/sshd.pid)")
        os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = listening(listener_pid())
        if now and not set(now) & before:  # the re-executed listener's own sockets
            if set(now.values()) != {port}:
                raise Refused(f"sshd listens on port(s) {sorted(set(now.values()))}, want exactly {port}")
            return ticks()
        time.sleep(0.1)
    raise Refused(f"sshd did not listen again on port {port} within 20 s")


def configured_port() -> int:
    ports = [line.split()[1] for line in run([SSHD, "-T"]).stdout.splitlines() if line.startswith("port ")]
    if len(ports) != 1:
        raise Refused(f"the installed configuration names port(s) {ports}, not one")
    return int(ports[0])


# ------------------------------------------------------------------------------------ change and undo


def snapshot(state: dict[str, Any], applied: dict[str, Any] | None) -> dict[str, Any]:
    """Everything applying ``state`` may touch, as it is now: files (content, mode, owner) and accounts."""
    names = {a["name"] for a, _ in accounts(state)} | managed(applied)
    paths = set(state["files"]) | {f(n) for n in names for f in (key_path, sudo_totp_path, totp_path)}
    if state.get("agentFiles"):
        paths |= {BUNDLE, AGENT}
    files: dict[str, Any] = {}
    for path in sorted(paths):
        text = read(path)
        info = os.lstat(path) if text is not None else None
        files[path] = info and {"data": base64.b64encode(text.encode("utf-8", "surrogateescape")).decode(),  # type: ignore[union-attr]
                                "mode": info.st_mode & 0o7777, "uid": info.st_uid, "gid": info.st_gid}
    return {"files": files, "accounts": {n: account_state(n) for n in sorted(names)}}


def restore(snap: dict[str, Any]) -> None:
    """Put back what a snapshot holds; safe to run again after an interruption."""
    for path, saved in snap["files"].items():
        if saved is None:
            remove(path)
        elif os.path.isdir(os.path.dirname(path)):
            write(path, base64.b64decode(saved["data"]), saved["mode"], saved["uid"], saved["gid"])
    for name, saved in snap["accounts"].items():
        if saved:
            set_account(name, saved["shell"], saved["expiry"], saved["admin"])
        elif user(name):  # created by the change: it may no longer log in
            set_account(name, "/usr/sbin/nologin", "1", False)


def change(state: dict[str, Any], applied: dict[str, Any] | None) -> list[str]:
    """Make the server hold ``state``; returns what changed, in words (no secrets)."""
    done: list[str] = []
    new, old = st.record(state)["admins"], (applied or {}).get("admins", {})
    for directory, mode in ((st.KEYS_DIR, 0o755), (st.SUDO_TOTP_DIR, 0o700)):
        os.makedirs(directory, mode=mode, exist_ok=True)
        os.chmod(directory, mode)
    if run(["getent", "group", st.ADMIN_GROUP]).returncode:
        must(["groupadd", "--system", st.ADMIN_GROUP])
    shipped = state.get("agentFiles")
    if shipped and installed_agent() != shipped:  # used from the next run on; this one finishes as it started
        write(BUNDLE, st.bundle({k: v for k, v in shipped.items() if k != st.LAUNCHER}), 0o644)
        write(AGENT, shipped[st.LAUNCHER], 0o755)
        done.append("agent updated")
    for account, service in accounts(state):
        name = account["name"]
        if user(name) is None:
            must(["useradd", "--create-home", "--user-group", "--shell", account["shell"], "--comment", "totp-vps", name])
            done.append(f"+{name}")
        set_account(name, account["shell"], "", not service)
        entry = user(name)
        if entry is None:
            raise Refused(f"{name}: the account vanished while it was set up")
        if not os.path.isdir(entry.pw_dir):  # an adopted account whose home never existed
            os.makedirs(entry.pw_dir, mode=0o700)
            os.chown(entry.pw_dir, entry.pw_uid, entry.pw_gid)
        keys = st.authorized_keys(account, service)
        if read(key_path(name)) != keys:
            write(key_path(name), keys, 0o644)
            done.append(f"{name}: keys")
        if service:
            continue
        # pam_google_authenticator rewrites this file at every login (used backup codes, rate limit, reuse):
        # written only for a new admin or a new secret, or used codes would come back to life.
        if old.get(name, {}).get("totp") != new[name]["totp"]:
            write(totp_path(name), account["totp"], 0o400, entry.pw_uid, entry.pw_gid)
            done.append(f"{name}: totp file")
        if account["sudo"] != "totp":
            remove(sudo_totp_path(name))
        elif old.get(name, {}).get("sudoTotp") != new[name]["sudoTotp"]:
            write(sudo_totp_path(name), account["sudoTotp"], 0o400)
            done.append(f"{name}: sudo totp file")
    for path, text in state["files"].items():
        if read(path) != text:
            write(path, text, st.FILES[path])
            done.append(path)
    for name in sorted(managed(applied) - {a["name"] for a, _ in accounts(state)}):
        done.append(f"-{name}" + offboard(name, state["offboarding"]["removeHome"]))
    return done


def offboard(name: str, remove_home: bool) -> str:
    """Locked and expired, keys and TOTP files gone, out of the admin group, every session ended."""
    for path in (key_path(name), sudo_totp_path(name), totp_path(name)):
        remove(path)
    entry = user(name)
    if entry is None:
        return ""
    set_account(name, "/usr/sbin/nologin", "1", False)
    killed = kill_sessions(entry.pw_uid)
    if remove_home and entry.pw_dir.startswith("/home/"):
        shutil.rmtree(entry.pw_dir, ignore_errors=True)
    return f" ({killed} processes ended)" if killed else ""


def verify_signature(state: dict[str, Any], signature: object, applied: dict[str, Any]) -> None:
    nonce = (read(NONCE) or "").strip()
    if not isinstance(signature, str) or not nonce:
        raise Refused("the change is not signed, or there is no nonce yet (run status first)")
    with tempfile.TemporaryDirectory(dir="/run") as tmp:
        with open(f"{tmp}/allowed", "w") as fh:
            fh.write(f'totp-vps namespaces="{st.SIGNATURE_NAMESPACE}" {applied["signerKey"]}\n')
        with open(f"{tmp}/sig", "w") as fh:
            fh.write(signature)
        done = run(["ssh-keygen", "-Y", "verify", "-f", f"{tmp}/allowed", "-I", "totp-vps", "-n", st.SIGNATURE_NAMESPACE,
                    "-s", f"{tmp}/sig"], stdin=st.signed_message(state, nonce))
    if done.returncode:
        raise Refused("the signature does not verify with this server's signer key and nonce (signed for another "
                      "server, an older state, or by another stack)")


def applied_record(state: dict[str, Any]) -> dict[str, Any]:
    """What is kept of an applied state: its record, the key that signs the next one, and digests of the
    seeds written (to tell a file changed on the server from one whose backup codes were used)."""
    return {**st.record(state), "signerKey": state["signer"], "appliedAt": int(time.time()),
            "totpSeeds": {a["name"]: [seed_digest(a["totp"]), seed_digest(a.get("sudoTotp"))] for a in state["admins"]}}


def apply(raw: object, *, signature: object = None, within: int = CONFIRM[2], first_boot: bool = False) -> dict[str, Any]:
    """Check, apply, reload and prove a desired state. Day two: it is then pending confirmation."""
    state = st.validate(raw)
    serial = st.serial(state)
    applied = load(APPLIED)
    if load(PENDING) is not None:
        raise Refused("another change is pending confirmation: confirm or roll it back first")
    if not first_boot:
        if applied is None:
            raise Refused("nothing is applied here yet: the first state comes with the user-data (boot)")
        verify_signature(state, signature, applied)
    if st.agent_digest(state.get("agentFiles") or installed_agent()) != state["agent"]["sha256"]:
        raise Refused("the agent is not the state's (send its files with the state)")
    check_pam_module()
    check_sudoers(state["files"][st.SUDOERS])
    if applied is not None and applied["serial"] == serial and not drift(applied):
        return {"result": "unchanged", "serial": serial}

    save(SNAPSHOT, snapshot(state, applied))
    pending = {"serial": serial, "previous": applied and applied["serial"], "deadline": time.time() + within,
               "within": within, "phase": "applying", "firstBoot": first_boot, "port": state["sshPort"]}
    save(PENDING, pending)
    if not first_boot:
        start_watchdog(serial)  # first: even if this process dies mid-way, the change is undone in time
    try:
        done = change(state, applied)
        check_installed(state)
        reloaded = reload_sshd(state["sshPort"])
    except (Refused, OSError, subprocess.SubprocessError) as exc:
        undo(f"refused: {exc}")
        raise Refused(str(exc)) from None
    if first_boot:
        commit(applied_record(state), "activated at first boot")
    else:
        pending.update(phase="awaiting-confirmation", reloadedAt=reloaded, changes=done, record=applied_record(state))
        save(PENDING, pending)
        write(NONCE, secrets.token_hex(16) + "\n", 0o600)  # the signature can never be used again
        event("pending", serial, ", ".join(done))
    return {"result": "applied" if first_boot else "pending", "serial": serial, "changes": done,
            "deadline": pending["deadline"], "sshPort": state["sshPort"], "admins": [a["name"] for a in state["admins"]]}


def commit(record: dict[str, Any], why: str) -> None:
    save(APPLIED, record)
    remove(PENDING)
    remove(SNAPSHOT)
    event("applied", record["serial"], why)


def undo(reason: str, restart: bool = True) -> dict[str, Any]:
    """Roll the pending change back to its snapshot (a failed first boot: to the lockdown)."""
    pending = load(PENDING)
    if pending is None:
        return {"result": "nothing pending"}
    snap = load(SNAPSHOT)
    if snap is not None:
        restore(snap)
    if pending.get("firstBoot"):
        lock_ssh(pending["port"])
    if restart:
        with contextlib.suppress(Refused, OSError, subprocess.SubprocessError, ValueError):
            reload_sshd(configured_port())
    remove(SNAPSHOT)
    remove(PENDING)
    event("rolled back", pending["serial"], reason)
    return {"result": "rolled back", "serial": pending["serial"], "reason": reason}


def lock_ssh(port: int) -> None:
    """Fail closed with the lockdown's own text, never a copy of whatever happens to be installed."""
    write(st.DROPIN, st.lockdown(port), 0o644)


def confirm(serial: str) -> dict[str, Any]:
    pending = load(PENDING)
    if pending is None or pending["serial"] != serial:
        raise Refused(f"no change {st.short(serial)} is pending (rolled back already, or confirmed)")
    if pending["phase"] != "awaiting-confirmation":
        raise Refused("the change is still being applied")
    started = connection_started()
    if started is None:
        raise Refused("confirm runs in an SSH session: it proves that a login under the new configuration works")
    if started <= pending["reloadedAt"]:
        raise Refused("this SSH connection was opened before the change: confirm from a NEW login")
    commit(pending["record"], "confirmed: a new login under the new configuration worked")
    return {"result": "confirmed", "serial": serial}


def connection_started() -> int | None:
    """When (ticks since boot) the SSH connection this process runs in was accepted: the start of the
    process right below the sshd listener among our ancestors. None outside SSH."""
    chain: list[tuple[str, int]] = []
    pid = os.getpid()
    while pid > 0 and len(chain) < 64:
        text = read(f"/proc/{pid}/stat")
        if text is None:
            break
        fields = text[text.rindex(")") + 2 :].split()
        chain.append((text[text.index("(") + 1 : text.rindex(")")], int(fields[19])))
        pid = int(fields[1])
    sshd = [started for name, started in chain if name in ("sshd", "sshd-session", "sshd-auth")]
    return sshd[-2] if len(sshd) >= 2 else None


def start_watchdog(serial: str) -> None:
    argv = [AGENT, "watchdog", serial]
    if systemd():  # outside the SSH session's scope: the rollback must outlive the client that started it
        must(["systemd-run", "--quiet", "--collect", f"--unit=totp-vps-watchdog-{st.short(serial)}", *argv])
        return
    if os.fork() == 0:  # detached: its own session, no terminal, no inherited descriptors
        try:
            os.setsid()
            if os.fork() == 0:
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                os.closerange(3, 1024)
                os.execv(argv[0], argv)
        finally:
            os._exit(0)
    os.wait()


def watchdog(serial: str) -> int:
    while (pending := load(PENDING)) and pending["serial"] == serial:
        if time.time() >= pending["deadline"]:
            with locked(wait=60):
                if (load(PENDING) or {}).get("serial") == serial:
                    undo(f"no confirmation within {pending['within']} s")
            break
        time.sleep(min(1.0, max(0.05, pending["deadline"] - time.time())))
    return 0


# ------------------------------------------------------------------------------------------- status


def drift(applied: dict[str, Any]) -> list[str]:
    """How the server differs from the state it last applied (edited by hand, files gone)."""
    found = [f"{p} was changed on the server" for p, digest in applied["files"].items() if st.digest(read(p) or "") != digest]
    for name in sorted(managed(applied)):
        entry = applied["admins"].get(name) or applied["serviceAccounts"][name]
        if user(name) is None:
            found.append(f"{name}: the account is missing")
            continue
        if st.digest(read(key_path(name)) or "") != entry["keysFile"]:
            found.append(f"{name}: the authorized keys were changed on the server")
        for what, path, want in zip(("TOTP", "sudo TOTP"), (totp_path(name), sudo_totp_path(name)),
                                    applied["totpSeeds"].get(name, [None, None]), strict=True):
            have = seed_digest(read(path))
            if want and have != want:
                found.append(f"{name}: the {what} file is missing (rotate {name} to issue a new one)" if have is None
                             else f"{name}: the {what} seed was changed on the server")
    return found


def status() -> dict[str, Any]:
    applied = load(APPLIED)
    if applied and not (read(NONCE) or "").strip():
        write(NONCE, secrets.token_hex(16) + "\n", 0o600)
    pending = load(PENDING)
    return {
        "agent": st.agent_digest(installed_agent()),
        "applied": applied and {k: v for k, v in applied.items() if k != "totpSeeds"},
        "pending": pending and {k: pending.get(k) for k in ("serial", "previous", "deadline", "phase")},
        "drift": drift(applied) if applied else [],
        "nonce": (read(NONCE) or "").strip() or None,
        "events": [json.loads(line) for line in (read(EVENTS) or "").splitlines()[-10:]],
    }


# ---------------------------------------------------------------------------------------- boot, main


def boot() -> int:
    with locked(wait=120):
        if load(PENDING) is not None:
            active = systemd() and run(["systemctl", "is-active", "--quiet", sshd_unit()]).returncode == 0
            # Before sshd starts (the boot unit) there is nothing to reload: it reads the restored files.
            print(f"totp-vps: {undo('the server started before the change was confirmed', restart=active)['result']}")
        if load(APPLIED) is not None:
            print("totp-vps: the applied state stays in place")
            return 0
        text, state = read(BOOT_STATE), None
        try:
            if text is None:
                raise Refused(f"{BOOT_STATE} is missing")
            state = st.unpack(text.encode())
            if os.path.exists(METADATA_NFT):  # the metadata service serves the user-data: root only
                must(["nft", "-f", METADATA_NFT])
            result = apply(state, first_boot=True)
        except (Refused, ValueError, lzma.LZMAError) as exc:  # StateError and JSON errors are ValueErrors
            port = state.get("sshPort") if isinstance(state, dict) else None
            lock_ssh(port if type(port) is int else 22)
            if systemd():
                run(["systemctl", "restart", sshd_unit()])
            print(f"totp-vps: ACTIVATION FAILED, SSH stays locked (fail closed): {exc}", file=sys.stderr)
            return 1
        if systemd():
            run(["systemctl", "enable", "totp-vps-boot.service"])
        run(["chmod", "-R", "go-rwx", "/var/lib/cloud/instances"])  # cloud-init's copies hold the seeds
        print(f"totp-vps: activated: SSH on port {result['sshPort']} needs key + TOTP for: {' '.join(result['admins'])} "
              f"(state {st.short(result['serial'])})")
        return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    arity = {"boot": 0, "status": 0, "effective": 0, "apply": 0, "rollback": 0, "confirm": 1, "watchdog": 1}
    if not args or arity.get(args[0]) != len(args) - 1 or (len(args) == 2 and not st.SERIAL.fullmatch(args[1])):
        print("usage: totp-vps-activate boot | status | effective | apply | confirm SERIAL | rollback | watchdog SERIAL",
              file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("totp-vps-activate: run as root (sudo)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the SSH session that started a change may vanish mid-way
    os.umask(0o077)
    command = args[0]
    if command in ("boot", "watchdog"):
        return boot() if command == "boot" else watchdog(args[1])
    if command == "effective":
        # Read-only, for vpsctl verify whatever the caller's sudo mode: what sshd applies to the admin who ran
        # it (sudo sets SUDO_USER), from nowhere in particular, on the configured port.
        caller = os.environ.get("SUDO_USER") or "root"
        done = run([SSHD, "-T", "-C", f"user={caller},host=totp-vps.invalid,addr={st.PROBES[0]},laddr=0.0.0.0,"
                    f"lport={configured_port()}"])
        sys.stdout.write(done.stdout)
        return done.returncode
    try:
        if command == "status":
            result = status()
        elif command == "apply":
            raw = sys.stdin.buffer.read(st.MAX_STATE + 1)
            data = json.loads(raw) if len(raw) <= st.MAX_STATE else None
            within = data.get("confirmWithin", CONFIRM[2]) if isinstance(data, dict) else None
            if type(within) is not int or not CONFIRM[0] <= within <= CONFIRM[1]:
                raise Refused(f"the input is not a state with confirmWithin {CONFIRM[0]}-{CONFIRM[1]} seconds")
            with locked():
                result = apply(data.get("state"), signature=data.get("signature"), within=within)  # type: ignore[union-attr]
        else:
            with locked(wait=30):
                result = confirm(args[1]) if command == "confirm" else undo("rolled back by hand")
    except (Refused, ValueError) as exc:  # StateError and JSON errors are ValueErrors
        return refused(str(exc))
    except (OSError, subprocess.SubprocessError, KeyError, TypeError) as exc:
        return refused(f"internal error ({type(exc).__name__}: {exc})")
    output(result)
    return 0


def refused(reason: str) -> int:
    with contextlib.suppress(Refused, OSError):
        event("refused", None, reason)
    output({"result": "refused", "reason": reason})
    print(f"totp-vps-activate: refused: {reason}", file=sys.stderr)
    return 1


def output(result: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the client may be gone: the change goes on regardless
        sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
