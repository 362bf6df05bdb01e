"""Debian guest images for the lab, built from Debian packages only and cached outside the repo.

One image per release: a raw ext4 root file system (no partitions, no boot loader) plus the kernel and
initrd copied out of it, so qemu boots it with ``-kernel``. The cache key is a hash of the whole build
recipe (packages, guest files, steps): change any of it and the next run builds a new image. Builds go
to a temporary directory that is renamed into place, under a lock, so an interrupted or concurrent build
never leaves a half image behind. A variant is a release's image with a few more steps run in a copy of
its root file system (seconds, no package download); its recipe includes its base's hash.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

RECIPE_VERSION = 1
GUEST_DIR = Path(__file__).parent / "guest"

# Hetzner image name -> Debian suite.
RELEASES = {"debian-12": "bookworm", "debian-13": "trixie"}

# Everything the rendered user-data needs is installed up front: the guest has no network, so
# cloud-init's package step only finds packages that are already there (libpam-google-authenticator,
# nftables) and its ntp module (chrony) configures an installed client.
PACKAGES = (
    "systemd-sysv", "udev", "dbus", "cloud-init", "openssh-server", "libpam-google-authenticator", "sudo",
    "linux-image-cloud-amd64", "initramfs-tools", "iproute2", "netbase", "locales", "chrony", "nftables",
    "e2fsprogs",
)
ROOT_SIZE = "2G"

# Files copied into the image: (file in lab/guest, path in the guest, mode).
GUEST_FILES = (
    ("totp-vps-lab-report", "/usr/local/sbin/totp-vps-lab-report", 0o755),
    ("totp-vps-lab-report.service", "/etc/systemd/system/totp-vps-lab-report.service", 0o644),
    ("90-totp-vps-lab.cfg", "/etc/cloud/cloud.cfg.d/90-totp-vps-lab.cfg", 0o644),
    ("20-lab.network", "/etc/systemd/network/20-lab.network", 0o644),
)

# Steps run in the finished root file system (``chroot ROOT ...``), in order.
CHROOT_STEPS = (
    ("sh", "-c", "echo 'en_US.UTF-8 UTF-8' > /etc/locale.gen && locale-gen && echo LANG=en_US.UTF-8 > /etc/default/locale"),
    ("systemctl", "enable", "systemd-networkd.service", "totp-vps-lab-report.service"),
    # logind turns qemu's ACPI power button (monitor `system_powerdown`) into a clean power-off; minbase
    # only starts it on demand.
    ("systemctl", "add-wants", "multi-user.target", "systemd-logind.service"),
    # No apt sources, no package lists: the guest must not need (or try) the network.
    ("sh", "-c", "rm -rf /etc/apt/sources.list /etc/apt/sources.list.d/* /var/lib/apt/lists/* /var/cache/apt/*.bin"),
)


# Variant name -> (the release it derives from, steps run in a copy of that release's root, in order).
VARIANTS = {
    # sshd started through ssh.socket, as Ubuntu ships it (22.10+): the socket holds the port, not sshd_config.
    "debian-13-socket": ("debian-13", (("systemctl", "disable", "ssh.service"), ("systemctl", "enable", "ssh.socket"))),
}


class ImageError(RuntimeError):
    """An image could not be built."""


@dataclass(frozen=True)
class Image:
    """A built guest image in the cache."""

    release: str
    """Lab image name: a Hetzner image name (debian-12, debian-13) or a variant of one (VARIANTS)."""
    directory: Path
    """Cache directory holding the files below."""

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def root(self) -> Path:
        return self.directory / "root.raw"

    @property
    def complete(self) -> bool:
        return all(p.is_file() for p in (self.kernel, self.initrd, self.root, self.directory / "recipe.json"))


def mirror() -> str | None:
    """An optional Debian mirror URL (TOTP_VPS_LAB_MIRROR); mmdebstrap's default otherwise."""
    return os.environ.get("TOTP_VPS_LAB_MIRROR") or None


def recipe(release: str) -> dict[str, object]:
    """Everything that determines the image's content (its hash is the cache key)."""
    if release in VARIANTS:
        base, steps = VARIANTS[release]
        return {"version": RECIPE_VERSION, "base": f"{base}-{recipe_hash(base)}", "steps": [list(s) for s in steps]}
    if release not in RELEASES:
        raise ImageError(f"unknown lab release {release!r}; known: {sorted(RELEASES)} and variants {sorted(VARIANTS)}")
    return {
        "version": RECIPE_VERSION,
        "suite": RELEASES[release],
        "variant": "minbase",
        "packages": sorted(PACKAGES),
        "mirror": mirror(),
        "files": {dest: [(GUEST_DIR / src).read_text(), mode] for src, dest, mode in GUEST_FILES},
        "steps": [list(s) for s in CHROOT_STEPS],
        "size": ROOT_SIZE,
    }


def recipe_hash(release: str) -> str:
    return hashlib.sha256(json.dumps(recipe(release), sort_keys=True).encode()).hexdigest()[:16]


def cache_root() -> Path:
    """TOTP_VPS_LAB_CACHE, else $XDG_CACHE_HOME/totp-vps-lab, else ~/.cache/totp-vps-lab."""
    explicit = os.environ.get("TOTP_VPS_LAB_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "totp-vps-lab"


def cached(release: str) -> Image:
    """The image for ``release`` in the cache (it may not be built yet)."""
    return Image(release, cache_root() / f"{release}-{recipe_hash(release)}")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # blocks while another process builds the same image
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure(release: str, log: bool = True) -> Image:
    """The cached image for ``release``, built first if it is missing."""
    image = cached(release)
    if image.complete:
        return image
    with _locked(image.directory.with_name(image.directory.name + ".lock")):
        if image.complete:  # built by another process while we waited
            return image
        started = time.monotonic()
        if log:
            print(f"lab: building the {release} image into {image.directory} (once per recipe)", file=sys.stderr, flush=True)
        if release in VARIANTS:
            _derive(release, ensure(VARIANTS[release][0], log), image.directory)
        else:
            _build(release, image.directory)
        if log:
            print(f"lab: {release} image built in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return image


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise ImageError(f"{what} failed (exit {done.returncode}):\n{tail}")


def _build(release: str, target: Path) -> None:
    for tool in ("mmdebstrap", "mkfs.ext4"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise ImageError(f"{tool} is missing (`make deps` installs it as root)")
    if os.geteuid() != 0:
        raise ImageError("building a lab image needs root (mmdebstrap, mkfs.ext4 -d with owners)")
    spec = recipe(release)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        rootfs = work / "rootfs"
        argv = ["mmdebstrap", "--variant=minbase", "--quiet", "--include=" + ",".join(PACKAGES),
                # No services start inside the build (policy-rc.d), whatever the packages' scripts want.
                "--customize-hook=true", str(spec["suite"]), str(rootfs)]
        if spec["mirror"]:
            argv.append(str(spec["mirror"]))
        _run(argv, f"mmdebstrap {spec['suite']}")
        for src, dest, mode in GUEST_FILES:
            path = rootfs / dest.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(GUEST_DIR / src, path)
            path.chmod(mode)
        for step in CHROOT_STEPS:
            _run(["chroot", str(rootfs), *step], f"image step {' '.join(step)[:60]}")
        kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
        initrds = sorted((rootfs / "boot").glob("initrd.img-*"))
        if len(kernels) != 1 or len(initrds) != 1:
            raise ImageError(f"want one kernel and one initrd in /boot, found {kernels} {initrds}")
        shutil.copyfile(kernels[0], work / "vmlinuz")
        shutil.copyfile(initrds[0], work / "initrd.img")
        _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(rootfs), str(work / "root.raw"), ROOT_SIZE], "mkfs.ext4 -d")
        shutil.rmtree(rootfs)
        (work / "recipe.json").write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
        if target.exists():  # an incomplete leftover from an older interrupted build
            shutil.rmtree(target)
        work.rename(target)
        _prune(release, keep=target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def _derive(variant: str, base: Image, target: Path) -> None:
    """The variant's image: its base's files, and its steps run in the copied root file system."""
    if os.geteuid() != 0:
        raise ImageError("deriving a lab image needs root (mount, chroot)")
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    mounted = work / "mnt"
    try:
        for name in ("vmlinuz", "initrd.img"):
            shutil.copyfile(base.directory / name, work / name)
        _run(["cp", "--sparse=always", str(base.root), str(work / "root.raw")], "copying the base image")
        mounted.mkdir()
        _run(["mount", "-o", "loop", str(work / "root.raw"), str(mounted)], "mounting the image copy")
        try:
            for step in VARIANTS[variant][1]:
                _run(["chroot", str(mounted), *step], f"image step {' '.join(step)[:60]}")
        finally:
            _run(["umount", str(mounted)], "unmounting the image copy")
        mounted.rmdir()
        (work / "recipe.json").write_text(json.dumps(recipe(variant), indent=2, sort_keys=True) + "\n")
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
        _prune(variant, keep=target)
    finally:
        if work.exists() and not os.path.ismount(mounted):
            shutil.rmtree(work, ignore_errors=True)


def _prune(release: str, keep: Path) -> None:
    """Remove images of ``release`` built from older recipes (a qemu still using one keeps its open file).
    Only ``<release>-<hash>``: debian-13's older images, never debian-13-socket's."""
    for old in keep.parent.glob(f"{release}-*"):
        older = re.fullmatch(r"[0-9a-f]{16}", old.name[len(release) + 1 :])
        if old != keep and older and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str]) -> int:
    """``python -m lab.image [RELEASE|VARIANT...]``: build (or find) the images, print their directories."""
    for release in argv or sorted(RELEASES):
        print(ensure(release).directory)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
