"""Fault injection for the lab: break one thing in the PARSED rendered user-data, so a test can show that
the server then fails closed (nobody logs in) and that ``cloud-init status`` reports the failure."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import yaml

from agent import state as st
from cloudinit import render, yamlload
from cloudinit.model import Server


def _edit_state(data: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> None:
    """Change the first desired state in the user-data (write_files /etc/totp-vps/desired.json, packed as the
    renderer packs it)."""
    entry = next(e for e in data["write_files"] if e.get("path") == render.BOOT_STATE)
    state = st.unpack(entry["content"].encode())
    change(state)
    entry["content"] = st.pack(state).decode()


def pam_package_missing(data: dict[str, Any], server: Server) -> None:
    """The PAM module's package cannot be installed: purge it from the image before cloud-init's package
    step (the guest has no apt sources or network, so it cannot come back)."""
    bootcmd = data.get("bootcmd")
    data["bootcmd"] = [*(bootcmd if isinstance(bootcmd, list) else []), ["dpkg", "--purge", "libpam-google-authenticator"]]


def sshd_dropin_broken(data: dict[str, Any], server: Server) -> None:
    """The desired state's sshd drop-in does not pass ``sshd -t``."""
    _edit_state(data, lambda s: s["files"].__setitem__(st.DROPIN, s["files"][st.DROPIN] + "ThisIsNotAnSshdDirective yes\n"))


def pam_weakened(data: dict[str, Any], server: Server) -> None:
    """The desired state's PAM stack lets a login through without the code (pam_permit ahead of the module)."""
    _edit_state(data, lambda s: s["files"].__setitem__(st.PAM_SSHD, "auth [success=done default=ignore] pam_permit.so\n"
                                                          + s["files"][st.PAM_SSHD]))


FAULTS: dict[str, Callable[[dict[str, Any], Server], None]] = {
    "pam-package-missing": pam_package_missing,
    "sshd-dropin-broken": sshd_dropin_broken,
    "pam-weakened": pam_weakened,
}

# What the agent says (cloud-init-output.log, reported by the lab image) for each fault.
EXPECTED_REASON = {
    "pam-package-missing": "pam_google_authenticator.so missing",
    "sshd-dropin-broken": "sshd -t rejects the configuration",
    "pam-weakened": "PAM sshd:",
}


def inject(user_data: str, fault: str, server: Server) -> str:
    """``user_data`` with ``fault`` applied, re-dumped as ``#cloud-config``."""
    data = copy.deepcopy(yamlload.load(user_data, "user-data").data)
    FAULTS[fault](data, server)
    return "#cloud-config\n" + yaml.safe_dump(data, sort_keys=False, width=1000)
