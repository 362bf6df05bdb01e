"""``make lab``: boot the example stack's first server in a local VM and enroll yourself.

Renders the server's user-data exactly as ``pulumi up`` would send it (fresh TOTP seeds, backup codes
and a pinned host key; the admins' keys replaced by a throwaway key pair, or by yours with --identity),
boots it under qemu with no network except one loopback port, prints the first admin's enrollment QR,
backup codes, pinned known_hosts line and ssh command, and stays up until Ctrl-C. With --check it logs
in itself with key + TOTP instead and exits 0 (login works, nothing else does) or 1.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import pyotp

from cloudinit import enrollment
from cloudinit.model import ConfigError
from cloudinit.secrets import known_hosts_line
from lab import image, ssh, stack
from lab.vm import VM, Report, VMError
from vpsctl import sshclient
from vpsctl.errors import EXIT_USAGE, CliError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab", description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--config", default=str(stack.EXAMPLE), help="stack config file (default: Pulumi.example.yaml)")
    parser.add_argument("--server", help="which server of the config (default: the first)")
    parser.add_argument("--image", choices=sorted(image.RELEASES),
                        help="guest release (default: the server's image if it is a Debian one, else debian-12)")
    parser.add_argument("--identity", help="your public key file (.pub): log in with your own key instead of a throwaway one")
    parser.add_argument("--check", action="store_true", help="log in with key + TOTP non-interactively, exit 0/1")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for cloud-init in the guest")
    return parser


def _say(text: str = "") -> None:
    print(text, flush=True)


def _fail(report: Report, vm: VM) -> int:
    _say(f"lab: cloud-init status: {report.status}; errors: {report.errors}")
    _say(f"lab: activation log:\n{report.data.get('output_log', '')}")
    _say(f"lab: serial console (end):\n{vm.serial_tail(40)}")
    return 1


def _enrollment(lab: stack.LabServer, admin: str, port: int, identity: Path | None, known_hosts: Path) -> None:
    server = lab.server
    secrets = lab.admins[admin]
    uri = enrollment.otpauth_uri(secrets.seed, server.issuer, enrollment.account(admin, server.name))
    _say(f"\nScan with an authenticator app ({server.issuer}: {enrollment.account(admin, server.name)}):\n")
    _say(enrollment.terminal_qr(uri))
    _say(f"Or type the key: {enrollment.manual_key(secrets.seed)}")
    _say("Backup codes (each works once): " + " ".join(secrets.backup_codes))
    _say(f"Pinned host key (in {known_hosts}):\n  {known_hosts.read_text().strip()}")
    pin = ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes"]
    argv = ssh.openssh_argv(port, admin, identity, known_hosts)\
        if identity else ["ssh", "-p", str(port), *pin, f"{admin}@127.0.0.1"]
    _say("Log in (key, then the 6-digit code):\n  " + " ".join(argv))


def _check(lab: stack.LabServer, admin: str, key: stack.LabKey, vm: VM) -> int:
    """Key + TOTP logs in and sudo works; key alone does not. Powers the guest off through the login."""
    with sshclient.login(vm.host_port, admin, key=key.pkey(), pinned=lab.host_key.public_openssh) as key_only:
        if key_only.accepted:
            _say("lab: check FAILED: the key alone logged in")
            return 1
    code = pyotp.TOTP(lab.admins[admin].seed).now()
    attempt = sshclient.login(vm.host_port, admin, key=key.pkey(), code=code, pinned=lab.host_key.public_openssh, keep=True)
    try:
        if not attempt.accepted:
            _say(f"lab: check FAILED: key + TOTP: {attempt}")
            return 1
        done = attempt.run("sudo -n true && echo sudo-ok")
        if done.status != 0 or "sudo-ok" not in done.stdout:
            _say(f"lab: check FAILED: sudo as {admin}: {done.output.strip()}")
            return 1
        _say(f"lab: check passed: {admin} logged in with key + TOTP (host key pinned), key alone refused, sudo works")
        vm.poweroff(lambda: attempt.run("sudo systemctl poweroff", timeout=10))
        return 0
    finally:
        attempt.close()


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def run(args: argparse.Namespace) -> int:
    if args.check and args.identity:
        raise SystemExit("lab: --check logs in by itself with a throwaway key; drop --identity")
    document = stack.load_document(Path(args.config))
    first = stack.lab_config(document, server=args.server)
    release = args.image or (first.image if first.image in image.RELEASES else "debian-12")
    admin = first.admin_names[0]
    keys_dir = stack.key_dir()  # 0700, removed below: holds the throwaway private keys
    try:
        keys = {name: stack.make_key(keys_dir, name) for name in first.admin_names}
        public = {name: key.public for name, key in keys.items()}
        identity: Path | None = keys[admin].path
        if args.identity:
            public[admin] = Path(args.identity).expanduser().read_text().strip().splitlines()[0]
            private = Path(args.identity).expanduser().with_suffix("")
            identity = private if private.exists() and private != Path(args.identity).expanduser() else None
        server = stack.lab_config(document, server=first.name, image=release, keys=public)
        lab = stack.render_server(server)
        started = time.monotonic()
        img = image.ensure(release)
        _say(f"lab: {server.name} as {release} (image ready in {time.monotonic() - started:.0f} s); booting under qemu "
             "(software emulation, ~1 min)")
        with VM(img, lab.user_data, server.ssh_port, server.name) as vm:
            report = vm.wait_report(args.timeout)
            _say(f"lab: cloud-init {report.status} {vm.ready_after:.0f} s after qemu started; "
                 f"ssh on 127.0.0.1:{vm.host_port} (guest port {server.ssh_port})")
            if report.status != "done" or report.errors:
                return _fail(report, vm)
            known_hosts = keys_dir / "known_hosts"
            known_hosts.write_text(known_hosts_line("127.0.0.1", vm.host_port, lab.host_key.public_openssh) + "\n")
            if args.check:
                return _check(lab, admin, keys[admin], vm)
            _enrollment(lab, admin, vm.host_port, identity, known_hosts)
            _say("\nThe VM runs until you press Ctrl-C (or power it off from inside).")
            try:
                vm.wait_exit(None)
            except KeyboardInterrupt:
                _say("\nlab: powering off")
            return 0
    finally:
        shutil.rmtree(keys_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return run(args)
    except (CliError, ConfigError) as exc:  # bad input (the file or a setting): one line, exit 2, like vpsctl
        print(f"lab: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (VMError, image.ImageError, ValueError, OSError) as exc:
        print(f"lab: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
