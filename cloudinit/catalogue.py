"""Hetzner Cloud's catalogue as this project knows it: server types, architectures, images, locations.

Data with a date, like cloudinit/hardening.py: what Hetzner sells changes (CX Gen2 and CPX Gen1 were
deprecated on 2025-10-16 and left the EU catalogue at the start of 2026, "Could not find server type
'cx22'"), so the model refuses what can no longer be ordered before anything is registered, with the
replacement in the message. What only the live API knows (a type sold out or not offered in one
location today, a type deprecated since this date) is ``python -m vpsctl preflight``'s job.

Sources: Hetzner's changelog and API (server types are per location since 2025-09-24, with a
deprecation per location); terraform-provider-hcloud's and pulumi-hcloud's examples (cx23 since
2026-01); the Debian archive's arm64 package lists (below). Pure data and lookups: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

VERSION = "2026.12.1"

X86 = "x86"
ARM = "arm"

EU = ("fsn1", "nbg1", "hel1")
US = ("ash", "hil")

# Hetzner location -> (city, network zone).
LOCATIONS: dict[str, tuple[str, str]] = {
    "fsn1": ("Falkenstein", "eu-central"),
    "nbg1": ("Nuremberg", "eu-central"),
    "hel1": ("Helsinki", "eu-central"),
    "ash": ("Ashburn, VA", "us-east"),
    "hil": ("Hillsboro, OR", "us-west"),
    "sin": ("Singapore", "ap-southeast"),
}


@dataclass(frozen=True)
class Family:
    """A line of server types that share architecture, CPU kind and where Hetzner sells them."""

    name: str
    architecture: str
    cpu: str
    """``shared`` or ``dedicated`` vCPUs."""
    locations: tuple[str, ...]
    """Where Hetzner sells the line at all (per-location stock is the live API's answer)."""


COST_OPTIMISED = Family("cost-optimised (CX)", X86, "shared", EU)
# CPX is sold in every location, but which generation in the US and Singapore is not settled here
# (2026 reports still order Gen1 cpx31 in ash and find no cpx42/cpx62 there): the model accepts both
# generations outside the EU and `vpsctl preflight` asks the API for the location's offer and stock.
REGULAR = Family("regular performance (CPX)", X86, "shared", (*EU, *US, "sin"))
ARM64 = Family("Arm64 (CAX)", ARM, "shared", EU)
DEDICATED = Family("dedicated vCPU (CCX)", X86, "dedicated", (*EU, *US, "sin"))


@dataclass(frozen=True)
class Retirement:
    """When a type stopped being orderable, where, and what to order instead."""

    deprecated: str | None
    """Date Hetzner announced it (None: not recorded)."""
    removed: str
    """Date it left the catalogue in ``removed_in``."""
    removed_in: tuple[str, ...]
    replacement: str


@dataclass(frozen=True)
class ServerType:
    name: str
    family: Family
    retirement: Retirement | None = None

    @property
    def architecture(self) -> str:
        return self.family.architecture

    def status(self, location: str) -> str:
        """``current``, ``deprecated`` (still orderable there, going away) or ``removed``."""
        if self.retirement is None:
            return "current"
        return "removed" if location in self.retirement.removed_in else "deprecated"


def _retired(names: str, replacements: str, deprecated: str | None, removed: str, family: Family,
             removed_in: tuple[str, ...]) -> dict[str, ServerType]:
    return {
        old: ServerType(old, family, Retirement(deprecated, removed, removed_in, new))
        for old, new in zip(names.split(), replacements.split(), strict=True)
    }


def _current(names: str, family: Family) -> dict[str, ServerType]:
    return {name: ServerType(name, family) for name in names.split()}


SERVER_TYPES: dict[str, ServerType] = {
    **_current("cx23 cx33 cx43 cx53", COST_OPTIMISED),
    **_current("cpx12 cpx22 cpx32 cpx42 cpx52 cpx62", REGULAR),
    **_current("cax11 cax21 cax31 cax41", ARM64),
    **_current("ccx13 ccx23 ccx33 ccx43 ccx53 ccx63", DEDICATED),
    # CX Gen2 was only ever sold in the EU, so it is gone everywhere it existed.
    **_retired("cx22 cx32 cx42 cx52", "cx23 cx33 cx43 cx53", "2025-10-16", "2026-01-01", COST_OPTIMISED, EU),
    # CPX Gen1 left the EU catalogue; US reports from 2026 still order cpx31 in ash, so elsewhere it
    # counts as deprecated (accepted here, checked live by preflight). cpx51 -> cpx62: the same
    # 16 vCPUs and 32 GB (Hetzner only resizes to a type whose disk is at least as big).
    **_retired("cpx11 cpx21 cpx31 cpx41 cpx51", "cpx12 cpx22 cpx32 cpx42 cpx62", "2025-10-16", "2026-01-01", REGULAR, EU),
    # CX Gen1, retired as one line (trailofbits/algo#14730: cx11 "removed as of 2024-09-06";
    # kubernetes-sigs/image-builder#1492: cx21 removed that September).
    **_retired("cx11 cx21 cx31 cx41 cx51", "cx23 cx23 cx33 cx43 cx53", None, "2024-09-06", COST_OPTIMISED, EU),
}

DEFAULT_SERVER_TYPE = "cx23"


@dataclass(frozen=True)
class Image:
    """A Hetzner system image this project supports, per architecture."""

    name: str
    architectures: tuple[str, ...]
    packages: str
    """Where the packages the user-data installs (libpam-google-authenticator, nftables, chrony) come
    from for every architecture listed, and how that was established."""


_DEBIAN = (
    "Debian {suite} main, binary-amd64 and binary-arm64 Packages: libpam-google-authenticator {pam}, "
    "nftables {nft} (apt-cache madison against the archive, 2026-12-01)"
)
_UBUNTU = (
    "Ubuntu {suite} universe (libpam-google-authenticator) and main (nftables): both are built from "
    "Debian sources declaring Architecture: any / linux-any (apt-cache showsrc, Debian trixie, "
    "2026-12-01), which Launchpad builds for arm64 as for amd64; the Ubuntu ports archive itself was not "
    "reachable from the machine that wrote this"
)

IMAGES: dict[str, Image] = {
    "debian-12": Image("debian-12", (X86, ARM), _DEBIAN.format(suite="bookworm", pam="20191231-2", nft="1.0.6-2+deb12u2")),
    "debian-13": Image("debian-13", (X86, ARM), _DEBIAN.format(suite="trixie", pam="20191231-2.1", nft="1.1.3-1")),
    "ubuntu-22.04": Image("ubuntu-22.04", (X86, ARM), _UBUNTU.format(suite="jammy")),
    "ubuntu-24.04": Image("ubuntu-24.04", (X86, ARM), _UBUNTU.format(suite="noble")),
    "ubuntu-26.04": Image("ubuntu-26.04", (X86, ARM), _UBUNTU.format(suite="resolute")),
}


def current_types(location: str | None = None) -> list[str]:
    """Types that can be ordered (where ``location`` is given: sold in that location)."""
    return [
        t.name
        for t in SERVER_TYPES.values()
        if t.retirement is None and (location is None or location in t.family.locations)
    ]


def server_type_problem(name: object, location: str) -> str | None:
    """Why ``name`` cannot be ordered in ``location`` (a reason for ConfigError), or None."""
    known = SERVER_TYPES.get(name) if isinstance(name, str) else None
    if known is None:
        return f"must be a Hetzner server type such as {DEFAULT_SERVER_TYPE} (current: {', '.join(current_types())})"
    gone = known.retirement
    if gone is not None and known.status(location) == "removed":
        return f"{known.name} was removed from Hetzner's catalogue on {gone.removed}; use {gone.replacement}"
    if location in LOCATIONS and location not in known.family.locations:
        there = sorted({t.family.name for t in SERVER_TYPES.values() if location in t.family.locations})
        sold = ", ".join(known.family.locations)
        return f"{known.name} ({known.family.name}) is sold only in {sold}; in {location} use {' or '.join(there)}"
    return None


def location_problem(name: object) -> str | None:
    if isinstance(name, str) and name in LOCATIONS:
        return None
    return f"must be one of {sorted(LOCATIONS)}"


def image_problem(image: object, server_type: str) -> str | None:
    """Why ``image`` cannot run on ``server_type`` (whose name is already known good), or None."""
    if not isinstance(image, str) or image not in IMAGES:
        return f"must be one of {sorted(IMAGES)}"
    architecture = SERVER_TYPES[server_type].architecture
    if architecture not in IMAGES[image].architectures:
        return f"{image} has no {architecture} build for {server_type}"
    return None
