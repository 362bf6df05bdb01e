"""Converge: ``pulumi up`` brings one running server to its desired state through ``vpsctl sync``, and proves it.

Registered per server only when the stack names an operator (``totp-vps:operator``). Its one child is a
pulumi-command ``local.Command`` that runs ``vpsctl sync --from - --server NAME`` on the machine running
``pulumi up`` (the same plan, signed apply, confirmation by a second login and checks as by hand):

- ``stdin``: a secret JSON in the shape of the stack outputs, cut to what the sync of this one server reads
  (its address and pinned host key, its desired state, the state-signing key, its previous seeds, the operator).
  The provider keeps it in the state as a secret and hands it to the process on standard input: never on a
  command line, in an environment variable or in a file.
- ``triggers``: ``[desiredSerial]``, a digest that changes exactly when the server's desired state does. The SDK
  registers it as replace-on-change, so a new state replaces the Command, and a replacement is a ``create``: the
  sync runs. Any other input that changes (the address after a rebuild, the operator) is an update, which runs
  ``create`` too (there is no ``update`` command): the sync is idempotent, an unchanged server is "in sync".
- no ``delete``: removing a server or the operator runs nothing on the way out.
- ``logging``: stdout only (the plan and the result; vpsctl sync prints no secret); on failure the provider puts
  stdout and stderr into the error. ``stdout`` is the resource's output: its last line is the result.

At a server's creation the Command runs as soon as Hetzner reports the server running, which is before sshd
answers and before the first-boot activation lifts the lockdown: ``--wait`` lets the first login keep trying
for a bounded time while nothing answers or the lockdown offers no authentication method (vpsctl/sync.py).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi_command import local

from cloudinit.model import ConfigError, Server
from cloudinit.stackconfig import Operator
from components.totp_server import TotpServer

TYPE = "totp-vps:index:Converge"
PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# At creation the sync starts when Hetzner reports the server running; booting, cloud-init's packages and the
# activation take minutes at most (the local VM's whole first boot: under a minute). Past this something is wrong:
# when the activation fails, the lockdown stays.
FIRST_BOOT_WAIT = 600


def interpreter(executable: str = sys.executable, project_dir: str = PROJECT_DIR) -> str:
    """The Python that runs the sync: the one running this program (the project's venv, which the Pulumi CLI
    activates for the program only; the provider's shell gets the CLI's own PATH). Relative to the project
    directory when it lies inside it: the provider runs commands there (the CLI starts plugins in the project
    root), and a relative path keeps ``create`` the same in every checkout and on every operator's machine,
    where an absolute one would change it, and re-run every sync, whenever another machine runs ``pulumi up``."""
    path, root = os.path.abspath(executable), os.path.abspath(project_dir)
    return os.path.relpath(path, root) if os.path.commonpath([path, root]) == root else path


def sync_command(python: str, server: str, wait: int) -> str:
    """The shell line the Command runs (``/bin/sh -c``); every word quoted."""
    return shlex.join([python, "-m", "vpsctl", "sync", "--from", "-", "--server", server, "--wait", str(wait)])


def sync_input(spec: Server, operator: Operator, values: Sequence[Any]) -> str:
    """What ``vpsctl sync --from -`` reads for one server, as JSON: the stack outputs' shape, no more.

    ``values``: ipv4, ipv6, knownHosts, hostPublicKey, desiredState, previousSeeds, signingKey (resolved)."""
    ipv4, ipv6, known_hosts, host_public_key, desired_state, previous_seeds, signing_key = values
    outputs = {
        "servers": {spec.name: {"ipv4": ipv4, "ipv6": ipv6, "previousSshPort": spec.previous_ssh_port,
                                "knownHosts": known_hosts, "hostPublicKey": host_public_key}},
        # The outputs' shape check wants the object; sync reads none of it, so no enrollment travels.
        "enrollment": {},
        "desiredState": {spec.name: desired_state},
        "sync": {"signingKey": signing_key, "previousSeeds": {spec.name: previous_seeds}},
        "operator": {"admin": operator.admin, "identityFile": operator.identity_file},
    }
    return json.dumps(outputs, sort_keys=True)  # sorted: the same state gives the same stdin, so no spurious update


def last_line(stdout: str | None) -> str:
    """The sync's result line (it prints the plan first, the outcome of the server last)."""
    lines = [line for line in (stdout or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


@dataclass(frozen=True, kw_only=True)
class ConvergeArgs:
    """Inputs of one Converge, validated at construction."""

    server: Server
    """The validated server description (cloudinit.model.Server)."""
    target: TotpServer
    """The server's component: its outputs feed the sync, and the sync waits for its resources."""
    firewalls: Sequence[pulumi.Resource]
    """The firewalls the server is attached to: they open a new port before the sync logs in there."""
    signing_key: pulumi.Input[str]
    """The stack's state-signing private key (secret)."""
    operator: Operator
    """Who logs in: an admin of this server and that admin's private key file on this machine."""
    wait: int = FIRST_BOOT_WAIT
    """Seconds the first login keeps trying while the server is not ready yet (vpsctl sync --wait)."""
    python: str = field(default_factory=interpreter)
    """The interpreter the Command runs vpsctl with (:func:`interpreter`)."""

    def __post_init__(self) -> None:
        if self.operator.admin not in self.server.admin_names:
            raise ConfigError("operator.admin", self.operator.admin, f"is not an admin of {self.server.name}")
        if self.wait <= 0:  # vpsctl sync checks the upper bound itself
            raise ConfigError("wait", self.wait, "must be positive: at a server's creation the sync starts before sshd answers")
        if not self.python:
            raise ConfigError("python", self.python, "must name an interpreter")


class Converge(pulumi.ComponentResource):
    """The sync of one server, run by ``pulumi up`` whenever the server's desired state changes."""

    converged: pulumi.Output[str]
    """The last line of the last sync that succeeded, e.g. ``web-1: confirmed (state 1a2b3c4d5e6f, proved by a new
    login); checks: 14 passed`` or ``web-1: in sync``: a key + TOTP login worked."""
    converged_serial: pulumi.Output[str]
    """The desired serial that sync brought the server to (the Command's trigger)."""

    def __init__(self, name: str, args: ConvergeArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE, name, None, opts)
        spec, target = args.server, args.target
        stdin: pulumi.Output[str] = pulumi.Output.secret(pulumi.Output.all(
            target.ipv4, target.ipv6, target.known_hosts, target.host_public_key, target.desired_state,
            target.previous_seeds, args.signing_key,
        ).apply(lambda v: sync_input(spec, args.operator, v)))
        sync = local.Command(
            f"{name}-sync",
            create=sync_command(args.python, spec.name, args.wait),
            stdin=stdin,
            triggers=[target.desired_serial],
            logging=local.Logging.STDOUT,
            add_previous_output_in_env=False,  # sync reads nothing from it: its environment stays what the CLI's is
            # Depending on the component waits for all of its children: the server (created, or rebuilt) and,
            # during the upgrade transition, its previous firewall. The provider's stdin output mirrors the input:
            # declared secret too, which is what the policy pack (sec-02) can see.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[target, *args.firewalls], additional_secret_outputs=["stdin"]),
        )
        self.converged = sync.stdout.apply(last_line)
        self.converged_serial = sync.triggers.apply(lambda t: str(t[0]) if t else "")
        self.register_outputs({"converged": self.converged, "convergedSerial": self.converged_serial})
