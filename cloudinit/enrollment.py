"""What an admin needs to enroll an authenticator app: the otpauth URI, a QR code, the manual key.

The URI follows Google's Key URI Format, which Google Authenticator, Microsoft Authenticator, Authy,
1Password and Aegis all read: label ``Issuer:account``, plus the ``issuer`` parameter, and the
algorithm, digits and period spelled out (SHA1, 6, 30 s: what pam_google_authenticator checks).
"""

from __future__ import annotations

import io
from urllib.parse import quote, urlencode

import segno

ALGORITHM = "SHA1"
DIGITS = 6
PERIOD = 30
MASK = 2  # the pattern segno's own scoring picked for a typical URI


def account(admin: str, server: str) -> str:
    return f"{admin}@{server}"


def otpauth_uri(seed: str, issuer: str, admin: str, server: str) -> str:
    label = quote(f"{issuer}:{account(admin, server)}", safe=":@")
    query = urlencode({"secret": seed, "issuer": issuer, "algorithm": ALGORITHM, "digits": DIGITS, "period": PERIOD})
    return f"otpauth://totp/{label}?{query}"


def qr(uri: str) -> segno.QRCode:
    # Error correction M survives a phone camera on a dim terminal; segno picks the smallest version.
    # A fixed mask: scoring all eight (the default) made QR codes 60% of a 100-server program run, and
    # every mask is standard, decodes with zbar, and scans (measured; see bench/).
    return segno.make_qr(uri, error="m", mask=MASK)


def terminal_qr(uri: str) -> str:
    """The QR as text made of half-block characters: prints in any UTF-8 terminal, no colours needed."""
    out = io.StringIO()
    qr(uri).terminal(out=out, compact=True, border=2)
    return out.getvalue()


def manual_key(seed: str) -> str:
    """The seed in groups of four, as apps show it for typing in by hand."""
    return " ".join(seed[i : i + 4] for i in range(0, len(seed), 4))
