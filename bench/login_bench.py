"""4. One key + TOTP login against a real sshd on loopback, configured by rendered user-data.

Reuses tests/sshd_harness.py (the host's sshd in a private mount namespace; needs root). The TOTP file
says RATE_LIMIT 3 30 (successes count) and DISALLOW_REUSE, and the window is 3 steps, so each admin
logs in at most three times, each with a different code of the current window (``totp.at(now - 30)``,
``at(now)``, ``at(now + 30)``); many admins on one server give many timed logins without waiting.
"""

from __future__ import annotations

import os
import shutil
import time

from bench.report import Row, Section, median

BAR_S = 0.25
ADMINS = 10  # 10 admins x 3 logins; 10 admins still fit the user-data limit
LOGINS_PER_ADMIN = 3  # RATE_LIMIT 3 30


def unavailable(reason: str) -> Section:
    return Section("Key + TOTP login (loopback sshd)", [Row("median per login", "not available here", f"<= {BAR_S:g} s")],
                   [reason], available=False)


def run() -> Section:
    if os.geteuid() != 0:
        return unavailable("Needs root (the harness bind-mounts the rendered files in a private mount namespace).")
    if not shutil.which("sshd") and not os.path.exists("/usr/sbin/sshd"):
        return unavailable("Needs openssh-server and libpam-google-authenticator (`make deps`).")
    try:
        from tests import sshd_harness
    except ImportError as exc:
        return unavailable(f"tests/sshd_harness.py is not importable yet ({exc}).")
    import pyotp

    from cloudinit import render
    from cloudinit.model import Admin, Server
    from cloudinit.secrets import fresh_admin_secrets, fresh_key_pair

    keys, people = {}, []
    for i in range(ADMINS):
        name = f"admin{i}"
        keys[name], public = sshd_harness.new_key(f"{name}@laptop")
        people.append(Admin(name=name, ssh_keys=(public,)))
    server = Server(name="bench-1", admins=tuple(people), allowed_cidrs=("127.0.0.0/8",), ssh_port=sshd_harness.free_port())
    secrets = {name: fresh_admin_secrets(server.backup_codes) for name in keys}
    signer = fresh_key_pair()
    user_data = render.render_user_data(server, secrets, fresh_key_pair(), signer.public_openssh)

    times: list[float] = []
    refused: list[str] = []
    used: dict[str, set[str]] = {name: set() for name in keys}
    with sshd_harness.running_server(user_data) as sshd:
        for _round in range(LOGINS_PER_ADMIN):
            for name, key in keys.items():
                totp = pyotp.TOTP(secrets[name].seed)
                now = time.time()
                code = next(c for c in (totp.at(now - 30), totp.at(now), totp.at(now + 30)) if c not in used[name])
                used[name].add(code)
                start = time.perf_counter()
                result = sshd.login(name, key=key, code=code)
                took = time.perf_counter() - start
                if result.accepted:
                    times.append(took)
                else:
                    refused.append(f"{name}: {result}")
    if not times:
        return unavailable("No login was accepted: " + "; ".join(refused[:3]))
    took = median(times)
    section = Section("Key + TOTP login (loopback sshd)")
    section.rows = [Row("median per login", f"{took * 1000:.0f} ms", f"<= {BAR_S * 1000:.0f} ms", took <= BAR_S)]
    section.detail = [
        "tests/sshd_harness.py: the host's sshd with the rendered drop-in, PAM file, host key and TOTP files,",
        f"on 127.0.0.1. {ADMINS} admins x {LOGINS_PER_ADMIN} logins (RATE_LIMIT 3 30 counts successes; with",
        "DISALLOW_REUSE each login uses another code of the 3-step window: `totp.at(now - 30)`, `at(now)`,",
        "`at(now + 30)`). One login = TCP connect, key exchange, host key, publickey (partial success),",
        "keyboard-interactive with the code through PAM (paramiko client).",
        f"Accepted {len(times)}, refused {len(refused)}; min {min(times) * 1000:.0f} ms, "
        f"max {max(times) * 1000:.0f} ms.",
        *(f"- refused: {r}" for r in refused[:3]),
    ]
    return section
