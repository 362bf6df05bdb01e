"""A real OpenSSH server built from rendered user-data, on loopback, without touching the host's /etc.

What runs is the host's own ``/usr/sbin/sshd`` with Debian's own ``/etc/ssh/sshd_config``; inside a
private mount (and PID) namespace the files the user-data would write are bind-mounted where the server
would have them:

- the drop-in (default: the write_files entry ``/etc/totp-vps/sshd.conf``, the config activation
  installs) as the only file of ``/etc/ssh/sshd_config.d`` (``00-totp-vps.conf``);
- the PAM file (``/etc/totp-vps/pam-sshd``) over ``/etc/pam.d/sshd``;
- the pinned host key (``ssh_keys.ed25519_private``) over ``/etc/ssh/ssh_host_ed25519_key``;
- copies of ``/etc/passwd``, ``/etc/shadow`` and ``/etc/group`` with the admins added (locked password),
  homes in a temp dir holding ``authorized_keys`` and every write_files entry under ``/home/<admin>/``
  (the TOTP file) with the rendered owner and mode;
- the admins' ``users[].sudo`` rules as cloud-init writes them, over ``/etc/sudoers.d``;
- a fresh ``/dev`` whose ``/dev/log`` is a datagram socket this process reads, so PAM's messages end
  up in :meth:`Sshd.logs`.

Only the port (``-p``), ``ListenAddress 127.0.0.1`` and the pid file come from the command line.
When the namespace's first process ends the kernel ends every sshd in it, and all mounts vanish.

API:
- ``running_sshd(user_data, *, dropin=REAL_DROPIN, files=None, root_keys=()) -> ContextManager[Sshd]``
- ``Sshd``: ``port``, ``host_key``, ``homes``, ``login(user, **kw) -> Login``, ``logs()``, ``stop()``
  (``lab.ssh.login`` against this server: ``accepted``, ``refused_at``,
  ``steps``, ``prompts``, ``host_key``; ``str()`` is a one-line summary without secrets)
- ``sshd_config(user_data, "-T", dropin=..., files=...) -> CompletedProcess``; ``effective(stdout)``
- ``new_key(comment, kind="ed25519")``, ``load_private_key(text)``

Example::

    with running_sshd(user_data) as server:
        result = server.login("alice", key=alice_key, code=totp.now())
        assert result.accepted, f"{result}\\n{server.logs()}"
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from lab.ssh import Login, login

SSHD = "/usr/sbin/sshd"
REAL_DROPIN = "/etc/totp-vps/sshd.conf"  # what activation installs: key + TOTP
LOCKDOWN_DROPIN = "/etc/ssh/sshd_config.d/00-totp-vps.conf"  # what the first boot writes: nobody in
PAM_FILE = "/etc/totp-vps/pam-sshd"
HOST_KEY_PATH = "/etc/ssh/ssh_host_ed25519_key"
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty", "ptmx")
_FIRST_UID = 61000


def load_private_key(openssh_private: str) -> paramiko.PKey:
    """A paramiko key from an OpenSSH-format private key text (Ed25519, ECDSA or RSA)."""
    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return kind.from_private_key(io.StringIO(openssh_private))
        except paramiko.SSHException:
            continue
    raise ValueError("not an Ed25519, ECDSA or RSA private key")


# ------------------------------------------------------------------------------------------ the tree


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _taken_ids(path: str) -> set[int]:
    ids = set()
    for line in Path(path).read_text().splitlines():
        parts = line.split(":")
        if len(parts) > 2 and parts[2].isdigit():
            ids.add(int(parts[2]))
    return ids


def _mode(entry: Mapping[str, object], default: int) -> int:
    value = entry.get("permissions")
    return int(str(value), 8) if value is not None else default


class _Tree:
    """Temp dir with everything to bind-mount, and the script that mounts it and runs a command."""

    def __init__(self, user_data: str, dropin: str | None, files: Mapping[str, str | None], root_keys: Sequence[str]) -> None:
        if not user_data.startswith("#cloud-config\n"):
            raise ValueError("user-data must start with '#cloud-config'")
        data = yaml.safe_load(user_data)
        written = {str(e["path"]): e for e in data.get("write_files", [])}
        contents: dict[str, str] = {path: str(e.get("content", "")) for path, e in written.items()}
        for path, text in files.items():
            if text is None:
                contents.pop(path, None)
            else:
                contents[path] = text
                written.setdefault(path, {"path": path})

        self.dir = Path(tempfile.mkdtemp(prefix="sshd-harness-"))
        try:
            self._build(data, written, contents, dropin, root_keys)
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def _build(
        self, data: Mapping, written: Mapping, contents: Mapping[str, str], dropin: str | None, root_keys: Sequence[str]
    ) -> None:
        d = self.dir
        d.chmod(0o755)  # admins must traverse it to reach their homes
        (d / "dev").mkdir()
        confd = d / "sshd_config.d"
        confd.mkdir()
        if dropin is not None:
            if dropin not in contents:
                raise ValueError(f"user-data has no write_files entry {dropin}")
            (confd / "00-totp-vps.conf").write_text(contents[dropin])
        if PAM_FILE not in contents:
            raise ValueError(f"user-data has no write_files entry {PAM_FILE}")
        (d / "pam-sshd").write_text(contents[PAM_FILE])
        keys = data.get("ssh_keys") or {}
        self.host_key = str(keys.get("ed25519_public", "")).strip()
        fd = os.open(d / "host_key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(str(keys["ed25519_private"]))
        (d / "host_key.pub").write_text(self.host_key + "\n")

        passwd = Path("/etc/passwd").read_text().splitlines()
        shadow = Path("/etc/shadow").read_text().splitlines()
        group = Path("/etc/group").read_text().splitlines()
        taken = _taken_ids("/etc/passwd") | _taken_ids("/etc/group")
        next_id = _FIRST_UID
        sudo_rules: list[str] = []
        self.homes: dict[str, Path] = {}
        self.uids: dict[str, int] = {}
        homes = d / "home"
        homes.mkdir(mode=0o755)
        for user in data.get("users") or []:
            if not isinstance(user, Mapping):
                continue
            name = str(user["name"])
            while next_id in taken:
                next_id += 1
            uid = next_id
            taken.add(uid)
            home = homes / name
            self._home(home, uid, [str(k) for k in user.get("ssh_authorized_keys", [])])
            prefix = f"/home/{name}/"
            for path, text in contents.items():
                if path.startswith(prefix):
                    target = home / path[len(prefix) :]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(text)
                    target.chmod(_mode(written[path], 0o644))
                    os.chown(target, uid, uid)
            passwd.append(f"{name}:x:{uid}:{uid}::{home}:{user.get('shell', '/bin/sh')}")
            shadow.append(f"{name}:!:20000:0:99999:7:::")  # locked, as lock_passwd: true leaves it
            group.append(f"{name}:x:{uid}:")
            self.homes[name] = home
            self.uids[name] = uid
            rule = user.get("sudo")
            sudo_rules += [f"{name} {r}" for r in ([rule] if isinstance(rule, str) else rule or []) if r]
        # What cloud-init writes for users[].sudo (/etc/sudoers.d/90-cloud-init-users), mounted over
        # /etc/sudoers.d when the host has sudo: admins can `sudo -n` (e.g. `sshd -T`) as on a server.
        sudoers = d / "sudoers.d"
        sudoers.mkdir(mode=0o750)
        (sudoers / "90-cloud-init-users").write_text("".join(f"{r}\n" for r in sudo_rules))
        (sudoers / "90-cloud-init-users").chmod(0o440)
        if root_keys:
            root_home = d / "root"
            self._home(root_home, 0, list(root_keys))
            passwd = [f"root:x:0:0:root:{root_home}:/bin/bash" if line.startswith("root:") else line for line in passwd]
        for name, lines, mode in (("passwd", passwd, 0o644), ("shadow", shadow, 0o640), ("group", group, 0o644)):
            target = d / name
            target.write_text("\n".join(lines) + "\n")
            target.chmod(mode)
            os.chown(target, 0, os.stat(f"/etc/{name}").st_gid)
            target.chmod(mode)

    @staticmethod
    def _home(home: Path, uid: int, authorized: list[str]) -> None:
        # Writable by its owner only: StrictModes demands it and pam_google_authenticator replaces its
        # file through a temp file in the same directory.
        ssh = home / ".ssh"
        ssh.mkdir(parents=True)
        (ssh / "authorized_keys").write_text("".join(k + "\n" for k in authorized))
        for path, mode in ((home, 0o700), (ssh, 0o700), (ssh / "authorized_keys", 0o600)):
            os.chown(path, uid, uid)
            path.chmod(mode)

    def script(self, command: Sequence[str]) -> str:
        d = self.dir
        q = shlex.quote
        lines = [
            "set -e",
            f"mount --bind {q(str(d / 'sshd_config.d'))} /etc/ssh/sshd_config.d",
            f"mount --bind {q(str(d / 'pam-sshd'))} /etc/pam.d/sshd",
            f"mount --bind {q(str(d / 'host_key'))} {HOST_KEY_PATH}",
            f"if [ -e {HOST_KEY_PATH}.pub ]; then mount --bind {q(str(d / 'host_key.pub'))} {HOST_KEY_PATH}.pub; fi",
            *(f"mount --bind {q(str(d / n))} /etc/{n}" for n in ("passwd", "shadow", "group")),
            f"if [ -d /etc/sudoers.d ]; then mount --bind {q(str(d / 'sudoers.d'))} /etc/sudoers.d; fi",
            f"mount -t tmpfs -o mode=0755 harness-dev {q(str(d / 'dev'))}",
            *(f"touch {q(str(d / 'dev' / n))} && mount --bind /dev/{n} {q(str(d / 'dev' / n))}" for n in _DEVICES),
            f"mkdir {q(str(d / 'dev' / 'pts'))} && mount --rbind /dev/pts {q(str(d / 'dev' / 'pts'))}",
            f"ln -s /proc/self/fd {q(str(d / 'dev' / 'fd'))}",
            f"ln -s {q(str(d / 'log.sock'))} {q(str(d / 'dev' / 'log'))}",
            f"mount --move {q(str(d / 'dev'))} /dev",
            "[ -d /run/sshd ] || install -d -m 0755 /run/sshd",  # sshd's privilege-separation chroot
            "exec " + " ".join(q(a) for a in command),
        ]
        return "\n".join(lines) + "\n"

    def argv(self, command: Sequence[str]) -> list[str]:
        """Run ``command`` as PID 1 of fresh mount + PID namespaces: when it ends, everything in it ends."""
        return [
            "unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child=SIGTERM",
            "--mount-proc", "sh", "-c", self.script(command),
        ]  # fmt: skip

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class _SyslogSocket:
    """A datagram socket standing in for /dev/log; a thread collects what PAM and sshd log."""

    def __init__(self, path: Path) -> None:
        self.messages: list[str] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        path.chmod(0o666)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            text = data.decode(errors="replace").rstrip("\n\0")
            # "<PRI>Mon DD HH:MM:SS ident[pid]: message": keep what follows the priority.
            self.messages.append(text.split(">", 1)[1] if text.startswith("<") and ">" in text else text)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


# -------------------------------------------------------------------------------------------- public


def sshd_config(
    user_data: str,
    *args: str,
    dropin: str | None = REAL_DROPIN,
    files: Mapping[str, str | None] | None = None,
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``sshd ARGS`` (``-t``, ``-T``, ...) over Debian's sshd_config plus the rendered files, in a
    private namespace. Same options as :func:`running_sshd`."""
    tree = _Tree(user_data, dropin, files or {}, ())
    try:
        return subprocess.run(tree.argv([SSHD, *args]), capture_output=True, text=True, timeout=timeout, check=False)
    finally:
        tree.remove()


def effective(sshd_t_output: str) -> dict[str, str]:
    """``sshd -T`` output -> {lowercased keyword: value}; a keyword sshd prints on several lines
    (``allowusers``, ``hostkey``, ``port``) gets its values joined by one space, in order."""
    out: dict[str, str] = {}
    for line in sshd_t_output.splitlines():
        keyword, _, value = line.partition(" ")
        out[keyword] = f"{out[keyword]} {value}" if keyword in out else value
    return out


@dataclass
class Sshd:
    """A running sshd on 127.0.0.1 (from :func:`running_sshd`)."""

    port: int
    host_key: str
    """The pinned public host key from the user-data."""
    homes: dict[str, Path]
    """Admin name -> home directory (inside the harness's temp dir)."""
    _process: subprocess.Popen[bytes] = field(repr=False)
    _stderr: Path = field(repr=False)
    _syslog: _SyslogSocket = field(repr=False)

    def login(self, user: str, **kwargs: object) -> Login:
        """:func:`login` against this server (same keyword arguments)."""
        return login(self.port, user, **kwargs)  # type: ignore[arg-type]

    def logs(self) -> str:
        """sshd's own log (stderr) and everything sent to /dev/log (PAM), for failure messages."""
        sshd = self._stderr.read_text(errors="replace") if self._stderr.exists() else ""
        return f"--- sshd ---\n{sshd}--- syslog ---\n" + "\n".join(self._syslog.messages)

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The listening sshd's process id (as the host sees it), while it runs."""
        children = _children(self._process.pid)
        return children[0] if children else None

    def stop(self) -> None:
        """Stop sshd now (leaving the ``with`` block does it too)."""
        _stop(self._process)


@contextlib.contextmanager
def running_sshd(
    user_data: str,
    *,
    dropin: str | None = REAL_DROPIN,
    files: Mapping[str, str | None] | None = None,
    root_keys: Sequence[str] = (),
    start_timeout: float = 10.0,
) -> Iterator[Sshd]:
    """Start the host's sshd configured by ``user_data``; stop it and remove every temp file on exit.

    dropin: the write_files path whose content becomes the only drop-in (``LOCKDOWN_DROPIN`` for the
        first-boot lockdown, None for none: Debian's defaults).
    files: write_files path -> replacement content, or None to leave that file out (a missing TOTP
        file: ``{"/home/bob/.google_authenticator": None}``).
    root_keys: authorized_keys for root (its home is redirected into the temp dir), to show root is
        refused even with a valid key.
    """
    tree = _Tree(user_data, dropin, files or {}, root_keys)
    syslog: _SyslogSocket | None = None
    process: subprocess.Popen[bytes] | None = None
    try:
        syslog = _SyslogSocket(tree.dir / "log.sock")
        stderr_path = tree.dir / "sshd.log"
        for _attempt in range(5):
            port = _free_port()
            # Command-line options win over the config: only where to listen and the pid file.
            command = [SSHD, "-D", "-e", "-p", str(port), "-o", "ListenAddress=127.0.0.1", "-o", f"PidFile={tree.dir}/sshd.pid"]
            with open(stderr_path, "wb") as err:
                process = subprocess.Popen(tree.argv(command), stdin=subprocess.DEVNULL, stdout=err, stderr=err)  # noqa: S603
            if _wait_listening(process, port, start_timeout):
                break
            if "Address already in use" not in stderr_path.read_text(errors="replace"):
                raise RuntimeError(f"sshd did not start:\n{stderr_path.read_text(errors='replace')}")
            _stop(process)
        else:
            raise RuntimeError("sshd found no free port")
        server = Sshd(port=port, host_key=tree.host_key, homes=tree.homes, _process=process, _stderr=stderr_path, _syslog=syslog)
        yield server
    finally:
        if process is not None:
            _stop(process)
        if syslog is not None:
            syslog.close()
        tree.remove()


def _wait_listening(process: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(8).startswith(b"SSH-"):
                    return True
        except OSError:
            time.sleep(0.02)
    _stop(process)
    raise RuntimeError(f"sshd did not answer on port {port} within {timeout} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End the namespace: SIGTERM its first process (sshd; unshare itself ignores SIGTERM while it
    waits), and the kernel ends every other process in it. SIGKILL if that takes too long."""
    if process.poll() is not None:
        return
    for child in _children(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        for child in _children(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        process.kill()
        process.wait(timeout=10)


def _children(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def new_key(comment: str = "test", kind: str = "ed25519") -> tuple[paramiko.PKey, str]:
    """A fresh key pair: (paramiko private key, ``TYPE AAAA... comment`` public line).

    kind: ed25519, rsa (3072 bits), ecdsa-p256, ecdsa-p384 or ecdsa-p521."""
    private: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if kind == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    elif kind == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    elif kind in _CURVES:
        private = ec.generate_private_key(_CURVES[kind])
    else:
        raise ValueError(f"unknown key kind {kind!r}")
    text = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return load_private_key(text.decode()), f"{public} {comment}"


_CURVES = {"ecdsa-p256": ec.SECP256R1(), "ecdsa-p384": ec.SECP384R1(), "ecdsa-p521": ec.SECP521R1()}
