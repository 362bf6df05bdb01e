"""5. Day two: ``vpsctl sync`` of one server, and of 20 servers at once, against real loopback servers.

Each server is tests/sshd_harness.py's (the host's sshd, PAM, sudo, useradd and the project's agent in private
namespaces), booted from user-data the real program rendered under the mock engine. The stack outputs are the
program's too, with the one thing the mock engine cannot know filled in as a provider would report it: every
server's address is 127.0.0.1 (IPv6 off). The servers differ by their ``sshPort``, so ``vpsctl sync`` reaches each
one at the address and port the outputs name, as in production (no ``--host``/``--port`` override).

One timed run is ``python -m vpsctl sync --from OUTPUTS --as ADMIN --identity KEY --parallel 20 [--server S]``
as a subprocess (interpreter start and imports included, as an operator runs it) that applies one change: one
admin more on the servers it syncs. A run counts only if it exits 0, prints ``S: confirmed`` without a failed
check for each server, and each server's agent then reports the new state as applied.

pam_google_authenticator allows each admin 3 logins per 30 s per server and no code twice (DISALLOW_REUSE,
window of 3 steps); a sync takes 2 logins per server. So the runs log in as one of several operator admins in
turn, and an admin is used again only once the 30-s step after the one of its last login is over (the wait is
not timed): its next sync then has two unused codes and no login of the last 30 s against the rate limit.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report import Row, Section, median, table
from bench.vm_bench import wait_for_idle

ROOT = Path(__file__).resolve().parent.parent
SERVERS = 20
BAR_RATIO = 3.0
MIN_RUNS = 3
OPERATORS = 6  # operator admins taken in turn (see the module doc): a team's size, and enough to rarely wait
ADDRESS = "127.0.0.1"
SERVER_TYPE = "hcloud:index/server:Server"
STEP = 30  # pam_google_authenticator's time step
# A one-server sync keeps this machine's 2 CPUs ~40% busy; above this share something else ran during it, and the
# ratio would be low because the one-server figure is high.
CONTENDED = 0.75


def title(servers: int) -> str:
    return f"Day two: `vpsctl sync`, 1 server and {servers} at once (loopback sshds)"


def unavailable(reason: str, servers: int = SERVERS) -> Section:
    return Section(title(servers), [Row(f"{servers} servers / 1 server", "not available here", f"<= {BAR_RATIO:g} x")],
                   [reason], available=False)


def missing() -> str | None:
    """Why this machine cannot run the benchmark, or None."""
    if os.geteuid() != 0:
        return "Needs root (the harness bind-mounts the rendered files in private namespaces)."
    for tool in ("sshd", "sudo", "nsenter", "unshare", "ssh-keygen", "useradd"):
        if not (shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}")):
            return f"Needs {tool} (`make deps`)."
    return None


@dataclass
class Fleet:
    """The stack's config as it grows run by run, the program's current outputs, and the operators' key files."""

    config: dict[str, Any]
    keys: dict[str, Path]
    dir: Path
    outputs: dict[str, Any] = field(default_factory=dict)
    outputs_file: Path = Path()
    user_data: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [s["name"] for s in self.config["servers"]]

    def render(self, tag: str) -> None:
        """Run the program under the mock engine; write its outputs, addressed as the servers are reached."""
        from components import mockengine

        run = mockengine.run(self.config)
        outputs = mockengine.unwrap(run.stack_outputs)
        self.user_data = {name: mockengine.unwrap(run.one(SERVER_TYPE, f"{name}-server").inputs)["userData"]
                          for name in self.names}
        outputs["servers"] = {name: loopback(entry) for name, entry in outputs["servers"].items()}
        self.outputs = outputs
        self.outputs_file = self.dir / f"outputs-{tag}.json"
        self.outputs_file.write_text(json.dumps(outputs))
        self.outputs_file.chmod(0o600)  # seeds and the signing key

    def add_admin(self, name: str, servers: Sequence[str]) -> None:
        from tests.configs import ed25519_key

        self.config["admins"].append({"name": name, "sshKeys": [ed25519_key(f"{name}@sync-bench")[1]]})
        for server in self.config["servers"]:
            if server["name"] in servers:
                server["admins"].append(name)


def loopback(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A server's outputs as the provider reports a server at 127.0.0.1 with IPv6 off (the mock engine hands out
    documentation addresses): that address in ``ipv4``, ``knownHosts`` and ``sshCommands``, no ``ipv6``."""
    out: dict[str, Any] = json.loads(json.dumps(entry).replace(str(entry["ipv4"]), ADDRESS))
    out["ipv6"] = ""
    return out


def fleet(directory: Path, servers: int) -> Fleet:
    """``servers`` servers on free loopback ports, the operator admins on all of them (keys written to ``directory``)."""
    from cryptography.hazmat.primitives import serialization

    from tests.configs import ed25519_key
    from tests.sshd_harness import free_port

    keys, admins = {}, []
    for i in range(OPERATORS):
        name = f"op{i}"
        private, public = ed25519_key(f"{name}@sync-bench")
        keys[name] = directory / f"id_{name}"
        keys[name].write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                     serialization.NoEncryption()))
        keys[name].chmod(0o600)
        admins.append({"name": name, "sshKeys": [public]})
    ports: set[int] = set()
    while len(ports) < servers:
        ports.add(free_port())
    config = {
        "issuer": "sync-bench",
        "admins": admins,
        "defaults": {"allowedCidrs": ["127.0.0.0/8"], "ipv6": False},
        "servers": [{"name": f"srv-{i:02d}", "sshPort": port, "admins": list(keys)} for i, port in enumerate(sorted(ports))],
    }
    return Fleet(config, keys, directory)


class Operators:
    """Hands out an operator admin whose TOTP file on every server can take a whole sync now."""

    def __init__(self, names: Sequence[str]) -> None:
        self.free_at = dict.fromkeys(names, 0.0)
        self.waited = 0.0

    def take(self) -> str:
        name = min(self.free_at, key=lambda n: self.free_at[n])
        pause = self.free_at[name] - time.time()
        if pause > 0:
            time.sleep(pause)
            self.waited += pause
        return name

    def used(self, name: str, until: float) -> None:
        # A sync's codes are those of the steps it ran in and of the step after: the next step but one is fresh.
        self.free_at[name] = (int(until // STEP) + 2) * STEP + 1


@dataclass(frozen=True)
class Timed:
    wall: float
    client_cpu: float
    """CPU of the `vpsctl sync` process."""
    busy: float
    """Share of the machine's CPUs in use during the run, by anything (the loopback servers, the client, others)."""


def cpu_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (/proc/stat)."""
    with open("/proc/stat") as fh:
        ticks = [int(v) for v in fh.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


def sync(fleet: Fleet, admin: str, servers: Sequence[str], parallel: int) -> Timed:
    """One timed `vpsctl sync`; raises unless it confirmed the change on every server named."""
    argv = [sys.executable, "-m", "vpsctl", "sync", "--from", str(fleet.outputs_file), "--as", admin,
            "--identity", str(fleet.keys[admin]), "--parallel", str(parallel)]
    if len(servers) < len(fleet.names):
        argv += [a for s in servers for a in ("--server", s)]
    before, cpu = cpu_busy(), resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    wall = time.perf_counter() - start
    after, used = cpu_busy(), resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = done.stdout.splitlines()
    unconfirmed = [s for s in servers if not any(line.startswith(f"{s}: confirmed") and "FAILED" not in line for line in lines)]
    if done.returncode != 0 or unconfirmed:
        last = (done.stderr.strip().splitlines() or [""])[-1]
        raise RuntimeError(f"vpsctl sync of {len(servers)} server(s) exited {done.returncode}, not confirmed: "
                           f"{', '.join(unconfirmed) or 'none'}: {' | '.join(lines[-3:])} {last}".strip())
    client = used.ru_utime - cpu.ru_utime + used.ru_stime - cpu.ru_stime
    return Timed(wall, client, (after[0] - before[0]) / max(after[1] - before[1], 1e-9))


@contextlib.contextmanager
def booted(fleet: Fleet) -> Iterator[dict[str, Any]]:
    """Every server of the fleet running, its first boot done."""
    from tests.sshd_harness import running_server

    with contextlib.ExitStack() as stack:
        servers = {}
        for name in fleet.names:
            server = stack.enter_context(running_server(fleet.user_data[name]))
            if server.activation is None or server.activation.returncode != 0:
                raise RuntimeError(f"{name}: the first boot failed: {server.logs()[-500:]}")
            servers[name] = server
        yield servers


def not_applied(servers: Mapping[str, Any], outputs: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """The servers whose agent does not report the outputs' desired state as applied (or has one pending)."""
    wrong = []
    for name in names:
        record = json.loads(servers[name].agent("status").stdout or "{}")
        if (record.get("applied") or {}).get("serial") != outputs["servers"][name]["desiredSerial"] or record.get("pending"):
            wrong.append(name)
    return wrong


def run(runs: int, servers: int = SERVERS, wait_idle: float = 0) -> Section:
    """``wait_idle``: first wait up to this long for other qemu processes (others' VM tests) to end."""
    reason = missing()
    if reason:
        return unavailable(reason, servers)
    idle = wait_for_idle(wait_idle)
    times: dict[str, list[Timed]] = {"one": [], "all": []}
    with tempfile.TemporaryDirectory(prefix="totp-vps-sync-bench-") as tmp:
        bench = fleet(Path(tmp), servers)
        bench.render("boot")
        started = time.perf_counter()
        with booted(bench) as running:
            boot_s = time.perf_counter() - started
            operators = Operators(list(bench.keys))
            for k in range(runs):  # interleaved: a change in the machine's load hits both kinds alike
                for kind, chosen in (("one", bench.names[:1]), ("all", bench.names)):
                    bench.add_admin(f"{kind}{k}", chosen)
                    bench.render(f"{kind}{k}")
                    admin = operators.take()
                    try:
                        times[kind].append(sync(bench, admin, chosen, servers))
                    finally:
                        operators.used(admin, time.time())
                    wrong = not_applied(running, bench.outputs, chosen)
                    if wrong:
                        raise RuntimeError(f"vpsctl sync said confirmed, but the agent of {', '.join(wrong)} holds another state")

    def med(kind: str, what: str) -> float:
        return median([getattr(t, what) for t in times[kind]])

    one, many = med("one", "wall"), med("all", "wall")
    ratio = many / one
    contended = med("one", "busy") > CONTENDED
    judged = " (not judged: other work kept the CPUs busy)" if contended else ""
    section = Section(title(servers))
    section.rows = [
        Row(f"1 server / {servers} at once (median)", f"{one:.1f} s / {many:.1f} s"),
        Row(f"{servers} servers / 1 server", f"{ratio:.1f} x{judged}", f"<= {BAR_RATIO:g} x",
            None if contended else ratio <= BAR_RATIO),
    ]
    section.detail = [
        f"{servers} loopback servers (tests/sshd_harness.py), booted from the program's user-data in {boot_s:.0f} s; each",
        "run adds one admin to the servers it syncs through `python -m vpsctl sync` as a subprocess",
        f"(`--parallel {servers}`; one server: `--server {bench.names[0]}`): per server two logins (key + code), the",
        "agent's status, apply and confirm, the checks. Medians of "
        f"{runs} runs each, interleaved; the waits for a fresh TOTP step ({operators.waited:.0f} s) are not timed.",
        f"The servers run on this machine's {os.cpu_count()} CPUs, next to the client, so {servers} of them can make a run",
        "CPU-bound (\"busy\": the share of the machine's CPUs in use during the run, by anything). Client CPU is the",
        "`vpsctl sync` process's own: what an operator's machine spends when every server has CPUs of its own.",
        "",
        *table(("run", "1 server s", "client CPU s", "busy", f"{servers} servers s", "client CPU s", "busy"),
               [(k + 1, f"{a.wall:.2f}", f"{a.client_cpu:.2f}", f"{a.busy:.0%}", f"{b.wall:.2f}", f"{b.client_cpu:.2f}",
                 f"{b.busy:.0%}") for k, (a, b) in enumerate(zip(times["one"], times["all"], strict=True))]),
        "",
        f"Client CPU, medians: {med('one', 'client_cpu'):.2f} s for 1 server, {med('all', 'client_cpu'):.2f} s for {servers} "
        f"({med('all', 'client_cpu') / med('one', 'client_cpu'):.1f} x).",
        *([f"Note: the CPUs were {med('one', 'busy'):.0%} busy during the one-server runs (a one-server sync alone keeps "
           "2 CPUs ~40% busy): something else ran, the figures are high and the ratio is not judged."] if contended else []),
        *([] if idle else [f"Note: another qemu was still running after waiting {wait_idle:.0f} s."]),
    ]
    return section
