"""Boot one lab guest under qemu: NoCloud seed, throwaway overlay, serial log, clean power-off.

``with VM(image, user_data, guest_port=22, hostname="web-1") as vm:`` starts qemu, ``vm.wait_report()``
waits (by reading the serial log as it grows) for the report the lab image prints once cloud-init's
final stage is over, and leaving the block powers the guest off and removes every qemu process and
file, also on exceptions and Ctrl-C. The guest has no network except one forwarded loopback port.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from lab.image import Image

BEGIN, END = "TOTP-VPS-LAB-REPORT-BEGIN", "TOTP-VPS-LAB-REPORT-END"
_FINISHED = re.compile(r"Cloud-init v\. \S+ finished at .* Up ([0-9.]+) seconds")
POLL = 0.2  # seconds between looks at the serial log while waiting for a guest event
NETDEV = "n0"  # the guest's one network device (user networking), which hostfwd_add names


class VMError(RuntimeError):
    """The guest did not boot or report; the message carries the end of the serial log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As qemu's forward binds it: connections of an earlier run still in TIME_WAIT do not make it busy.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def monitor_command(monitor_socket: Path, command: str, timeout: float = 5) -> str:
    """Send one human-monitor command to a running qemu and return its reply (the text between the echoed
    command and the next prompt; empty when the command had nothing to say). OSError if qemu is not there."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mon:
        mon.settimeout(timeout)
        mon.connect(str(monitor_socket))
        seen = b""
        while seen.count(b"(qemu)") < 1:  # the banner's prompt: the monitor is ready
            chunk = mon.recv(4096)
            if not chunk:
                raise ConnectionError("the qemu monitor closed the connection")
            seen += chunk
        start = len(seen)
        mon.sendall(command.encode() + b"\n")
        while seen.count(b"(qemu)") < 2:  # the next prompt: the command ran (closing earlier drops it)
            chunk = mon.recv(4096)
            if not chunk:
                break
            seen += chunk
    # The monitor echoes the command as a terminal line editor would (cursor escapes, then CR LF).
    answer = seen[start:].rpartition(b"(qemu)")[0]
    return answer.partition(b"\r\n")[2].decode(errors="replace").replace("\r", "").strip()


def add_forward(monitor_socket: Path, guest_port: int, attempts: int = 3) -> int:
    """Forward a new loopback port to ``guest_port`` of a running guest (qemu's ``hostfwd_add``, no restart):
    the host port it took."""
    reply = ""
    for _ in range(attempts):  # another process may take the free port before qemu does
        port = free_port()
        reply = monitor_command(monitor_socket, f"hostfwd_add {NETDEV} tcp:127.0.0.1:{port}-:{guest_port}")
        if not reply:
            return port
    raise VMError(f"qemu did not add a forward to guest port {guest_port}: {reply}")


@dataclass(frozen=True)
class Report:
    """What the guest printed about itself after cloud-init's final stage (lab/guest/totp-vps-lab-report)."""

    data: dict[str, Any]
    """Raw report: section -> value (commands are {"rc", "out"})."""

    def out(self, section: str) -> str:
        return str(self.data[section]["out"])

    def rc(self, section: str) -> int:
        return int(self.data[section]["rc"])

    @property
    def status(self) -> str:
        """The ``status:`` value of ``cloud-init status --long`` (done, error, running...)."""
        match = re.search(r"^status:\s*(\S+)", self.out("status"), re.M)
        return match.group(1) if match else "unknown"

    @property
    def errors(self) -> list[str]:
        """cloud-init's recorded errors (result.json)."""
        try:
            result = json.loads(self.out("result"))
        except ValueError:
            return ["no /run/cloud-init/result.json"]
        return [str(e) for e in result.get("v1", {}).get("errors", [])]

    @property
    def effective_sshd(self) -> set[str]:
        return set(self.out("sshd_T").splitlines())


def parse_report(serial: str) -> Report | None:
    """The report in a serial log, or None while it is incomplete."""
    lines = [line.strip("\r") for line in serial.split("\n")]
    begin = [i for i, line in enumerate(lines) if line.startswith(BEGIN + " ")]
    if not begin:
        return None
    count = int(lines[begin[-1]].split()[1])
    chunks: dict[int, str] = {}
    for line in lines[begin[-1] + 1 :]:
        if line.startswith(END + " "):
            payload = "".join(chunks.get(i, "") for i in range(count))
            if len(chunks) != count or f"{zlib.crc32(payload.encode()):08x}" != line.split()[1]:
                raise VMError("the guest's report arrived garbled on the serial console")
            return Report(json.loads(zlib.decompress(base64.b64decode(payload))))
        match = re.fullmatch(r"R (\d+) ([A-Za-z0-9+/=]+)", line)
        if match:
            chunks[int(match.group(1))] = match.group(2)
    return None


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: qemu gets SIGTERM if the process that started it dies
    # without cleaning up (SIGKILL). VM starts qemu from the calling thread; callers keep it the main one.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class VM:
    """One throwaway guest. Use as a context manager."""

    image: Image
    user_data: str
    guest_port: int
    hostname: str
    memory_mb: int = 1024
    cpus: int = 2
    keep_dir: bool = False
    """Keep the work directory (serial log, seed, overlay) after closing."""
    preferred_port: int | None = None
    """Loopback port to forward to the guest if it is free (the lab keeps the one of its last run), else any."""
    more_ports: tuple[int, ...] = ()
    """Further guest ports to forward, each to a free loopback port of its own (a port change: old and new)."""
    nice: int = 0
    """qemu's niceness: guests that can wait leave the host's cores to those that cannot."""
    workdir: Path = field(init=False)
    host_port: int = field(init=False, default=0)
    host_ports: dict[int, int] = field(init=False, default_factory=dict)
    """Guest port -> the loopback port forwarded to it (``guest_port``'s is ``host_port``)."""
    started_at: float = field(init=False, default=0.0)
    ready_after: float | None = field(init=False, default=None)
    """Seconds from qemu start to the guest's report (cloud-init done)."""
    _proc: subprocess.Popen[bytes] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="totp-vps-lab-"))
        self.workdir.chmod(0o700)  # the seed holds TOTP seeds and the host's private key

    @property
    def serial_log(self) -> Path:
        return self.workdir / "serial.log"

    @property
    def monitor_socket(self) -> Path:
        """qemu's human monitor (:func:`monitor_command`), for other processes too (``lab sync`` adds forwards)."""
        return self.workdir / "monitor.sock"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def serial(self) -> str:
        try:
            return self.serial_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def serial_tail(self, lines: int = 60) -> str:
        return "\n".join(self.serial().replace("\r", "").splitlines()[-lines:])

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # --- start -----------------------------------------------------------------------------------
    def __enter__(self) -> VM:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _seed(self) -> Path:
        seed_dir = self.workdir / "seed"
        seed_dir.mkdir(mode=0o700)
        (seed_dir / "user-data").write_text(self.user_data)
        (seed_dir / "meta-data").write_text(f"instance-id: lab-{uuid.uuid4().hex[:12]}\nlocal-hostname: {self.hostname}\n")
        iso = self.workdir / "seed.iso"
        subprocess.run(
            ["genisoimage", "-quiet", "-output", str(iso), "-volid", "cidata", "-joliet", "-rock",
             str(seed_dir / "user-data"), str(seed_dir / "meta-data")],
            check=True, capture_output=True,
        )
        shutil.rmtree(seed_dir)
        return iso

    def _overlay(self) -> Path:
        overlay = self.workdir / "overlay.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(self.image.root.resolve()), str(overlay)],
            check=True, capture_output=True,
        )
        return overlay

    def _argv(self, overlay: Path, iso: Path) -> list[str]:
        forwards = ",".join(f"hostfwd=tcp:127.0.0.1:{host}-:{guest}" for guest, host in self.host_ports.items())
        return [
            "qemu-system-x86_64", "-nodefaults", "-no-reboot", "-display", "none", "-name", f"totp-vps-lab-{self.hostname}",
            "-accel", "tcg",  # never KVM: on these hosts /dev/kvm exists but hangs guests
            "-m", str(self.memory_mb), "-smp", str(self.cpus),
            "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
            "-append", "root=/dev/vda rw console=ttyS0 quiet",
            "-drive", f"file={overlay},if=virtio,format=qcow2",
            "-drive", f"file={iso},if=virtio,format=raw,readonly=on",
            # restrict=on: nothing leaves the guest; the one way in is the forwarded loopback port(s).
            "-netdev", f"user,id={NETDEV},restrict=on,{forwards}",
            "-device", f"virtio-net-pci,netdev={NETDEV},romfile=",
            # Entropy from the host: an emulated CPU has no RDRAND, and a guest kernel waiting to seed its
            # random pool under software emulation can stall the boot for minutes.
            "-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0",
            "-serial", f"file:{self.serial_log}",
            "-monitor", f"unix:{self.monitor_socket},server=on,wait=off",
        ]

    def start(self, attempts: int = 3) -> None:
        overlay, iso = self._overlay(), self._seed()
        for attempt in range(attempts):
            self.host_ports = {}
            wanted = self.preferred_port if attempt == 0 else None
            if wanted is not None and port_is_free(wanted):
                self.host_ports[self.guest_port] = wanted
            for port in (self.guest_port, *self.more_ports):  # distinct free ports
                if port not in self.host_ports:
                    self.host_ports[port] = next(p for p in iter(free_port, 0) if p not in self.host_ports.values())
            self.host_port = self.host_ports[self.guest_port]
            self.serial_log.unlink(missing_ok=True)
            self.started_at = time.monotonic()
            with open(self.workdir / "qemu.log", "wb") as qemu_log:
                self._proc = subprocess.Popen(
                    self._argv(overlay, iso), stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches us, and we shut the guest down in order
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 - started from the calling thread only
                )
            # qemu sets up the port forwards before the guest runs, and exits at once if one fails (a lost race for
            # the port): running a few seconds on, or the guest already writing to its console, it has them. (Not
            # only the console: on a busy host a guest may take minutes to print its first line.)
            def started() -> bool:
                return time.monotonic() > self.started_at + 5 or (self.serial_log.exists() and self.serial_log.stat().st_size > 0)

            if self._wait(started, 60, "qemu to set up the guest"):
                self._renice()
                return
            if "hostfwd" not in (self.workdir / "qemu.log").read_text(errors="replace"):
                break  # not a lost race for the port: report it
        raise VMError(f"qemu did not start: {(self.workdir / 'qemu.log').read_text(errors='replace').strip()}")

    def _renice(self) -> None:
        """Every qemu thread (vCPU, I/O) at ``nice``; the threads qemu starts later inherit it."""
        if self.nice and self._proc is not None:
            for task in Path(f"/proc/{self._proc.pid}/task").iterdir():
                with contextlib.suppress(ProcessLookupError):
                    os.setpriority(os.PRIO_PROCESS, int(task.name), self.nice)

    def _wait(self, condition: Callable[[], bool], timeout: float, what: str) -> bool:
        """Poll ``condition`` until true (True), qemu exits (False) or ``timeout`` passes (VMError)."""
        deadline = time.monotonic() + timeout
        while True:
            if condition():
                return True
            if not self.running():
                return False
            if time.monotonic() > deadline:
                raise VMError(f"timed out after {timeout:.0f} s waiting for {what}; serial log ends:\n{self.serial_tail()}")
            time.sleep(POLL)

    # --- readiness -------------------------------------------------------------------------------
    def wait_report(self, timeout: float = 600) -> Report:
        """Block until the guest has printed its report (cloud-init has finished, well or not)."""
        found: list[Report] = []

        def arrived() -> bool:
            report = parse_report(self.serial())
            if report is not None:
                found.append(report)
            return bool(found)

        if not self._wait(arrived, timeout, "cloud-init to finish (the lab report on the serial console)"):
            raise VMError(f"qemu exited before the guest reported; serial log ends:\n{self.serial_tail()}")
        if self.ready_after is None:
            self.ready_after = time.monotonic() - self.started_at
        return found[0]

    def cloud_init_uptime(self) -> float | None:
        """Guest uptime when cloud-init said 'finished' (from the serial log)."""
        match = _FINISHED.search(self.serial())
        return float(match.group(1)) if match else None

    def how_it_stopped(self) -> str | None:
        """After qemu exited on its own: "powered off" or "rebooted" (the kernel's last words on the serial
        console; qemu runs with -no-reboot, so a reboot ends it too), None if the kernel said neither."""
        text = self.serial()
        for line, meaning in (("reboot: Power down", "powered off"), ("reboot: Restarting system", "rebooted")):
            if line in text:
                return meaning
        return None

    # --- stop ------------------------------------------------------------------------------------
    def monitor(self, command: str) -> None:
        """Send one human-monitor command (system_powerdown, quit); errors are ignored (qemu may be gone)."""
        with contextlib.suppress(OSError):
            monitor_command(self.monitor_socket, command)

    def wait_exit(self, timeout: float | None) -> bool:
        if self._proc is None:
            return True
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def poweroff(self, ssh_poweroff: Callable[[], object] | None = None, timeout: float = 60) -> None:
        """Shut the guest down cleanly: through ``ssh_poweroff`` (a logged-in `sudo systemctl poweroff`)
        if given, else the ACPI power button; quit qemu if the guest does not stop in time."""
        if not self.running():
            return
        if ssh_poweroff is not None:
            try:
                ssh_poweroff()
            except Exception:  # noqa: BLE001 - the power button below is the fallback
                self.monitor("system_powerdown")
        else:
            self.monitor("system_powerdown")
        if not self.wait_exit(timeout):
            self.monitor("quit")
            if not self.wait_exit(10):
                self._kill()

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def close(self, timeout: float = 60) -> None:
        """Power off (if still running), reap qemu, remove the work directory. Safe to call twice."""
        try:
            self.poweroff(timeout=timeout)
        except BaseException:
            self._kill()  # Ctrl-C while waiting for the power-off: do not wait any longer
            raise
        finally:
            self._kill()
            if not self.keep_dir:
                shutil.rmtree(self.workdir, ignore_errors=True)
