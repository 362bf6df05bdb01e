"""Check a stack against the live Hetzner project before `pulumi up`: types, images, limits, names.

What the offline model cannot know, asked through the official `hcloud` library: each server's type
is offered, not sold out and not deprecated in its location; its image exists for the type's
architecture; the project's firewalls leave room for the ones this stack adds (Hetzner: 50 per
project); no server, firewall or SSH key name this stack uses belongs to something else in the project.
"This stack's own" means labelled `totp-vps/stack=<project.stack>` (every resource the program
creates carries it) or, with `--stack` and the Pulumi CLI, listed in the stack's state (resources
made by earlier versions carry no label yet). The API exposes no server limit (Hetzner shows limits in
the Cloud Console only), so the server count is a note, not a finding.

Token: `pulumi config get hcloud:token --stack NAME` when the Pulumi CLI is there, else HCLOUD_TOKEN;
never printed. HCLOUD_ENDPOINT points the client elsewhere (as for Hetzner's own CLI). One line per
finding; exit 0 clean, 1 findings, 2 bad input or an API that could not be asked.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudinit import catalogue, stackconfig
from cloudinit.model import Server
from components import firewalls
from components.naming import OWNER_LABEL, resource_name, stack_id
from vpsctl.errors import EXIT_FAIL, EXIT_OK, CliError
from vpsctl.files import load_stack_file, load_yaml

EXITS = {EXIT_OK: "no finding", EXIT_FAIL: "a finding (one line each)"}
README_SECTION = "Operator CLI"

DEFAULT_ENDPOINT = "https://api.hetzner.cloud/v1"
MANAGED_TYPES = ("hcloud:index/server:Server", "hcloud:index/firewall:Firewall", "hcloud:index/sshKey:SshKey")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", metavar="NAME", help="stack name (its config: Pulumi.NAME.yaml; token and state via pulumi)")
    parser.add_argument("--config", metavar="FILE", help="stack config file (default Pulumi.<stack>.yaml)")


@dataclass(frozen=True)
class Target:
    """What is checked: the stack's identity and its validated config."""

    project: str
    stack: str
    config: stackconfig.StackConfig
    directory: Path
    """The project directory (where the stack file is): the Pulumi CLI runs there."""
    state_ids: frozenset[str] = frozenset()
    """Hetzner ids in the stack's state (empty when it could not be read)."""


def run(args: argparse.Namespace) -> int:
    import hcloud  # imported here: `vpsctl --help` needs no API client

    target = load_target(args.stack, args.config)
    client = hcloud.Client(
        token=token(args.stack, target.directory),
        api_endpoint=os.environ.get("HCLOUD_ENDPOINT") or DEFAULT_ENDPOINT,
        application_name="totp-vps-preflight",
        timeout=30,
    )
    try:
        findings, notes = check(client, target)
    except hcloud.APIException as exc:
        raise CliError(f"Hetzner API: {exc.code}: {exc.message}") from None
    except OSError as exc:  # requests' connection errors derive from OSError
        raise CliError(f"Hetzner API: could not connect ({type(exc).__name__})") from None
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for finding in findings:
        print(finding)
    servers = len(target.config.servers)
    if findings:
        print(f"{len(findings)} finding(s) for stack {target.stack} ({servers} servers)")
        return EXIT_FAIL
    print(f"no findings: {servers} servers of stack {target.stack} fit the Hetzner project")
    return 0


def load_target(stack_arg: str | None, config: str | None) -> Target:
    if stack_arg is None and config is None:
        raise CliError("--stack or --config: name the stack or its config file")
    path = Path(config or f"Pulumi.{stack_arg}.yaml")
    stack = stack_arg
    if stack is None:
        found = re.fullmatch(r"Pulumi\.(.+)\.ya?ml", path.name)
        if not found:
            raise CliError(f"--config: cannot tell the stack name from {path.name}; pass --stack NAME too")
        stack = found.group(1)
    plain, _ = stackconfig.from_stack_file(load_stack_file(str(path)))
    parsed = stackconfig.parse(plain)  # a bad value: ConfigError, one line, exit 2
    project_file = path.parent / "Pulumi.yaml"
    project = "totp-vps"
    if project_file.exists():
        document = load_yaml(str(project_file), "Pulumi.yaml")
        if isinstance(document, Mapping) and isinstance(document.get("name"), str):
            project = document["name"]
    ids = state_ids(stack_arg, path.parent) if stack_arg is not None else set()
    return Target(project, stack, parsed, path.parent, frozenset(ids))


def _pulumi(directory: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    """Run the Pulumi CLI in the project ``directory`` if it is installed; None when it is not or could not run."""
    binary = shutil.which("pulumi")
    if binary is None:
        return None
    try:
        return subprocess.run(  # noqa: S603 - fixed argv, no shell
            [binary, *args], cwd=directory, capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def token(stack: str | None, directory: Path) -> str:
    """The Hetzner token the provider would use: the stack's ``hcloud:token``, else HCLOUD_TOKEN."""
    if stack is not None:
        done = _pulumi(directory, "config", "get", "hcloud:token", "--stack", stack)
        if done is not None and done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    value = os.environ.get("HCLOUD_TOKEN", "").strip()
    if not value:
        raise CliError("no Hetzner token: `pulumi config set hcloud:token --secret` for the stack, or HCLOUD_TOKEN")
    return value


def state_ids(stack: str, directory: Path) -> set[str]:
    """Hetzner ids of the servers, firewalls and keys in the stack's state (empty without the CLI)."""
    done = _pulumi(directory, "stack", "export", "--stack", stack)
    if done is None or done.returncode != 0:
        return set()
    try:
        resources = json.loads(done.stdout).get("deployment", {}).get("resources", [])
    except (json.JSONDecodeError, AttributeError):
        return set()
    return {str(r["id"]) for r in resources if r.get("type") in MANAGED_TYPES and r.get("id")}


def check(client: Any, target: Target) -> tuple[list[str], list[str]]:
    """(findings, notes) for ``target`` against the project ``client`` reaches."""
    findings: list[str] = []
    servers = target.config.servers
    types = {t.name: t for t in client.server_types.get_all()}
    locations = {loc.name for loc in client.locations.get_all()}
    images: dict[tuple[str, str], list[Any]] = {}
    for server in servers:
        findings += _server_type_findings(server, types, locations)
        if server.server_type in types:
            arch = types[server.server_type].architecture
            key = (server.image, arch)
            if key not in images:
                images[key] = client.images.get_all(
                    name=server.image, architecture=[arch], type=["system"], include_deprecated=True
                )
            findings += _image_findings(server, arch, images[key])

    ours = _ours(target)
    plan = firewalls.plan(servers, target.project, target.stack, keep_legacy=target.config.keep_legacy_firewalls)
    existing = client.firewalls.get_all()
    mine = {f.name for f in existing if ours(f)}
    for spec in plan.firewalls:
        for f in existing:
            if f.name == spec.name and not ours(f):
                findings.append(f"firewall {spec.name} (servers {', '.join(spec.servers)}): the name is taken by firewall "
                                f"{f.id}, which is not this stack's (no label {OWNER_LABEL}={_owner(target)})")
    # The first server of a rule set hands its old firewall (named like the server) over instead of a new one.
    added = [s for s in plan.firewalls if s.name not in mine and s.servers[0] not in mine]
    total = len(existing) + len(added)  # Pulumi creates before it deletes: the peak is old + new
    if total > firewalls.MAX_FIREWALLS_PER_PROJECT:
        findings.append(f"firewalls: the project has {len(existing)} and this stack adds {len(added)}: {total}, over "
                        f"Hetzner's {firewalls.MAX_FIREWALLS_PER_PROJECT} per project")

    present = client.servers.get_all()
    by_name = {s.name: s for s in present}
    for server in servers:
        other = by_name.get(server.name)
        if other is not None and not ours(other):
            findings.append(f"{server.where}.name: a server named {server.name} exists in the project (id {other.id}) and is "
                            f"not this stack's (no label {OWNER_LABEL}={_owner(target)})")
    key_name = resource_name(target.project, target.stack, "bootstrap")
    for key in client.ssh_keys.get_all(name=key_name):
        if not ours(key):
            findings.append(f"SSH key {key_name}: the name is taken by key {key.id}, which is not this stack's")
    new_servers = sum(1 for s in servers if s.name not in by_name)
    notes = [f"the project has {len(present)} servers and this stack adds {new_servers}; the Hetzner API does not expose "
             "the account's server limit (Cloud Console: Limits)"]
    if not target.state_ids:
        notes.append("the stack's state was not read (needs --stack and the pulumi CLI): resources are recognised by label only")
    return findings, notes


def _owner(target: Target) -> str:
    return stack_id(target.project, target.stack)


def _ours(target: Target) -> Any:
    owner = _owner(target)
    return lambda resource: (resource.labels or {}).get(OWNER_LABEL) == owner or str(resource.id) in target.state_ids


def _server_type_findings(server: Server, types: Mapping[str, Any], locations: Iterable[str]) -> list[str]:
    w, name, location = server.where, server.server_type, server.location
    if location not in locations:
        return [f"{w}.location: {location} is not a location of the Hetzner API"]
    kind = types.get(name)
    if kind is None:
        return [f"{w}.serverType: {name} is not among Hetzner's server types any more (cloudinit/catalogue.py, "
                f"{catalogue.VERSION}, still lists it)"]
    entry = next((e for e in kind.locations or () if e.location.name == location), None)
    if entry is None:
        offered = ", ".join(sorted(e.location.name for e in kind.locations or ())) or "nowhere"
        return [f"{w}.serverType: {name} is not offered in {location} (offered in {offered})"]
    if entry.deprecation is not None:
        until = entry.deprecation.unavailable_after
        if until is not None and until <= datetime.datetime.now(datetime.UTC):
            return [f"{w}.serverType: {name} cannot be ordered in {location} since {until:%Y-%m-%d} (deprecated)"]
        return [f"{w}.serverType: {name} is deprecated in {location}" + (f", orderable until {until:%Y-%m-%d}" if until else "")]
    if entry.available is False:
        return [f"{w}.serverType: {name} is sold out in {location} right now (try another location or type)"]
    return []


def _image_findings(server: Server, architecture: str, found: list[Any]) -> list[str]:
    w = server.where
    if not found:
        return [f"{w}.image: Hetzner has no {architecture} build of {server.image} (for {server.server_type})"]
    current = [image for image in found if image.deprecation is None]
    if not current:
        until = found[0].deprecation.unavailable_after
        return [f"{w}.image: Hetzner deprecated its {architecture} build of {server.image}"
                + (f" (usable until {until:%Y-%m-%d})" if until else "")]
    return []
