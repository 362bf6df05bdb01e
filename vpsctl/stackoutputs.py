"""Read a stack's outputs (``pulumi stack output --json --show-secrets`` or a file holding that JSON) and
pick one server and admin from them. Shared by ``vpsctl qr`` and ``vpsctl verify``.

Error messages name servers and admins (not secret) and never quote the outputs themselves.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vpsctl.errors import CliError
from vpsctl.files import load_json

HIDDEN = "[secret]"  # what `pulumi stack output` prints for a secret without --show-secrets


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--stack", metavar="NAME", help="read `pulumi stack output --json --show-secrets --stack NAME`")
    source.add_argument(
        "--from", dest="from_file", metavar="FILE", help="read that JSON from FILE instead (offline; keep the file private)"
    )
    parser.add_argument("--server", metavar="S", help="server name (needed when the stack has several)")


def load(args: argparse.Namespace) -> dict[str, Any]:
    """The stack outputs named by ``--stack`` or ``--from``, checked for the shape the program exports."""
    outputs = load_json(args.from_file, "--from") if args.from_file else from_pulumi(args.stack)
    return check_shape(outputs, f"--from {args.from_file}" if args.from_file else f"stack {args.stack}")


def from_pulumi(stack: str) -> Any:
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        raise CliError(
            "the pulumi CLI is not on PATH: install it, or pass --from FILE holding `pulumi stack output --json --show-secrets`"
        )
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell; the stack name is one argument
            [pulumi, "stack", "output", "--json", "--show-secrets", "--stack", stack],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CliError(f"--stack {stack}: could not run pulumi ({type(exc).__name__})") from None
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {done.returncode}"
        raise CliError(f"--stack {stack}: `pulumi stack output` failed: {reason}")
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        raise CliError(f"--stack {stack}: `pulumi stack output --json` did not print JSON") from None


def check_shape(outputs: Any, where: str) -> dict[str, Any]:
    if not isinstance(outputs, Mapping) or not isinstance(outputs.get("servers"), Mapping):
        raise CliError(f"{where}: not the outputs of this program (want an object with 'servers' and 'enrollment')")
    enrollment = outputs.get("enrollment")
    if enrollment == HIDDEN:
        raise CliError(f"{where}: the enrollment output is hidden; it needs `pulumi stack output --json --show-secrets`")
    if not isinstance(enrollment, Mapping):
        raise CliError(f"{where}: no 'enrollment' object in the outputs")
    for server, admins in enrollment.items():
        if admins == HIDDEN:
            raise CliError(f"{where}: enrollment of {server} is hidden; it needs --show-secrets")
        if not isinstance(admins, Mapping) or not all(isinstance(a, Mapping) for a in admins.values()):
            raise CliError(f"{where}: enrollment of {server} is not an object of admins")
    return dict(outputs)


@dataclass(frozen=True)
class Choice:
    server: str
    admin: str


def choose(outputs: Mapping[str, Any], server: str | None, admin: str | None) -> Choice:
    """The one (server, admin) the user means; a CliError listing the options when that is ambiguous."""
    enrollment: Mapping[str, Mapping[str, Any]] = outputs["enrollment"]
    if server is not None and server not in enrollment:
        raise CliError(f"--server: {server!r} is not in the stack outputs (servers: {', '.join(sorted(enrollment))})")
    if admin is not None:
        having = [s for s in enrollment if admin in enrollment[s]]
        if not having:
            every = sorted({a for admins in enrollment.values() for a in admins})
            raise CliError(f"--admin: {admin!r} is not an admin in the stack outputs (admins: {', '.join(every)})")
        if server is not None and admin not in enrollment[server]:
            raise CliError(
                f"--admin: {admin!r} is not an admin of {server} (admins of {server}: {', '.join(sorted(enrollment[server]))})"
            )
    candidates = [
        Choice(s, a)
        for s in sorted(enrollment)
        if server in (None, s)
        for a in sorted(enrollment[s])
        if admin in (None, a)
    ]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise CliError("the stack outputs hold no enrollment (no server with admins)")
    listing = "; ".join(f"{s}: {', '.join(sorted(a for a in enrollment[s] if admin in (None, a)))}"
                        for s in sorted({c.server for c in candidates}))
    servers = {c.server for c in candidates}
    several_admins = any(sum(c.server == s for c in candidates) > 1 for s in servers)
    missing = " and ".join(flag for flag, needed in (("--server", len(servers) > 1), ("--admin", several_admins)) if needed)
    raise CliError(f"{len(candidates)} enrollments match ({listing}): choose one with {missing}")
