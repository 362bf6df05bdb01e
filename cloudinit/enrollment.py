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
QUIET_ZONE = 2  # modules of light border in the terminal (a terminal's own margin adds to it)
# Half-block characters for a pair of module rows, (top dark, bottom dark) -> glyph. A block prints in
# the terminal's foreground colour, which is light on the usual dark background: light modules are
# drawn, dark ones left blank.
_GLYPHS = {(False, False): "\u2588", (False, True): "\u2580", (True, False): "\u2584", (True, True): " "}


def account(admin: str, server: str) -> str:
    return f"{admin}@{server}"


def otpauth_uri(seed: str, issuer: str, admin: str, server: str) -> str:
    label = quote(f"{issuer}:{account(admin, server)}", safe=":@")
    query = urlencode({"secret": seed, "issuer": issuer, "algorithm": ALGORITHM, "digits": DIGITS, "period": PERIOD})
    return f"otpauth://totp/{label}?{query}"


def qr(uri: str) -> segno.QRCode:
    """The QR code for image files (PNG, SVG). Error correction M survives a phone camera."""
    return segno.make_qr(uri, error="m")


def modules(uri: str) -> list[list[bool]]:
    """The QR code's module matrix (True = dark), without quiet zone.

    Encoded by zxing-cpp (compiled): the program makes a terminal QR for every admin on every server
    on each run, and segno's pure-Python encoder was the largest cost of a 100-server run (bench/)."""
    symbol = zxingcpp.create_barcode(uri, zxingcpp.BarcodeFormat.QRCode, ec_level="M")
    pixels = memoryview(symbol.to_image(scale=1, add_quiet_zones=False))  # type: ignore[arg-type]  # buffer protocol, untyped
    size = pixels.shape[1] if pixels.shape else 0
    flat = pixels.tobytes()
    return [[flat[i] < 128 for i in range(row, row + size)] for row in range(0, len(flat), size)]


def terminal_qr(uri: str) -> str:
    """The QR as text made of half-block characters: prints in any UTF-8 terminal, no colours needed."""
    matrix = modules(uri)
    width = len(matrix) + 2 * QUIET_ZONE
    light = [False] * width
    margin = [False] * QUIET_ZONE
    rows = [light] * QUIET_ZONE + [margin + row + margin for row in matrix] + [light] * (QUIET_ZONE + len(matrix) % 2)
    pairs = zip(rows[::2], rows[1::2], strict=True)
    return "".join("".join(map(_GLYPHS.__getitem__, zip(top, bottom, strict=True))) + "\n" for top, bottom in pairs)


def manual_key(seed: str) -> str:
    """The seed in groups of four, as apps show it for typing in by hand."""
    return " ".join(seed[i : i + 4] for i in range(0, len(seed), 4))
