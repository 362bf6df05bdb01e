"""The day-two sync benchmark (bench/sync_bench.py, `python -m bench --only sync`) in small: 2 loopback servers, 1 run
of each kind, so its code cannot rot between the full runs that give the README its figures."""

from __future__ import annotations

import re

from conftest import require_root, require_tool

from bench import sync_bench


def test_the_sync_benchmark_confirms_every_server_and_reports_the_ratio() -> None:
    require_root()
    for tool in ("sshd", "sudo", "nsenter", "unshare", "ssh-keygen", "useradd"):
        require_tool(tool)
    section = sync_bench.run(1, servers=2)  # raises unless every server confirmed and its agent holds the new state
    assert section.available, section.detail
    assert [r.what for r in section.rows] == ["1 server / 2 at once (median)", "2 servers / 1 server"]
    times = re.fullmatch(r"([0-9.]+) s / ([0-9.]+) s", section.rows[0].measured)
    ratio = re.match(r"([0-9.]+) x", section.rows[1].measured)
    assert times and ratio, section.rows
    assert float(times[1]) > 0 and float(times[2]) > 0
    # Judged unless something else kept the CPUs busy during the one-server runs, and then it says so.
    assert section.rows[1].bar == "<= 3 x" and (section.rows[1].ok is None) == ("not judged" in section.rows[1].measured)
    runs = [line for line in section.detail if re.match(r"\| 1 \| ", line)]
    assert len(runs) == 1, section.detail


def test_the_outputs_name_each_server_where_it_listens() -> None:
    """The loopback outputs keep the program's shape: the address in every field that holds it, the server's own port."""
    entry = {"ipv4": "203.0.113.7", "ipv6": "2001:db8:7::1", "sshPort": 2201.0,
             "knownHosts": "[203.0.113.7]:2201 ssh-ed25519 AAAA", "sshCommands": {"op0": "ssh -p 2201 op0@203.0.113.7"}}
    got = sync_bench.loopback(entry)
    assert got == {"ipv4": "127.0.0.1", "ipv6": "", "sshPort": 2201.0, "knownHosts": "[127.0.0.1]:2201 ssh-ed25519 AAAA",
                   "sshCommands": {"op0": "ssh -p 2201 op0@127.0.0.1"}}
