"""Sign a desired state with the stack's Ed25519 key, in OpenSSH's SSHSIG format (PROTOCOL.sshsig), which
the server's agent checks with ``ssh-keygen -Y verify``: no crypto of our own on the server."""

from __future__ import annotations

import base64
import hashlib
import struct

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

MAGIC = b"SSHSIG"
VERSION = 1
HASH = "sha512"


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def sign(message: bytes, private_openssh: str, namespace: str) -> str:
    """The armored signature ``ssh-keygen -Y sign -n NAMESPACE`` would make over ``message``."""
    key = serialization.load_ssh_private_key(private_openssh.encode(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError("the signing key is not an Ed25519 private key")
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    public_blob = _string(b"ssh-ed25519") + _string(public)
    signed = MAGIC + _string(namespace.encode()) + _string(b"") + _string(HASH.encode()) + \
        _string(hashlib.sha512(message).digest())  # fmt: skip
    signature = _string(b"ssh-ed25519") + _string(key.sign(signed))
    blob = MAGIC + struct.pack(">I", VERSION) + _string(public_blob) + _string(namespace.encode()) + _string(b"") + \
        _string(HASH.encode()) + _string(signature)  # fmt: skip
    text = base64.b64encode(blob).decode()
    body = "\n".join(text[i : i + 70] for i in range(0, len(text), 70))
    return f"-----BEGIN SSH SIGNATURE-----\n{body}\n-----END SSH SIGNATURE-----\n"
