"""2. Rendering one server's user-data: time per render and size by number of admins."""

from __future__ import annotations

import time

from bench.report import Row, Section, median, table

RENDER_BAR_MS = 5.0
SIZE_BAR = 16 * 1024
ADMIN_COUNTS = (1, 3, 10)


def user_data(admins: int) -> str:
    from cloudinit import render, stackconfig
    from cloudinit.secrets import fresh_admin_secrets, fresh_key_pair
    from tests.configs import fleet

    server = stackconfig.parse(fleet(1, admins)).servers[0]
    secrets = {name: fresh_admin_secrets(server.backup_codes) for name in server.admin_names}
    return render.render_user_data(server, secrets, fresh_key_pair(), fresh_key_pair().public_openssh)


def run(renders: int) -> tuple[Section, int]:
    """The section, and the 3-admin user-data size (the baseline program hands servers that many bytes)."""
    from cloudinit import render, stackconfig
    from cloudinit.secrets import fresh_admin_secrets, fresh_key_pair
    from tests.configs import fleet

    server = stackconfig.parse(fleet(1, 3)).servers[0]
    # Fresh secrets for every render (made before the clock starts), as every server of a stack has its own: the
    # packed state then differs every time, as it does between servers.
    secrets = [{name: fresh_admin_secrets(server.backup_codes) for name in server.admin_names} for _ in range(renders + 1)]
    host_key = fresh_key_pair()
    render.render_user_data(server, secrets[-1], host_key, host_key.public_openssh)  # templates load once per process
    times = []
    for each in secrets[:renders]:
        start = time.perf_counter()
        render.render_user_data(server, each, host_key, host_key.public_openssh)
        times.append(time.perf_counter() - start)
    per_render = median(times) * 1000
    sizes = {n: len(user_data(n).encode()) for n in ADMIN_COUNTS}

    section = Section("Rendering one server's user-data")
    section.rows = [
        Row("median per render (3 admins)", f"{per_render:.2f} ms", f"<= {RENDER_BAR_MS:g} ms", per_render <= RENDER_BAR_MS),
        Row("size, 1 / 3 / 10 admins", " / ".join(f"{sizes[n] / 1024:.1f} KiB" for n in ADMIN_COUNTS),
            f"10 admins <= {SIZE_BAR // 1024} KiB", sizes[10] <= SIZE_BAR),
    ]
    section.detail = [
        f"`render.render_user_data` for one server with 3 admins, median of {renders} renders after one",
        "warm-up render (the templates load once per process). Sizes: UTF-8 bytes of the rendered",
        "user-data, one key per admin, 5 backup codes each (the defaults); Hetzner's limit is 32 KiB.",
        "",
        *table(("admins", "bytes", "KiB", "share of 32 KiB"),
               [(n, sizes[n], f"{sizes[n] / 1024:.1f}", f"{sizes[n] / 32768:.0%}") for n in ADMIN_COUNTS]),
    ]
    return section, sizes[3]
