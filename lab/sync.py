"""Apply a changed stack config to the running lab server, the way pulumi up and vpsctl sync change a real one.

First the lab's pulumi up: the program runs with the changed config against the lab's state (the seeds, keys and
host key it made before stay; a new admin gets a seed, codes and a throwaway key; a rotation gets a new seed), and
outputs.json is refreshed. Then vpsctl sync, as you would run it: it logs in to the lab server (key and code), shows
the plan, sends the signed desired state, proves it with a second, new login and confirms it; the server rolls the
change back by itself otherwise. --dry-run shows the plan only and keeps the lab's state as it was. Every new or
rotated admin's enrollment is shown at the end (QR, manual key, backup codes; images next to the lab's files).

It logs in as --as, else the stack's operator, else the first admin who is there before and after the change. A
new sshPort gets a new forward into the running VM (qemu's monitor, no restart); set previousSshPort to the old
port while it changes, as on a real server: the sync logs in there, and the new configuration is proved on the
new one. With --port it reaches a server you point it at instead of the lab's VM.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lab import show, stack, vm
from lab.state import LabState, default_dir
from lab.up import enrolled, up
from vpsctl import sync as vsync
from vpsctl.errors import EXIT_FAIL, EXIT_OK, CliError

EXITS = {EXIT_OK: "the server is in sync, or changed and the change confirmed by a new login",
         EXIT_FAIL: "no lab VM runs, or the server was unreachable, refused the change or rolled it back",
         vsync.EXIT_DRIFT: "--dry-run: the server differs from the config (the plan says how)"}
README_SECTION = "Local lab"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=str(stack.EXAMPLE), metavar="FILE",
                        help="the changed stack config (default: Pulumi.example.yaml); the lab's state is the one "
                        "python -m lab made for the same file name and server")
    parser.add_argument("--server", metavar="S", help="which server of the config (default: the first)")
    parser.add_argument("--state-dir", metavar="DIR", help="the lab's state folder, if python -m lab was given one")
    parser.add_argument("--dry-run", action="store_true", help="show the plan and stop; the lab's state stays as it was")
    parser.add_argument("--as", dest="admin", metavar="ADMIN", help="log in as this admin (default: the stack's operator, "
                        "else the first admin there before and after the change)")
    parser.add_argument("--identity", metavar="KEYFILE", help="that admin's SSH private key, if not the lab's "
                        "(default: keys/ADMIN in the state folder, or the --identity the lab was started with)")
    parser.add_argument("--port", action="append", metavar="SERVER=LOCAL",
                        help="reach the server's port SERVER at 127.0.0.1:LOCAL instead of the lab VM's forward "
                        "(repeatable: one per port while the port changes)")
    parser.add_argument("--uri", action="store_true", help="also print the otpauth URI of each new enrollment (secret)")


def say(text: str) -> None:
    print(text, flush=True)


def run(args: argparse.Namespace) -> int:
    config = Path(args.config)
    choice = stack.choose(stack.load_document(config), args.server)
    server = choice.server
    directory = Path(args.state_dir) if args.state_dir else default_dir(config, server.name)
    state = LabState.open(directory, server=server.name, create=False)
    with state.writing():
        record = state.record()
        before: dict[str, Any] = state.read(state.outputs) or {}
        was = (before.get("servers") or {}).get(server.name) or {}
        _check_port_change(choice, was.get("sshPort"))
        admin = _admin(args.admin, choice, list((before.get("enrollment") or {}).get(server.name) or {}))
        identities = record.get("identities") or {}
        if args.identity:
            stack.refuse_public(Path(args.identity).expanduser())  # vpsctl sync loads it (and asks for a passphrase)
        identity = args.identity or (identities.get(admin) or {}).get("file") or str(state.key_file(admin))
        ports = _ports(args.port, state, server.ssh_ports)
        release = record.get("release") or stack.guest_release(server.image)
        if record.get("image") not in (None, server.image):
            say(f"lab: note: {server.key('image')} changed to {server.image}: a real pulumi up would replace the server; "
                f"the running lab guest stays {release} (start the lab again for a new one)")
        new = up(choice, state, release, identities, preview=args.dry_run)
        outputs = state.outputs
        if args.dry_run:  # vpsctl sync reads the outputs from a file; the state keeps the ones from before
            outputs = state.path / "outputs.preview.json"
            state.write(outputs, new.outputs)
        try:
            argv = ["--from", str(outputs), "--server", server.name, "--host", "127.0.0.1", "--as", admin,
                    "--identity", identity, *(f"--port={p}={local}" for p, local in ports.items())]
            code = _vpsctl_sync([*argv, *(["--dry-run"] if args.dry_run else [])])
        finally:
            if args.dry_run:
                outputs.unlink(missing_ok=True)
        if code != EXIT_OK or args.dry_run:
            return code
        # What the phones hold: as shown by the lab, or synced last; a lab that showed nothing (--check): the state before.
        phones = record.get("enrolled") or enrolled(before, server.name)
        now = enrolled(new.outputs, server.name)
        for name in new.server.admin_names:
            if phones.get(name) != now[name]:
                what = "has a new seed (rotated, or a sudo code of its own)" if name in phones else "is new"
                say(f"\nlab: {name} {what} on {server.name}: enroll it")
                show.enrollment(new, name, state.path, uri=args.uri)
                key = (identities.get(name) or {}).get("file") or str(state.key_file(name))
                say("Log in: " + show.login_command(new, name, ports[new.server.ssh_port], Path(key), state.known_hosts))
        state.update_record(enrolled=now)
        return EXIT_OK


def _vpsctl_sync(argv: list[str]) -> int:
    """vpsctl sync itself, in this process: the same plan, apply, confirmation and checks as for a real server."""
    parser = argparse.ArgumentParser(prog="vpsctl sync")
    vsync.add_arguments(parser)
    return vsync.run(parser.parse_args(argv))


def _check_port_change(choice: stack.Choice, was: object) -> None:
    """A port change needs previousSshPort: sync logs in on the old port, and proves the new one."""
    server = choice.server
    if isinstance(was, int) and was != server.ssh_port and server.previous_ssh_port != was:
        raise CliError(f"{server.key('previousSshPort')}: sshPort changes from {was} to {server.ssh_port}; set "
                       f"previousSshPort: {was} while it changes, so the sync can log in on the old port (docs/lab.md)")


def _admin(wanted: str | None, choice: stack.Choice, before: list[str]) -> str:
    operator = choice.values.get("operator")
    if wanted or isinstance(operator, dict):
        return str(wanted or operator["admin"])  # type: ignore[index]
    after = choice.server.admin_names
    for name in after:
        if name in before:
            return name
    raise CliError(f"no admin of {choice.server.name} is there both before ({', '.join(before) or 'none'}) and after "
                   f"({', '.join(after)}) this change, so nobody could prove the new configuration: add the new admins "
                   "first, lab sync, then remove the old ones", EXIT_FAIL)


def _ports(given: list[str] | None, state: LabState, server_ports: tuple[int, ...]) -> dict[int, int]:
    """Server port -> loopback port: --port as given, else the lab VM's forwards, a new one for a new port."""
    if given:
        ports = vsync.port_map(given, server_ports)
        for port in server_ports:
            if port not in ports:
                raise CliError(f"--port: say where the server's port {port} is reached too (--port {port}=LOCAL)")
        return ports
    info = state.read(state.vm_file)
    if not state.vm_running() or not isinstance(info, dict):
        raise CliError(f"no lab VM runs from {state.path}: start it (.venv/bin/python -m lab) and leave it running, "
                       "or point --port at a server", EXIT_FAIL)
    forwards = {int(p): int(local) for p, local in info["ports"].items()}
    for port in server_ports:
        if port not in forwards:
            forwards[port] = vm.add_forward(Path(info["monitor"]), port)
            say(f"lab: the guest's port {port} is forwarded to 127.0.0.1:{forwards[port]} now")
            state.write(state.vm_file, {**info, "ports": {str(p): local for p, local in forwards.items()}})
    return {port: forwards[port] for port in server_ports}
