"""Boot a stack config's server in a local VM, offline, and enroll your phone: make lab.

It runs the real program (as pulumi up would) with your config, except that every admin and service account of
the server gets a throwaway SSH key and the server runs as a Debian guest; seeds, backup codes and the host key are
real, made once and kept in the lab's state folder (printed), so a phone enrolled once keeps working on every
later run until --fresh. It shows each admin's enrollment (QR code, manual key, backup codes; for sudo: totp the
sudo code's too), boots the user-data the program registered for the server under qemu (no network but forwarded
loopback ports), and prints the pinned known_hosts line and the ssh command; Ctrl-C ends it. --check logs in by
itself instead (key and code, host key pinned; the key alone refused; sudo works) and exits 0 or 1.

"python -m lab sync --config FILE" applies a changed config to the running lab server, as pulumi up and
vpsctl sync do to a real one ("python -m lab sync --help").
"""

from __future__ import annotations

import argparse
import getpass
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import NoReturn

import paramiko

from lab import image, show, stack
from lab import sync as lab_sync
from lab.state import LabState, default_dir, default_root
from lab.up import LabStack, enrolled, up
from lab.vm import VM, Report, VMError
from vpsctl import qr, sshclient
from vpsctl.__main__ import INTERRUPTED, exit_codes
from vpsctl.errors import EXIT_BROKEN_PIPE, EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CliError, printable
from vpsctl.verify import load_identity

EXITS = {EXIT_OK: "the lab was up until you ended it (Ctrl-C, or a power-off from inside); --check: every check passed",
         EXIT_FAIL: "the guest did not come up, stopped by itself, or (--check) a check failed"}
README = "README.md"
README_SECTION = "Local lab"
MORE = f'More: {README}, section "{README_SECTION}", and docs/lab.md.'


class Parser(argparse.ArgumentParser):
    """The one error convention (vpsctl's): a bad argument is one line, ``lab: error: ...``, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"lab: error: {printable(message)} (see --help)\n")


def _parser() -> Parser:
    parser = Parser(prog="python -m lab", description=__doc__, epilog=exit_codes(EXITS) + "\n" + MORE,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(stack.EXAMPLE), metavar="FILE",
                        help="stack config file (default: Pulumi.example.yaml)")
    parser.add_argument("--server", metavar="S", help="which server of the config (default: the first)")
    parser.add_argument("--image", choices=sorted(image.RELEASES),
                        help="guest release (default: the server's image if it is a Debian one; else debian-13 for an "
                        "image whose sshd has PerSourcePenalties, debian-12 otherwise)")
    parser.add_argument("--admin", metavar="NAME", help="show only this admin's enrollment, and log in as them "
                        "(default: every admin's enrollment, one after the other; the first admin logs in)")
    parser.add_argument("--uri", action="store_true", help="also print each otpauth URI (it contains the secret)")
    parser.add_argument("--identity", metavar="KEYFILE", help="your SSH private key: that admin logs in with it "
                        "instead of a throwaway key (the lab puts its public half in the config)")
    parser.add_argument("--state-dir", metavar="DIR", help=f"the lab's state folder (default: {default_root()}/"
                        "<config>-<server>, made with mode 0700)")
    parser.add_argument("--fresh", action="store_true", help="forget the state: new seeds, backup codes, keys and host key")
    parser.add_argument("--check", action="store_true", help="log in with key + TOTP by itself, then power off; exit 0/1")
    parser.add_argument("--timeout", type=float, default=600, metavar="SECONDS",
                        help="how long to wait for cloud-init in the guest (default 600)")
    return parser


def _sync_parser() -> Parser:
    doc = (lab_sync.__doc__ or "").strip()
    parser = Parser(prog="python -m lab sync", description=doc, epilog=exit_codes(lab_sync.EXITS) + "\n" + MORE,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    lab_sync.add_arguments(parser)
    return parser


def _say(text: str = "") -> None:
    print(text, flush=True)


def _fail(report: Report, vm: VM) -> int:
    _say(f"lab: cloud-init status: {report.status}; errors: {report.errors}")
    _say(f"lab: activation log:\n{report.data.get('output_log', '')}")
    _say(f"lab: serial console (end):\n{vm.serial_tail(40)}")
    return EXIT_FAIL


def _check(lab: LabStack, admin: str, key: paramiko.PKey, vm: VM) -> int:
    """Key + TOTP logs in and sudo works as the admin's sudo mode says; the key alone does not. Powers the guest off."""
    pinned = lab.host_key
    with sshclient.login(vm.host_port, admin, key=key, pinned=pinned) as key_only:
        if key_only.accepted:
            _say("lab: check FAILED: the key alone logged in")
            return EXIT_FAIL
    where = f"enrollment of {admin} on {lab.server.name}"
    code = qr.parse_item(lab.enrollment(admin), where)[1].now()
    attempt = sshclient.login(vm.host_port, admin, key=key, code=code, pinned=pinned, keep=True)
    mode = next(a.sudo for a in lab.server.admins if a.name == admin)
    try:
        if not attempt.accepted:
            _say(f"lab: check FAILED: key + TOTP: {attempt}")
            return EXIT_FAIL
        if mode == "totp":  # sudo asks for a code of its own seed (sudo -S reads the answer to PAM's prompt)
            sudo_code = qr.parse_item(lab.enrollment(admin)["sudo"], where)[1].now()
            done = attempt.run("sudo -S -p '' true && echo sudo-ok", stdin=f"{sudo_code}\n".encode())
        else:
            done = attempt.run("sudo -n true && echo sudo-ok")
        works = done.status == 0 and "sudo-ok" in done.stdout
        if works != (mode != "none"):
            _say(f"lab: check FAILED: sudo ({mode}) as {admin}: {'it works' if works else done.output.strip()}")
            return EXIT_FAIL
        sudo = f"sudo ({mode}) works" if works else "sudo refused (sudo: none)"
        _say(f"lab: check passed: {admin} logged in with key + TOTP (host key pinned), key alone refused, {sudo}")
        vm.poweroff((lambda: attempt.run("sudo -n systemctl poweroff", timeout=10)) if mode == "nopasswd" else None)
        return EXIT_OK
    finally:
        attempt.close()


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def run(args: argparse.Namespace) -> int:
    config = Path(args.config)
    choice = stack.choose(stack.load_document(config), args.server)
    server = choice.server
    if args.admin is not None and args.admin not in server.admin_names:
        raise CliError(f"--admin: {args.admin!r} is not an admin of {server.name} (admins: {', '.join(server.admin_names)})")
    admin = args.admin or server.admin_names[0]
    release = args.image or stack.guest_release(server.image)
    identities = {}
    if args.identity:
        path = Path(args.identity).expanduser().absolute()
        identities[admin] = {"file": str(path), "public": stack.identity_public(path)}
    state = LabState.open(Path(args.state_dir) if args.state_dir else default_dir(config, server.name), server=server.name,
                          create=True)
    with state.running():
        with state.writing():
            if args.fresh:
                state.fresh()
            new_stack = not state.engine.exists()
            lab = up(choice, state, release, identities)
            state.update_record(image=server.image)
            host_port = state.record().get("hostPort")
        if new_stack:
            kept = "made now; later runs keep them"
        else:
            kept = "kept from the last run" + (f", {len(lab.made)} new as the config asks" if lab.made else "")
            kept += "; --fresh makes new ones"
        _say(f"lab: state in {state.path} (seeds, backup codes and host key {kept})")
        for setting in choice.encrypted:
            _say(f"lab: note: {setting} is encrypted; the lab makes its own seeds instead")
        if not args.check:
            for name in [admin] if args.admin else server.admin_names:
                show.enrollment(lab, name, state.path, uri=args.uri)
            with state.writing():
                state.update_record(enrolled=enrolled(lab.outputs, server.name))
        started = time.monotonic()
        img = image.ensure(release)
        _say(f"\nlab: {server.name} as {release} (image ready in {time.monotonic() - started:.0f} s); booting under qemu "
             "(software emulation, ~1 min)")
        with VM(img, lab.user_data, lab.server.ssh_port, server.name, preferred_port=host_port) as vm:
            with state.writing():
                state.write(state.vm_file, {"pid": vm.pid, "monitor": str(vm.monitor_socket),
                                            "ports": {str(lab.server.ssh_port): vm.host_port}})
                state.update_record(hostPort=vm.host_port)
            report = vm.wait_report(args.timeout)
            _say(f"lab: cloud-init {report.status} {vm.ready_after:.0f} s after qemu started; "
                 f"ssh on 127.0.0.1:{vm.host_port} (guest port {lab.server.ssh_port})")
            if report.status != "done" or report.errors:
                return _fail(report, vm)
            identity = Path(identities[admin]["file"]) if admin in identities else state.key_file(admin)
            if args.check:
                ask = (lambda: getpass.getpass(f"passphrase for {identity}: ")) if sys.stdin.isatty() else None
                return _check(lab, admin, load_identity(identity, ask), vm)
            _say(f"\nPinned host key, under the server's name ({state.known_hosts}):\n  {state.known_hosts.read_text().strip()}")
            _say(f"Log in as {admin} (the key, then the 6-digit code):\n  "
                 + show.login_command(lab, admin, vm.host_port, identity, state.known_hosts))
            # --state-dir always: a changed copy of the config has another name, and the name picks the state folder.
            _say(f"Change the config and apply it to this running server: .venv/bin/python -m lab sync --config {config}"
                 + (f" --server {server.name}" if args.server else "") + f" --state-dir {state.path}")
            _say("\nThe VM runs until you press Ctrl-C (or power it off from inside: sudo poweroff).")
            try:
                vm.wait_exit(None)
            except KeyboardInterrupt:
                _say("\nlab: powering off")
                return EXIT_OK
            how = vm.how_it_stopped()
            if how == "powered off":
                _say("lab: the VM was powered off from inside, so the lab has ended; run it again for a new VM with the "
                     "same seeds, keys and host key.")
                return EXIT_OK
            print(f"lab: error: the VM {how or 'stopped by itself'} and the lab has ended (a reboot ends it too: every "
                  f"boot is a first boot); serial console (end):\n{vm.serial_tail(20)}", file=sys.stderr)
            return EXIT_FAIL


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGTERM, _terminate)
    try:
        sync = argv[:1] == ["sync"]
        code = lab_sync.run(_sync_parser().parse_args(argv[1:])) if sync else run(_parser().parse_args(argv))
        sys.stdout.flush()  # a closed pipe shows here, in the handlers below, not in the flush at exit
        return code
    except CliError as exc:
        return _error(str(exc), exc.exit_code)
    except ValueError as exc:  # ConfigError: a bad setting, already one line naming it
        return _error(str(exc), EXIT_USAGE)
    except (VMError, image.ImageError) as exc:
        return _error(str(exc), EXIT_FAIL)
    except subprocess.CalledProcessError as exc:
        return _error(f"{exc.cmd[0]} failed (exit {exc.returncode})", EXIT_FAIL)
    except BrokenPipeError:  # the reader went away (| head): stop quietly, as vpsctl does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as exc:  # the machine (a tool, a file the lab makes), not the input
        return _error(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc), EXIT_FAIL)
    except KeyboardInterrupt:
        return _error(INTERRUPTED, EXIT_INTERRUPTED)


def _error(message: str, code: int) -> int:
    print(f"lab: error: {printable(message)}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
