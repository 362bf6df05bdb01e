"""What an admin needs to enroll an authenticator app: the otpauth URI, a QR code, the manual key.

The URI follows Google's Key URI Format, which Google Authenticator, Microsoft Authenticator, Authy,
1Password and Aegis all read: label ``Issuer:account``, plus the ``issuer`` parameter, and the
algorithm, digits and period spelled out (SHA1, 6, 30 s: what pam_google_authenticator checks).
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

import segno
import zxingcpp

ALGORITHM = "SHA1"
DIGITS = 6
PERIOD = 30
QUIET_ZONE = 4  # modules of light border on every side: what the QR standard (ISO/IEC 18004) asks for
# The terminal QR sets both colours itself, so it reads the same on light and dark themes: a decoder
# (a phone camera) wants dark modules on a light ground, and the terminal's default colours are
# light-on-dark in one theme and dark-on-light in the other. Black (30) half blocks on bright white
# (107, not 47: 47 is a light grey in many palettes): 16-colour codes, which nearly every terminal
# knows (256-colour and RGB codes are not everywhere).
# Each line ends with a reset, so no colour reaches the next line or what is printed after the QR.
_COLOURS = "\x1b[30;107m"
_RESET = "\x1b[0m"
# Half-block characters for a pair of module rows, indexed by 2 * top_dark + bottom_dark: the block
# (foreground, black) draws the dark modules, the background (white) shows through for light ones.
_GLYPHS = str.maketrans({0: " ", 1: "\u2584", 2: "\u2580", 3: "\u2588"})
_DARK = bytes(1 if value < 128 else 0 for value in range(256))  # pixel value -> 1 for a dark module


def account(admin: str, server: str, *, sudo: bool = False) -> str:
    """The account name an app shows: ``alice@web-1``, and ``alice@web-1 sudo`` for the code sudo asks for."""
    return f"{admin}@{server}{' sudo' if sudo else ''}"


def otpauth_uri(seed: str, issuer: str, account_name: str) -> str:
    # Percent-encoding as RFC 3986 has it (a space is %20, as the Key URI Format's examples show), in the
    # label and in the query alike: urlencode's default (quote_plus) writes '+', which apps may show as is.
    label = quote(f"{issuer}:{account_name}", safe=":@")
    query = urlencode(
        {"secret": seed, "issuer": issuer, "algorithm": ALGORITHM, "digits": DIGITS, "period": PERIOD}, quote_via=quote
    )
    return f"otpauth://totp/{label}?{query}"


def qr(uri: str) -> segno.QRCode:
    """The QR code for image files (PNG, SVG). Error correction M survives a phone camera."""
    return segno.make_qr(uri, error="m")


def modules(uri: str) -> list[bytes]:
    """The QR code's module rows, one byte per module (1 = dark, 0 = light), without quiet zone.

    Encoded by zxing-cpp (compiled): the program makes a terminal QR for every admin on every server
    on each run, and segno's pure-Python encoder was the largest cost of a 100-server run (bench/)."""
    symbol = zxingcpp.create_barcode(uri, zxingcpp.BarcodeFormat.QRCode, ec_level="M")
    pixels = memoryview(symbol.to_image(scale=1, add_quiet_zones=False))  # type: ignore[arg-type]  # untyped buffer
    size = pixels.shape[1] if pixels.shape else 0
    flat = pixels.tobytes().translate(_DARK)
    return [flat[i : i + size] for i in range(0, len(flat), size)]


def terminal_qr(uri: str) -> str:
    """The QR as lines of half-block characters (two module rows per line), black on white with a
    4-module quiet zone, colours set and reset on every line: scans on light and dark terminal themes."""
    rows = modules(uri)
    width = len(rows) + 2 * QUIET_ZONE
    light = bytes(len(rows))
    padded = [light] * QUIET_ZONE + rows + [light] * (QUIET_ZONE + len(rows) % 2)
    margin = 8 * QUIET_ZONE  # bits: shifting left adds the right quiet zone, to_bytes(width) the left one
    lines = []
    for top, bottom in zip(padded[::2], padded[1::2], strict=True):
        # 2 * top + bottom per column, whole rows at a time (no carries: each value is 0..3).
        pair = ((int.from_bytes(top, "big") * 2 + int.from_bytes(bottom, "big")) << margin).to_bytes(width, "big")
        lines.append(f"{_COLOURS}{pair.decode('latin-1').translate(_GLYPHS)}{_RESET}\n")
    return "".join(lines)


def manual_key(seed: str) -> str:
    """The seed in groups of four, as apps show it for typing in by hand."""
    return " ".join(seed[i : i + 4] for i in range(0, len(seed), 4))
