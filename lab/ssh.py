"""The OpenSSH client command lines for the lab guest (the key + TOTP logins themselves go through the
project's one paramiko client, vpsctl.sshclient)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def openssh_argv(port: int, user: str, identity: Path, known_hosts: Path, *extra: str) -> list[str]:
    """The OpenSSH client command for the lab guest, host key pinned."""
    return ["ssh", "-i", str(identity), "-p", str(port), "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "StrictHostKeyChecking=yes", *extra, f"{user}@127.0.0.1"]


def openssh_batch(port: int, user: str, identity: Path, known_hosts: Path,
                  timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The OpenSSH client in batch mode with only a key (no TOTP can be typed): must be refused."""
    argv = [*openssh_argv(port, user, identity, known_hosts, "-F", "/dev/null", "-o", "BatchMode=yes",
                          "-o", "ConnectTimeout=30"), "true"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
