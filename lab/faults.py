"""Fault injection for the lab: break one thing in the PARSED rendered user-data, so a test can show
that the server then fails closed (nobody logs in) and that ``cloud-init status`` reports the failure."""

from __future__ import annotations

import copy
from collections.abc import Callable

import yaml

from cloudinit import render
from cloudinit.model import Server

STAGED_DROPIN = f"{render.STAGE}/sshd.conf"


def _entry(data: dict[str, object], path: str) -> dict[str, object]:
    entries = data["write_files"]
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("path") == path:
            return entry
    raise KeyError(f"no write_files entry for {path}")


def pam_package_missing(data: dict[str, object], server: Server) -> None:
    """The PAM module's package cannot be installed: purge it from the image before cloud-init's package
    step (the guest has no apt sources or network, so it cannot come back)."""
    bootcmd = data.get("bootcmd")
    data["bootcmd"] = [*(bootcmd if isinstance(bootcmd, list) else []), ["dpkg", "--purge", "libpam-google-authenticator"]]


def sshd_dropin_broken(data: dict[str, object], server: Server) -> None:
    """The rendered sshd drop-in does not pass ``sshd -t``."""
    entry = _entry(data, STAGED_DROPIN)
    entry["content"] = str(entry["content"]) + "ThisIsNotAnSshdDirective yes\n"


def totp_file_unwritable(data: dict[str, object], server: Server) -> None:
    """The first admin's TOTP file cannot be written as that admin (its owner does not exist)."""
    entry = _entry(data, f"/home/{server.admin_names[0]}/.google_authenticator")
    entry["owner"] = "nosuchuser:nosuchuser"


FAULTS: dict[str, Callable[[dict[str, object], Server], None]] = {
    "pam-package-missing": pam_package_missing,
    "sshd-dropin-broken": sshd_dropin_broken,
    "totp-file-unwritable": totp_file_unwritable,
}

# What activate.sh says (cloud-init-output.log, reported by the lab image) for each fault.
EXPECTED_REASON = {
    "pam-package-missing": "pam_google_authenticator.so missing",
    "sshd-dropin-broken": "sshd -t rejects the configuration",
    "totp-file-unwritable": "/.google_authenticator: owner/mode",
}


def inject(user_data: str, fault: str, server: Server) -> str:
    """``user_data`` with ``fault`` applied, re-dumped as ``#cloud-config``."""
    data = copy.deepcopy(render.parse(user_data))
    FAULTS[fault](data, server)
    return "#cloud-config\n" + yaml.safe_dump(data, sort_keys=False, width=1000)
