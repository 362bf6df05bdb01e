"""Hardening data: images, sshd crypto and limits, kept as data with a version.

Templates, the policy pack and the tests all read this one module. An algorithm is listed with the
OpenSSH release that introduced it, so a server only gets names its sshd knows (an unknown name makes
``sshd -t`` fail and would lock the server). Reference: ssh-audit's hardening guides and dev-sec
ssh-baseline; ``ssh-audit`` must report no "fail" item against a server with these lists, and paramiko
(which lacks sntrup761) and current OpenSSH clients must still connect.
"""

from __future__ import annotations

VERSION = "2026.12.1"

Version = tuple[int, int]

# Hetzner image -> OpenSSH version its sshd ships (what the algorithm lists must not exceed).
# OpenSSH 10.0 removed DSA (never listed here) and took finite-field DH out of sshd's DEFAULT KEX
# list only: the groups stay in kex-names.c through 10.2, so naming them explicitly still works.
# 10.1 removed the experimental XMSS keys and only added client warnings (WarnWeakCrypto); 10.2 is a
# bug-fix release. Every name below is still in 10.2's kex-names.c, cipher.c, mac.c and sshkey.c.
IMAGES: dict[str, Version] = {
    "debian-12": (9, 2),
    "debian-13": (10, 0),
    "ubuntu-22.04": (8, 9),
    "ubuntu-24.04": (9, 6),
    "ubuntu-26.04": (10, 2),  # ships sudo-rs as sudo: the NOPASSWD sudoers line works as before
}

# PerSourcePenalties (and PerSourcePenaltyExemptList) appeared in OpenSSH 9.8.
PER_SOURCE_PENALTIES: Version = (9, 8)

# The PAM module's package: the same name on every supported image.
PAM_PACKAGE = {image: "libpam-google-authenticator" for image in IMAGES}

# Key exchange, strongest first: post-quantum hybrids, then X25519, then large fixed DH groups.
# (No NIST ECDH, no group-exchange: ssh-audit fails the first and cannot vouch for /etc/ssh/moduli.)
KEX: tuple[tuple[str, Version], ...] = (
    ("mlkem768x25519-sha256", (9, 9)),
    ("sntrup761x25519-sha512@openssh.com", (8, 5)),
    ("curve25519-sha256", (7, 4)),
    ("curve25519-sha256@libssh.org", (6, 5)),
    ("diffie-hellman-group18-sha512", (7, 3)),
    ("diffie-hellman-group16-sha512", (7, 3)),
)

# AEAD ciphers first; CTR modes stay for older clients (paired with the ETM MACs below).
CIPHERS: tuple[tuple[str, Version], ...] = (
    ("chacha20-poly1305@openssh.com", (6, 5)),
    ("aes256-gcm@openssh.com", (6, 2)),
    ("aes128-gcm@openssh.com", (6, 2)),
    ("aes256-ctr", (5, 2)),
    ("aes192-ctr", (5, 2)),
    ("aes128-ctr", (5, 2)),
)

# Encrypt-then-MAC only, SHA-2 or UMAC-128: no SHA-1, no 64-bit tags.
MACS: tuple[tuple[str, Version], ...] = (
    ("hmac-sha2-512-etm@openssh.com", (6, 2)),
    ("hmac-sha2-256-etm@openssh.com", (6, 2)),
    ("umac-128-etm@openssh.com", (6, 2)),
)

# The server presents only the pinned Ed25519 host key.
HOST_KEY_ALGORITHMS: tuple[tuple[str, Version], ...] = (
    ("ssh-ed25519", (6, 5)),
    ("ssh-ed25519-cert-v01@openssh.com", (6, 5)),
)

# User keys sshd accepts: the types cloudinit.model lets admins configure (RSA only with SHA-2).
PUBKEY_ALGORITHMS: tuple[tuple[str, Version], ...] = (
    ("ssh-ed25519", (6, 5)),
    ("sk-ssh-ed25519@openssh.com", (8, 2)),
    ("ecdsa-sha2-nistp256", (5, 7)),
    ("ecdsa-sha2-nistp384", (5, 7)),
    ("ecdsa-sha2-nistp521", (5, 7)),
    ("sk-ecdsa-sha2-nistp256@openssh.com", (8, 2)),
    ("rsa-sha2-512", (7, 2)),
    ("rsa-sha2-256", (7, 2)),
)

# Limits. MaxAuthTries counts every key an agent offers before the right one, plus the TOTP round:
# 3 (a common hardening value) locks out anyone whose agent holds a few keys.
MAX_AUTH_TRIES = 8
LOGIN_GRACE_TIME = 60  # seconds to type the code from a phone
MAX_STARTUPS = "10:30:60"
CLIENT_ALIVE_INTERVAL = 300
CLIENT_ALIVE_COUNT_MAX = 3

# google_authenticator options: 3 logins per 30 s, +-1 step of clock skew, no code used twice.
TOTP_RATE_LIMIT = (3, 30)
TOTP_WINDOW_SIZE = 3
SEED_BYTES = 20  # 160 bits, RFC 4226's recommended HMAC-SHA1 key length

# Outbound NTP servers in Hetzner's network (TOTP needs a synced clock); the pool is the fallback.
NTP_SERVERS = ("ntp1.hetzner.de", "ntp2.hetzner.com", "ntp3.hetzner.net")
NTP_POOLS = ("2.debian.pool.ntp.org",)


def supported(algorithms: tuple[tuple[str, Version], ...], image: str) -> tuple[str, ...]:
    """The names from ``algorithms`` that the image's sshd knows, in order of preference."""
    have = IMAGES[image]
    return tuple(name for name, since in algorithms if since <= have)


def crypto_for(image: str) -> dict[str, str]:
    """sshd directive -> comma list for the image."""
    return {
        "KexAlgorithms": ",".join(supported(KEX, image)),
        "Ciphers": ",".join(supported(CIPHERS, image)),
        "MACs": ",".join(supported(MACS, image)),
        "HostKeyAlgorithms": ",".join(supported(HOST_KEY_ALGORITHMS, image)),
        "PubkeyAcceptedAlgorithms": ",".join(supported(PUBKEY_ALGORITHMS, image)),
    }
