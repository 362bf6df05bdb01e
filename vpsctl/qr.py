"""Show an admin's TOTP enrollment from the stack outputs: QR code, manual key, backup codes.

The QR code holds an otpauth:// URI in Google's Key URI Format (issuer prefix and parameter, SHA1,
6 digits, 30 s), which Google Authenticator, Microsoft Authenticator, Authy, 1Password and Aegis read.
On the terminal it is drawn black on white, whatever the terminal's colours; --png or --svg writes it
to an image file (mode 0600) instead. The URI itself is printed only with --uri. Everything shown is
secret: run it where nobody watches the screen. Details and recovery: docs/enrollment.md.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyotp

from cloudinit import enrollment as enroll
from vpsctl import stackoutputs
from vpsctl.errors import EXIT_OK, CliError, printable
from vpsctl.files import write_private

APPS = "Google Authenticator, Microsoft Authenticator, Authy, 1Password, Aegis"
PNG_SCALE = 8  # pixels per module: large enough for any phone camera and for zbarimg
EXITS = {EXIT_OK: "the enrollment was shown, or the image written"}
README_SECTION = "Secrets and enrollment"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    stackoutputs.add_source_arguments(parser)
    parser.add_argument("--admin", metavar="A", help="admin name (needed when the server has several)")
    image = parser.add_mutually_exclusive_group()
    for kind in ("svg", "png"):
        image.add_argument(f"--{kind}", metavar="FILE", help=f"write the QR as {kind.upper()} to FILE (mode 0600), not on screen")
    parser.add_argument("--uri", action="store_true", help="also print the otpauth:// URI (it contains the secret)")
    parser.add_argument("--sudo", action="store_true",
                        help="the code sudo asks for (an admin with sudo: totp has a seed of its own for it)")


def entry(outputs: Mapping[str, Any], server: str, admin: str, sudo: bool = False) -> tuple[str, pyotp.TOTP, list[str]]:
    """(otpauth URI, parsed TOTP, backup codes) of one admin (or of their sudo seed); CliError (without the
    values) if malformed or absent."""
    item = outputs["enrollment"][server][admin]
    if not sudo:
        return parse_item(item, f"enrollment of {admin} on {server}")
    if not isinstance(item, Mapping) or not isinstance(item.get("sudo"), Mapping):
        raise CliError(f"--sudo: {printable(admin)} has no sudo code on {printable(server)} (their sudo setting is not totp)")
    return parse_item(item["sudo"], f"sudo enrollment of {admin} on {server}")


def parse_item(item: Mapping[str, Any], where: str) -> tuple[str, pyotp.TOTP, list[str]]:
    """(otpauth URI, parsed TOTP, backup codes) of one enrollment entry (an admin's, or its ``sudo`` one)."""
    uri = item.get("otpauthUri")
    codes = item.get("backupCodes")
    if not isinstance(uri, str) or not uri.startswith("otpauth://totp/"):
        raise CliError(f"{where}: no otpauthUri (otpauth://totp/...) in the outputs")
    try:
        totp = pyotp.parse_uri(uri)
    except (ValueError, TypeError):
        raise CliError(f"{where}: otpauthUri is not a valid otpauth URI") from None
    if not isinstance(totp, pyotp.TOTP):
        raise CliError(f"{where}: otpauthUri is not a TOTP URI")
    if not isinstance(codes, list) or not all(isinstance(c, str) and c.isdigit() for c in codes):
        raise CliError(f"{where}: backupCodes is not a list of digit strings")
    return uri, totp, codes


def image_bytes(uri: str, kind: str) -> bytes:
    buffer = io.BytesIO()
    enroll.qr(uri).save(buffer, kind=kind, scale=PNG_SCALE if kind == "png" else 4, border=enroll.QUIET_ZONE)
    return buffer.getvalue()


def run(args: argparse.Namespace) -> int:
    outputs = stackoutputs.load(args)
    choice = stackoutputs.choose(outputs, args.server, args.admin)
    uri, totp, codes = entry(outputs, choice.server, choice.admin, args.sudo)

    image = args.svg or args.png
    if image:  # before anything is printed: a file that cannot be written is bad input, exit 2 and nothing shown
        kind = "svg" if args.svg else "png"
        try:
            write_private(Path(image), image_bytes(uri, kind))
        except OSError as exc:
            raise CliError(f"--{kind}: cannot write {image}: {exc.strerror}") from None

    out = sys.stdout
    # Names (and the URI, the ssh command) come from the stack outputs: a control character in one must
    # not reach the terminal as such. The seed and the codes are checked above (base32, digits).
    account, issuer, admin, server = (printable(str(v)) for v in (totp.name, totp.issuer, choice.admin, choice.server))
    what = "sudo's code" if args.sudo else "TOTP enrollment"
    out.write(f"{account} ({issuer}): {what} for {admin} on {server}\n")
    out.write("Everything below is secret: show it to nobody, and clear the screen afterwards.\n\n")
    if image:
        out.write(f"QR code written to {image} (mode 0600). Scan it, then delete the file: it holds the secret.\n")
    else:
        out.write(enroll.terminal_qr(uri))
        out.write(f"Scan the QR code with your authenticator app ({APPS}).\n")
    out.write("\nNo camera? Add the account by hand: time-based, SHA1, 6 digits, 30 seconds, key:\n")
    out.write(f"    {enroll.manual_key(totp.secret)}\n")
    if args.uri:
        out.write(f"\notpauth URI (contains the secret):\n    {printable(uri)}\n")
    out.write(f"\nBackup codes ({len(codes)}), for when the phone is lost; each works once:\n")
    for code in codes:
        out.write(f"    {code}\n")
    out.write(
        "Store them offline: in a password manager, or printed and locked away; never next to the SSH key.\n"
        "At the code prompt, type one instead of the 6-digit code. Used up or lost: rotate (docs/enrollment.md).\n"
    )
    command = None if args.sudo else _ssh_command(outputs, choice)
    if args.sudo:
        out.write("\nsudo asks for this code (\"Verification code:\"), never for the login's.\n")
    if command:
        out.write(f"\nLog in with `{printable(command)}`: the SSH key first, then the 6-digit code from the app.\n")
    return EXIT_OK


def _ssh_command(outputs: Mapping[str, Any], choice: stackoutputs.Choice) -> str | None:
    server = outputs["servers"].get(choice.server)
    commands = server.get("sshCommands") if isinstance(server, Mapping) else None
    command = commands.get(choice.admin) if isinstance(commands, Mapping) else None
    return command if isinstance(command, str) else None
