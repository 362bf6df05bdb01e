"""Ask the installed PAM stacks themselves, through libpam: a probe account must need the code.

The static judge of the PAM grammar runs where the desired state is made and signed (the policy pack,
``vpsctl sync``, ``vpsctl verify``); on the server the agent asks the real thing. For the probe account
``totp-vps-probe`` (never allowed to log in: not in AllowUsers, no key, no shell) with a fresh secret, the
sshd stack (and sudo's, where it uses the code) must refuse a wrong code, accept the right one, refuse
when the account has no secret file (no ``nullok``), and prompt for nothing but the code (no password).
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import functools
import hashlib
import hmac
import secrets
import struct
import time
from collections.abc import Callable

PROBE = "totp-vps-probe"
ECHO_OFF, ECHO_ON = 1, 2


class _Message(ctypes.Structure):
    _fields_ = [("msg_style", ctypes.c_int), ("msg", ctypes.c_char_p)]


class _Response(ctypes.Structure):
    _fields_ = [("resp", ctypes.c_void_p), ("resp_retcode", ctypes.c_int)]


_CONV = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.POINTER(_Message)),
                         ctypes.POINTER(ctypes.POINTER(_Response)), ctypes.c_void_p)


class _Conv(ctypes.Structure):
    _fields_ = [("conv", _CONV), ("appdata_ptr", ctypes.c_void_p)]


@functools.cache
def _libraries() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    """libpam and libc, looked up once per process: find_library runs `ldconfig -p` at every call."""
    libpam = ctypes.CDLL(ctypes.util.find_library("pam") or "libpam.so.0")
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.calloc.restype = libc.strdup.restype = ctypes.c_void_p  # PAM frees what the conversation returns
    libc.strdup.argtypes = [ctypes.c_char_p]
    return libpam, libc


def authenticate(service: str, user: str, answer: str) -> tuple[bool, list[str]]:
    """(whether pam_authenticate succeeded, every prompt shown), answering each prompt with ``answer``."""
    libpam, libc = _libraries()
    prompts: list[str] = []

    def conv(count: int, messages: ctypes.Array, responses: ctypes.Array, _data: int) -> int:
        block = ctypes.cast(libc.calloc(max(count, 1), ctypes.sizeof(_Response)), ctypes.POINTER(_Response))
        for i in range(count):
            message = messages[i].contents
            if message.msg_style in (ECHO_OFF, ECHO_ON):
                prompts.append((message.msg or b"").decode(errors="replace"))
                block[i].resp = libc.strdup(answer.encode())
        responses[0] = block
        return 0

    callback = _CONV(conv)  # kept referenced while PAM may call it
    handle = ctypes.c_void_p()
    if libpam.pam_start(service.encode(), user.encode(), ctypes.byref(_Conv(callback, None)), ctypes.byref(handle)):
        return False, prompts
    result = libpam.pam_authenticate(handle, 0)
    libpam.pam_end(handle, result)
    return result == 0, prompts


def code(seed: str, at: float) -> str:
    """RFC 6238 TOTP (SHA1, 6 digits, 30 s), as pam_google_authenticator checks it."""
    digest = hmac.new(base64.b32decode(seed + "=" * (-len(seed) % 8)), struct.pack(">Q", int(at // 30)), hashlib.sha1).digest()
    offset = digest[-1] & 15
    return f"{(int.from_bytes(digest[offset : offset + 4], 'big') & 0x7FFFFFFF) % 1_000_000:06d}"


def check(service: str, secret_file: str, write: Callable[[str, str], None], remove: Callable[[str], None]) -> str | None:
    """Why ``service``'s auth stack would let the probe in without the code (or nobody in at all), or None.
    ``write(path, text)`` puts the probe's secret file in place (owner and mode as the module wants)."""
    seed = base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=")
    now = time.time()
    valid = {code(seed, now + 30 * step) for step in range(-4, 5)}
    wrong = next(c for c in (f"{secrets.randbelow(10 ** 6):06d}" for _ in range(100)) if c not in valid)
    # One file per attempt: the module keeps rate-limit and reuse state in it.
    verdicts = []
    for attempt, present in ((wrong, True), (code(seed, now), True), (code(seed, now), False)):
        remove(secret_file)
        if present:
            write(secret_file, f'{seed}\n" RATE_LIMIT 9 30\n" WINDOW_SIZE 3\n" DISALLOW_REUSE\n" TOTP_AUTH\n')
        verdicts.append(authenticate(service, PROBE, attempt))
    remove(secret_file)
    asked = [p for _ok, prompts in verdicts for p in prompts if "code" not in p.lower()]
    if asked:
        return f"it prompts for more than the code: {asked[0]!r}"
    if verdicts[0][0]:
        return "a WRONG code is accepted"
    if verdicts[2][0]:
        return "an account without a secret file is let in (nullok?)"
    if not verdicts[1][0]:
        return "the right code is refused: nobody could log in"
    return None
