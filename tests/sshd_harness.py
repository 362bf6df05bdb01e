"""A real server on this machine: the host's own sshd, PAM, sudo and user tools and the project's agent,
set up from rendered user-data as cloud-init would lay it down, in private mount and PID namespaces.

Inside the namespaces ``/etc``, ``/usr/local`` and ``/var/lib`` are overlays on the host's (so ``useradd``
and the agent write real files, and the host's stay untouched), ``/home`` and ``/run`` are empty, ``/dev`` is
a fresh minimal one whose ``/dev/log`` is a datagram socket this process reads (PAM's messages end up in
:meth:`Server.logs`). Then, as at a first boot: sshd's drop-ins and host keys are cleared, the pinned host
key and every ``write_files`` entry are written, sshd starts with the lockdown drop-in (listening on
127.0.0.1 at the port the user-data names), and ``totp-vps-activate boot`` runs: the same activation a real
server runs from cloud-init's runcmd. What is not emulated: bootcmd (the metadata block would change the
host's firewall; tests/test_metadata_block.py proves it in a network namespace), packages, systemd.

When the namespace's first process ends the kernel ends every process in it, and all mounts vanish.

API:
- ``running_server(user_data, *, boot=True, files=None) -> ContextManager[Server]``
- ``Server``: ``port``, ``host_key``, ``activation`` (the first boot's CompletedProcess), ``login(user, **kw)``
  (vpsctl.sshclient.login with this server's port and pinned key), ``root(argv, stdin=...)`` (run as root
  inside), ``read(path)``, ``write(path, text, mode)``, ``agent(*args, stdin=...)``, ``reload()``, ``logs()``
- ``new_key(comment, kind="ed25519")``, ``load_private_key(text)``, ``effective(sshd_T_output)``

Example::

    with running_server(user_data) as server:
        result = server.login("alice", key=alice_key, code=totp.now())
        assert result.accepted, f"{result}\\n{server.logs()}"
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from cloudinit import cloudconfig
from vpsctl.sshclient import Login, login

SSHD = "/usr/sbin/sshd"
AGENT = "/usr/local/sbin/totp-vps-activate"
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_OVERLAYS = ("/etc", "/usr/local", "/var/lib")
# PID 1 of the namespace: reaps orphans (ended sessions, the agent's watchdog) so nothing lingers as a zombie.
_REAPER = "import os, time\nwhile True:\n    try:\n        os.wait()\n    except ChildProcessError:\n        time.sleep(0.2)\n"
# Lays down write_files entries inside the namespace, as cloud-init's write_files does (mkdir -p, mode, root).
_WRITER = (
    "import base64, json, os, sys\n"
    "for path, mode, data in json.load(sys.stdin):\n"
    "    os.makedirs(os.path.dirname(path), exist_ok=True)\n"
    "    with open(path, 'wb') as fh:\n"
    "        fh.write(base64.b64decode(data))\n"
    "    os.chmod(path, int(mode, 8))\n"
)


def load_private_key(openssh_private: str) -> paramiko.PKey:
    """A paramiko key from an OpenSSH-format private key text (Ed25519, ECDSA or RSA)."""
    for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return kind.from_private_key(io.StringIO(openssh_private))
        except paramiko.SSHException:
            continue
    raise ValueError("not an Ed25519, ECDSA or RSA private key")


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


def effective(sshd_t_output: str) -> dict[str, str]:
    """``sshd -T`` output -> {lowercased keyword: value}; a keyword printed on several lines (``allowusers``,
    ``hostkey``, ``port``) gets its values joined by one space, in order."""
    out: dict[str, str] = {}
    for line in sshd_t_output.splitlines():
        keyword, _, value = line.partition(" ")
        out[keyword] = f"{out[keyword]} {value}" if keyword in out else value
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Syslog:
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


@dataclass
class Server:
    """A running server (from :func:`running_server`)."""

    port: int
    host_key: str
    """The pinned public host key from the user-data."""
    dir: Path
    init: subprocess.Popen[bytes] = field(repr=False)
    """``unshare``: it stays outside; its child is the namespace's PID 1 (``inside``)."""
    inside: int = field(repr=False)
    """PID 1 of the namespaces, as the host sees it (what nsenter enters)."""
    syslog: _Syslog = field(repr=False)
    activation: subprocess.CompletedProcess[str] | None = None
    """What the first boot's ``totp-vps-activate boot`` did (None with ``boot=False``)."""
    sshd: subprocess.Popen[bytes] | None = field(default=None, repr=False)


    def root(self, argv: Sequence[str], stdin: str | bytes | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as root inside the server's namespaces."""
        data = stdin.encode() if isinstance(stdin, str) else stdin
        done = subprocess.run(["nsenter", "-t", str(self.inside), "-m", "-p", *argv], input=data, capture_output=True,
                              timeout=timeout, check=False)
        return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(errors="replace"),
                                           done.stderr.decode(errors="replace"))

    def agent(self, *args: str, stdin: str | bytes | None = None) -> subprocess.CompletedProcess[str]:
        return self.root([AGENT, *args], stdin=stdin)

    def read(self, path: str) -> str | None:
        done = self.root(["cat", path])
        return done.stdout if done.returncode == 0 else None

    def write(self, path: str, text: str, mode: str = "0644") -> None:
        """Change a file by hand, bypassing the agent (to show what sshd or PAM would do with it)."""
        self._put([(path, mode, text.encode())])

    def _put(self, files: Sequence[tuple[str, str, bytes]]) -> None:
        payload = json.dumps([(p, m, base64.b64encode(d).decode()) for p, m, d in files])
        done = self.root([sys.executable, "-I", "-c", _WRITER], stdin=payload)
        if done.returncode != 0:
            raise RuntimeError(f"writing files in the server failed: {done.stderr}")

    def reload(self) -> None:
        """SIGHUP sshd, as `systemctl reload ssh` does (bypassing the agent); returns once the new configuration
        listens. sshd re-executes itself on SIGHUP and opens a new listening socket: until then the old one may
        still answer, so wait for the new socket, not for any answer."""
        before = _listeners(self.port)
        done = self.root(["sh", "-c", "kill -HUP $(cat /run/sshd.pid)"])
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        deadline = time.monotonic() + 10
        while not _listeners(self.port) - before and time.monotonic() < deadline:
            time.sleep(0.02)
        if not _wait_listening(self.port, max(deadline - time.monotonic(), 0.1)):
            raise RuntimeError(f"sshd did not listen again after SIGHUP: {(self.dir / 'sshd.log').read_text(errors='replace')}")

    def login(self, user: str, **kwargs: object) -> Login:
        """:func:`vpsctl.sshclient.login` against this server (same keyword arguments; pinned host key)."""
        kwargs.setdefault("pinned", self.host_key)
        return login(self.port, user, **kwargs)  # type: ignore[arg-type]

    def logs(self) -> str:
        """sshd's own log (stderr), everything sent to /dev/log (PAM), and the first boot's output."""
        sshd = (self.dir / "sshd.log").read_text(errors="replace") if (self.dir / "sshd.log").exists() else ""
        boot = f"{self.activation.stdout}{self.activation.stderr}" if self.activation else ""
        return f"--- sshd ---\n{sshd}--- syslog ---\n" + "\n".join(self.syslog.messages) + f"\n--- activation ---\n{boot}"

    @property
    def running(self) -> bool:
        return self.init.poll() is None

    def stop(self) -> None:
        _end(self.init)


def _script(d: Path) -> str:
    q = shlex.quote
    lines = ["set -e"]
    for i, target in enumerate(_OVERLAYS):
        upper, work = d / f"upper{i}", d / f"work{i}"
        upper.mkdir()
        work.mkdir()
        lines.append(f"mount -t overlay overlay -o lowerdir={target},upperdir={q(str(upper))},workdir={q(str(work))} {target}")
    lines += [
        f"mount --bind {q(str(d / 'home'))} /home",
        "mount -t tmpfs -o mode=0755 harness-run /run",
        "install -d -m 0755 /run/sshd",
        f"mount -t tmpfs -o mode=0755 harness-dev {q(str(d / 'dev'))}",
        *(f"touch {q(str(d / 'dev' / n))} && mount --bind /dev/{n} {q(str(d / 'dev' / n))}" for n in _DEVICES),
        # Terminals from a devpts of its own, reached through a ptmx symlink: the kernel finds the devpts for a
        # ptmx node by looking up "pts" beside it, which a bind mount of the host's /dev/ptmx cannot do (openpty
        # fails, and every terminal request would be refused whatever sshd_config says).
        f"mkdir {q(str(d / 'dev' / 'pts'))}",
        f"mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 harness-pts {q(str(d / 'dev' / 'pts'))}",
        f"ln -s pts/ptmx {q(str(d / 'dev' / 'ptmx'))}",
        f"ln -s /proc/self/fd {q(str(d / 'dev' / 'fd'))}",
        f"ln -s {q(str(d / 'log.sock'))} {q(str(d / 'dev' / 'log'))}",
        f"mount --move {q(str(d / 'dev'))} /dev",
        # A fresh server: no drop-ins, no host keys but the one the user-data pins (ssh_deletekeys).
        "rm -f /etc/ssh/sshd_config.d/* /etc/ssh/ssh_host_*",
        "install -d -m 0700 /etc/totp-vps",  # as the user-data's bootcmd makes it, before write_files
        f"touch {q(str(d / 'ready'))}",
        f"exec {q(sys.executable)} -I -c {q(_REAPER)}",
    ]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def running_server(user_data: str, *, boot: bool = True, files: Mapping[str, str | None] | None = None,
                   start_timeout: float = 15.0) -> Iterator[Server]:
    """A server from ``user_data``; stopped, with every process and temp file gone, on exit.

    boot: run the first-boot activation (False: sshd stays on the lockdown, as before runcmd).
    files: write_files path -> replacement text (None: leave that file out), applied before the first boot.
    """
    ud = cloudconfig.read(user_data)
    keys = ud.data.get("ssh_keys") or {}
    written = {path: ud.content(path) for path in ud.files}
    for path, text in (files or {}).items():
        written[path] = None if text is None else text.encode()
    modes = {path: str(entries[-1].get("permissions", "0644")) for path, entries in ud.files.items()}
    lockdown = (written.get("/etc/ssh/sshd_config.d/00-totp-vps.conf") or b"").decode()
    port = next(int(line.split()[1]) for line in lockdown.splitlines() if line.startswith("Port "))

    d = Path(tempfile.mkdtemp(prefix="server-harness-"))
    d.chmod(0o755)
    (d / "home").mkdir()
    (d / "dev").mkdir()
    syslog: _Syslog | None = None
    init: subprocess.Popen[bytes] | None = None
    try:
        syslog = _Syslog(d / "log.sock")
        init = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child=SIGKILL",
                                 "--mount-proc", "sh", "-c", _script(d)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=open(d / "init.log", "wb"))  # noqa: SIM115
        deadline = time.monotonic() + start_timeout
        while not (d / "ready").exists():
            if init.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the namespace did not come up: {(d / 'init.log').read_text(errors='replace')}")
            time.sleep(0.02)
        time.sleep(0.05)  # the reaper has replaced the shell
        server = Server(port=port, host_key=" ".join(str(keys.get("ed25519_public", "")).split()[:2]), dir=d,
                        init=init, inside=_children(init.pid)[0], syslog=syslog)
        host = [("/etc/ssh/ssh_host_ed25519_key", "0600", str(keys["ed25519_private"]).encode()),
                ("/etc/ssh/ssh_host_ed25519_key.pub", "0644", (server.host_key + "\n").encode())]
        server._put(host + [(p, modes.get(p, "0644"), data) for p, data in written.items() if data is not None])
        if _listeners(port):  # else the wait below would take another server's sshd for this one
            raise RuntimeError(f"127.0.0.1:{port} is in use already: every running server needs a port of its own")
        with open(d / "sshd.log", "wb") as log:
            server.sshd = subprocess.Popen(["nsenter", "-t", str(server.inside), "-m", "-p", SSHD, "-D", "-e",
                                            "-o", "ListenAddress=127.0.0.1"], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        if not _wait_listening(port, start_timeout):
            raise RuntimeError(f"sshd did not listen on {port}: {(d / 'sshd.log').read_text(errors='replace')}")
        if boot:
            server.activation = server.agent("boot")
        yield server
    finally:
        if init is not None:
            _end(init)
        if syslog is not None:
            syslog.close()
        shutil.rmtree(d, ignore_errors=True)


def _wait_listening(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(8).startswith(b"SSH-"):
                    return True
        except OSError:
            time.sleep(0.02)
    return False


def _listeners(port: int) -> set[str]:
    """The socket inodes listening on 127.0.0.1:``port`` (the kernel's /proc/net/tcp: state 0A is LISTEN)."""
    local = f"0100007F:{port:04X}"
    found = set()
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[3] == "0A":
                found.add(fields[9])
    return found


def _end(process: subprocess.Popen[bytes]) -> None:
    """End the namespace: its first process is the reaper; killing it ends every process inside."""
    if process.poll() is not None:
        return
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
