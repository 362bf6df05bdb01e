"""The metadata block, proven with the real kernel, nft and systemd's unit loader.

Three network namespaces: a "server" that loads the rendered ruleset the way a server does (the rendered
bootcmd script at the first boot, the rendered unit at later boots), a "metadata" namespace holding
169.254.169.254 with a small HTTP server that serves a stand-in user-data, and a "container" routed through
the server (veth, ip_forward=1) like a container on a rootful Docker or LXC bridge. From each: a forwarded
client in the container and a non-root process on the server get nothing, root on the server does. Then the
host's firewall is reloaded, restarted and stopped the way Debian's nftables.service does it (its own Exec
lines, read from the installed unit, then the ones of the rendered drop-in, in order), and the same three
results hold after each; without the drop-in's lines, the flush opens the service to the container (the
guard: the test can fail).

Commands that read /etc/totp-vps run with an overlay on /etc (the host's /etc stays untouched), inside the
server's network namespace, so the rendered lines run exactly as systemd would run them.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from configs import ed25519_key
from conftest import require, require_root, require_tool

from cloudinit import cloudconfig, model, render, secrets

ADDRESS = render.METADATA_ADDRESS
MARKER = "totp-vps stand-in user-data: TOTP seeds would be here"
PYTHON = "/usr/bin/python3"  # the system's: `nobody` cannot run an interpreter under /root
NFTABLES_UNIT = Path("/lib/systemd/system/nftables.service")
NFTABLES_CONF = Path("/etc/nftables.conf")
# One GET without proxies (a proxy variable in the environment would make urllib ask someone else).
CLIENT = f"""
import http.client, sys
try:
    conn = http.client.HTTPConnection({ADDRESS!r}, 80, timeout=3)
    conn.request("GET", "/user-data")
    print(conn.getresponse().read().decode())
except OSError as exc:
    print(f"no answer: {{exc}}")
    sys.exit(1)
"""


def files() -> dict[str, str]:
    return {f.path: f.data.decode() for f in render.fixed_files(22)}


def exec_lines(unit_text: str, key: str) -> list[list[str]]:
    """The command lines of ``key`` (ExecReload, ...) in a unit or drop-in, in order, as systemd splits them."""
    out = []
    for line in unit_text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == key and value.strip():
            out.append(shlex.split(value.strip().lstrip("-@+!")))  # prefixes change failure handling, not the command
    return out


@dataclass
class Net:
    """The three namespaces and the overlay the server's /etc gets."""

    server: str
    metadata: str
    container: str
    etc_upper: Path
    etc_work: Path

    def in_server(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        """``argv`` as root on the server, with /etc/totp-vps as the server has it."""
        mount = f"mount -t overlay overlay -o lowerdir=/etc,upperdir={self.etc_upper},workdir={self.etc_work} /etc"
        return run(["ip", "netns", "exec", self.server, "sh", "-ec", f'{mount}; exec "$@"', "sh", *argv])

    def reaches(self) -> dict[str, bool]:
        """Who gets the user-data: root and nobody on the server, root in the container."""
        nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        clients = {
            "server root": ["ip", "netns", "exec", self.server, PYTHON, "-c", CLIENT],
            "server nobody": ["ip", "netns", "exec", self.server, *nobody, PYTHON, "-c", CLIENT],
            "container": ["ip", "netns", "exec", self.container, PYTHON, "-c", CLIENT],
        }
        return {who: MARKER in run(argv).stdout for who, argv in clients.items()}


BLOCKED = {"server root": True, "server nobody": False, "container": False}
OPEN = {"server root": True, "server nobody": True, "container": True}


def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False, **kw)  # type: ignore[call-overload]


def must(argv: list[str]) -> None:
    done = run(argv)
    assert done.returncode == 0, f"{argv}: {done.stderr}"


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    require_root()
    for tool in ("ip", "nft", "setpriv"):
        require_tool(tool)
    require(os.access(PYTHON, os.X_OK), f"needs {PYTHON}")
    tag = f"tv{os.getpid()}"
    n = Net(f"{tag}-srv", f"{tag}-meta", f"{tag}-ctr", tmp_path / "etc-upper", tmp_path / "etc-work")
    n.etc_upper.mkdir()
    n.etc_work.mkdir()
    served = tmp_path / "served"
    served.mkdir()
    (served / "user-data").write_text(MARKER + "\n")
    server = None
    try:
        for ns in (n.server, n.metadata, n.container):
            must(["ip", "netns", "add", ns])
            must(["ip", "-n", ns, "link", "set", "lo", "up"])
        # Each veth pair is made with its ends already in their namespaces: no name in the host's.
        must(["ip", "link", "add", "s-meta", "netns", n.server, "type", "veth", "peer", "name", "m-srv", "netns", n.metadata])
        must(["ip", "link", "add", "s-ctr", "netns", n.server, "type", "veth", "peer", "name", "c-srv", "netns", n.container])
        for ns, dev, addr in ((n.server, "s-meta", "10.70.1.1/24"), (n.metadata, "m-srv", "10.70.1.2/24"),
                              (n.server, "s-ctr", "10.70.2.1/24"), (n.container, "c-srv", "10.70.2.2/24")):
            must(["ip", "-n", ns, "addr", "add", addr, "dev", dev])
            must(["ip", "-n", ns, "link", "set", dev, "up"])
        must(["ip", "-n", n.metadata, "addr", "add", f"{ADDRESS}/32", "dev", "lo"])
        must(["ip", "-n", n.metadata, "route", "add", "default", "via", "10.70.1.1"])
        must(["ip", "-n", n.server, "route", "add", f"{ADDRESS}/32", "via", "10.70.1.2"])
        must(["ip", "-n", n.container, "route", "add", "default", "via", "10.70.2.1"])
        must(["ip", "netns", "exec", n.server, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        server = subprocess.Popen(["ip", "netns", "exec", n.metadata, sys.executable, "-m", "http.server", "--bind", ADDRESS,
                                   "--directory", str(served), "80"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while MARKER not in run(["ip", "netns", "exec", n.metadata, PYTHON, "-c", CLIENT]).stdout:
            assert time.monotonic() < deadline and server.poll() is None, "the metadata stand-in did not start"
            time.sleep(0.1)
        yield n
    finally:
        if server is not None:
            server.kill()
            server.wait()
        for ns in (n.server, n.metadata, n.container):
            run(["ip", "netns", "del", ns])


def test_only_root_on_the_server_reaches_the_metadata_service_across_reloads(net: Net) -> None:
    rendered = files()
    nftables_unit = NFTABLES_UNIT.read_text() if NFTABLES_UNIT.exists() else ""
    require(bool(exec_lines(nftables_unit, "ExecReload")), f"needs Debian's nftables.service ({NFTABLES_UNIT})")
    require(NFTABLES_CONF.exists() and "flush ruleset" in NFTABLES_CONF.read_text(), f"needs Debian's {NFTABLES_CONF}")
    dropin = rendered[render.NFTABLES_DROPIN]

    def systemd_runs(key: str, *, with_dropin: bool = True) -> None:
        """What systemd runs for ``key``: the unit's own lines, then the drop-in's (appended), in order."""
        lines = exec_lines(nftables_unit, key) + (exec_lines(dropin, key) if with_dropin else [])
        for argv in lines:
            done = net.in_server(argv)
            assert done.returncode == 0, f"{key}={shlex.join(argv)}: {done.stderr}"

    assert net.reaches() == OPEN, "without the block everyone must reach the stand-in, or the test proves nothing"

    # First boot: cloud-init runs the bootcmd script, before write_files.
    done = net.in_server(["sh", "-c", render.metadata_block()])
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert (net.etc_upper / "totp-vps" / "metadata.nft").read_text() == rendered[render.METADATA_NFT], \
        "bootcmd writes another ruleset than write_files, the unit and the drop-in load"
    assert net.reaches() == BLOCKED, "after the first boot's bootcmd"

    # `systemctl reload nftables` without the drop-in: /etc/nftables.conf flushes the block away (the guard).
    systemd_runs("ExecReload", with_dropin=False)
    assert net.reaches() == OPEN, "the reload did not flush the ruleset: the guard cannot fail the test"

    # A later boot: sysinit.target starts the unit.
    for argv in exec_lines(rendered[render.METADATA_UNIT], "ExecStart"):
        assert net.in_server(argv).returncode == 0
    assert net.reaches() == BLOCKED, "after the unit's ExecStart"

    systemd_runs("ExecReload")
    assert net.reaches() == BLOCKED, "after `systemctl reload nftables`"
    systemd_runs("ExecStop")
    systemd_runs("ExecStopPost")
    assert net.reaches() == BLOCKED, "after `systemctl stop nftables`"
    systemd_runs("ExecStart")
    systemd_runs("ExecStartPost")
    assert net.reaches() == BLOCKED, "after `systemctl start nftables` (a restart: the stop above, then this)"

    # Loading it again (the agent at activation, the unit after bootcmd) leaves one table, not two.
    for _ in range(2):
        assert net.in_server(exec_lines(rendered[render.METADATA_UNIT], "ExecStart")[0]).returncode == 0
    listing = run(["ip", "netns", "exec", net.server, "nft", "list", "tables"]).stdout
    assert listing.count("totp_vps_metadata") == 1, listing
    assert net.reaches() == BLOCKED


# ------------------------------------------------------------------------------------ systemd's loader


def unit_tree(root: Path, *, probe: bool = False) -> dict[str, str]:
    """The rendered units under ``root`` as under /etc/systemd/system; the environment for systemd-analyze."""
    for path, text in files().items():
        if path.startswith("/etc/systemd/system/"):
            target = root / path.removeprefix("/etc/systemd/system/")
            target.parent.mkdir(parents=True, exist_ok=True)
            # The probe: a key systemd does not know, which its loader reports when it loads the unit.
            target.write_text(text + ("TotpVpsProbe=1\n" if probe and path == render.METADATA_UNIT else ""))
    # A trailing colon: the rendered directory first, then systemd's own search path (the host's units).
    return {**os.environ, "SYSTEMD_UNIT_PATH": f"{root}:"}


def test_systemd_accepts_the_units_and_starts_the_block_from_sysinit(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    require(NFTABLES_UNIT.exists(), f"needs Debian's nftables.service ({NFTABLES_UNIT})")
    env = unit_tree(tmp_path / "clean")
    checked = run([analyze, "verify", "totp-vps-metadata.service", "nftables.service", "sysinit.target"], env=env)
    assert checked.returncode == 0 and not checked.stderr.strip(), checked.stderr
    # sysinit.target (which every boot reaches, cloud-init or not) loads the unit through the drop-in ...
    env = unit_tree(tmp_path / "probe", probe=True)
    pulled = run([analyze, "verify", "sysinit.target"], env=env)
    assert "TotpVpsProbe" in pulled.stderr, f"sysinit.target does not pull the unit in: {pulled.stderr}"
    # ... and nothing of cloud-init's is among its dependencies.
    unit = files()[render.METADATA_UNIT]
    keys = ("After", "Requires", "Wants", "BindsTo", "Requisite", "PartOf")
    deps = [line for line in unit.splitlines() if line.partition("=")[0] in keys]
    assert deps and not any("cloud" in line for line in deps), deps


def test_the_gate_refuses_user_data_whose_block_was_weakened() -> None:
    admin = model.Admin(name="alice", ssh_keys=(ed25519_key("alice@laptop")[1],))
    server = model.Server(name="web-1", admins=(admin,), allowed_cidrs=("198.51.100.0/24",))
    key = secrets.fresh_key_pair()
    user_data = render.render_user_data(server, {"alice": secrets.fresh_admin_secrets(5)}, key, key.public_openssh)
    assert cloudconfig.judge(user_data) == []
    forward = f"ip daddr {ADDRESS} counter reject"
    weakened = {
        "the drop-in's reload line": user_data.replace(f"ExecReload={render.NFT} -f {render.METADATA_NFT}\n", "", 1),
        "the forward chain in write_files": user_data.replace(forward, "counter accept", 1),
        "the forward chain in bootcmd": user_data.replace(forward, "counter accept", 2).replace("counter accept", forward, 1),
        "the sysinit.target drop-in": user_data.replace("Wants=totp-vps-metadata.service", "Wants=", 1),
    }
    for what, text in weakened.items():
        assert text != user_data, what
        assert cloudconfig.judge(text), f"the gate accepts user-data without {what}"
