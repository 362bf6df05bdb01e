"""What the lab shows a person: an admin's enrollment (the QR on the terminal and as PNG and SVG files, the
manual key, the backup codes, and the same for sudo: totp's own code) and how to log in.

The QR code, the images and the checks of the outputs are vpsctl qr's (cloudinit.enrollment draws them)."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from cloudinit import enrollment as enroll
from lab import ssh
from lab.up import LabStack
from vpsctl import qr
from vpsctl.errors import printable
from vpsctl.files import write_private


def enrollment(stack: LabStack, admin: str, directory: Path, *, uri: bool, out: TextIO | None = None) -> None:
    """Show ``admin``'s enrollment and write its QR codes to ``directory`` as ADMIN.png/.svg (ADMIN-sudo.* too)."""
    out = out or sys.stdout
    server = stack.server.name
    item = stack.enrollment(admin)
    parts = [("", item, f"logs {admin} in to {server}")]
    if isinstance(item.get("sudo"), Mapping):
        parts.append(("-sudo", item["sudo"], f"sudo asks {admin} for on {server} (its own seed)"))
    for suffix, entry, what in parts:
        link, totp, codes = qr.parse_item(entry, f"enrollment of {admin} on {server}")
        images = [directory / f"{admin}{suffix}.{kind}" for kind in ("png", "svg")]
        for image in images:
            write_private(image, qr.image_bytes(link, image.suffix[1:]))
        # Names come from the user's config: written out safely. The seed and codes were checked (base32, digits).
        out.write(f"\n{printable(str(totp.name))} ({printable(str(totp.issuer))}): the code that {printable(what)}\n")
        out.write(enroll.terminal_qr(link))
        out.write(f"Scan it with your authenticator app ({qr.APPS}), or type the key: {enroll.manual_key(totp.secret)}\n")
        if uri:
            out.write(f"otpauth URI (contains the secret): {printable(link)}\n")
        out.write(f"Backup codes (each works once): {' '.join(codes)}\n")
        out.write(f"The same QR as images (mode 0600): {images[0]} {images[1]}\n")
    out.flush()


def login_command(stack: LabStack, admin: str, port: int, identity: Path, known_hosts: Path) -> str:
    """The OpenSSH command for ``admin``: the host key pinned under the server's name, so any port matches it."""
    argv = ssh.openssh_argv(port, admin, identity, known_hosts, "-o", f"HostKeyAlias={stack.server.name}")
    return shlex.join(argv)
