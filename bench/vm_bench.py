"""6. First boot in the local VM (lab/): image build, boot to cloud-init done, cloud-init's stages.

Reuses lab.image (cached image builder) and lab.vm.VM (qemu with TCG, NoCloud seed, serial log).
Stage times come from cloud-init's own console lines ("running 'init' ... Up N seconds", "finished
at ... Up N seconds"), i.e. guest uptime as cloud-init measured it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time

from bench.report import Row, Section, median, table

BOOT_BAR_S = 60.0
RELEASE = "debian-12"
_STAGE = re.compile(r"Cloud-init v\. \S+ (?:running '([a-z:-]+)'|(finished)) at .*?Up ([0-9.]+) seconds")
STAGES = ("init-local", "init", "modules:config", "modules:final", "finished")
# init-local only finds the seed; from 'init' on cloud-init applies the user-data (write_files,
# users, ntp, packages, runcmd).
USER_DATA_STAGES = ("init", "modules:config", "modules:final")


def stage_uptimes(serial: str) -> dict[str, float]:
    """Stage -> guest uptime (s) at which cloud-init started it ('finished': when it ended)."""
    out: dict[str, float] = {}
    for match in _STAGE.finditer(serial):
        out.setdefault(match.group(1) or match.group(2), float(match.group(3)))
    return out


def unavailable(reason: str) -> Section:
    return Section("First boot in the local VM", [Row("boot to cloud-init done", "not available here", f"<= {BOOT_BAR_S:g} s")],
                   [reason], available=False)


def other_qemu() -> bool:
    """Another qemu (someone's VM tests) shares the CPUs: boot figures would be inflated."""
    return subprocess.run(["pgrep", "-f", "^qemu-system-"], capture_output=True, check=False).returncode == 0


def wait_for_idle(limit: float) -> bool:
    """Wait (up to ``limit`` seconds) until no other qemu runs; True if none does."""
    deadline = time.monotonic() + limit
    while other_qemu():
        if time.monotonic() >= deadline:
            return False
        time.sleep(2)
    return True


def run(boots: int, build_image: bool, wait_idle: float) -> Section:
    try:
        from lab import image as lab_image
        from lab import stack as lab_stack
        from lab.vm import VM
    except ImportError as exc:
        return unavailable(f"lab/ is not importable yet ({exc}).")
    if not shutil.which("qemu-system-x86_64"):
        return unavailable("Needs qemu-system-x86 (`make deps`).")
    notes: list[str] = []
    rows: list[Row] = []
    if build_image:
        with tempfile.TemporaryDirectory(prefix="totp-vps-bench-image-") as cache:
            previous = os.environ.get("TOTP_VPS_LAB_CACHE")
            os.environ["TOTP_VPS_LAB_CACHE"] = cache
            try:
                start = time.perf_counter()
                lab_image.ensure(RELEASE, log=False)
                rows.append(Row("image build (fresh cache)", f"{time.perf_counter() - start:.0f} s"))
            finally:
                if previous is None:
                    os.environ.pop("TOTP_VPS_LAB_CACHE", None)
                else:
                    os.environ["TOTP_VPS_LAB_CACHE"] = previous
    image = lab_image.cached(RELEASE)
    if not image.complete:
        return unavailable(f"No cached {RELEASE} lab image: build it once with `make lab` (or `python -m bench --build-image`).")
    if not build_image:
        rows.append(Row("image build", "not measured (cached image used)"))
        notes.append("Image build: run `python -m bench --only vm --build-image` to time a build into a fresh cache.")
    if not wait_for_idle(wait_idle):
        notes.append(f"Note: another qemu was still running after waiting {wait_idle:.0f} s: the CPUs were shared and the "
                     "boot figures are high.")

    server = lab_stack.lab_config(lab_stack.load_document())
    user_data = lab_stack.render_server(server).user_data
    ready: list[float] = []
    stages: list[dict[str, float]] = []
    statuses: list[str] = []
    for _ in range(boots):
        with VM(image, user_data, guest_port=server.ssh_port, hostname=server.name) as vm:
            report = vm.wait_report(timeout=600)
            ready.append(float(vm.ready_after or 0.0))
            stages.append(stage_uptimes(vm.serial()))
            statuses.append(report.status)
        if other_qemu():
            notes.append("Note: another qemu started during a boot: the CPUs were shared and the figures are high.")
    boot = median(ready)
    per_stage = {s: median([st[s] for st in stages if s in st]) for s in STAGES if all(s in st for st in stages)}
    if len(per_stage) == len(STAGES):
        own = per_stage["finished"] - per_stage["init"]
        rows.append(Row("boot to cloud-init done (cached image)", f"{boot:.1f} s", f"<= {BOOT_BAR_S:g} s", boot <= BOOT_BAR_S))
        rows.append(Row("share in the user-data's stages (init .. final)", f"{own:.1f} s = {own / boot:.0%}"))
        durations = [
            (stage, f"{per_stage[stage]:.1f}", f"{per_stage[nxt] - per_stage[stage]:.1f}")
            for stage, nxt in zip(STAGES, STAGES[1:], strict=False)
        ] + [("finished", f"{per_stage['finished']:.1f}", "")]
    else:
        rows.append(Row("boot to cloud-init done (cached image)", f"{boot:.1f} s", f"<= {BOOT_BAR_S:g} s", boot <= BOOT_BAR_S))
        durations = []
        notes.append(f"cloud-init's stage lines were not all on the serial console: {sorted(per_stage)}")
    section = Section("First boot in the local VM", rows)
    section.detail = [
        f"lab.vm.VM: qemu `-accel tcg`, 2 vCPUs, 1 GiB, the cached {RELEASE} lab image, NoCloud seed with the",
        "example stack's first server rendered with fresh secrets. Boot = qemu start to the guest's report",
        f"(printed after cloud-init's final stage), median of {boots}; cloud-init status: {', '.join(statuses)}.",
        "Stages: guest uptime when cloud-init started each stage (its own console lines; `cloud-init",
        "analyze` reads the same events). The user-data's own stages are init (write_files, users),",
        "modules:config and modules:final; before them: firmware-less kernel boot, systemd, init-local.",
        "",
        *(table(("stage", "starts at (uptime s)", "lasts s"), durations) if durations else []),
        *([""] + notes if notes else []),
    ]
    return section
