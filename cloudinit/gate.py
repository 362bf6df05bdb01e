"""What sshd, Linux-PAM and sudo on the image will do with a desired state: the gate's judgement.

The desired state names every file the agent installs, so the question "does every login still need
the key AND the code?" can be answered before anything is signed or applied, the way the real tools
read those files: the image's own sshd_config and pam.d files (cloudinit.stock) next to ours, parsed by
the one grammar of each tool (cloudinit.sshd_config, cloudinit.pam), asked per connection like
``sshd -T -C user=...,addr=...``: every admin from every address any file names (a ``Match Address``
block for one network is as real as a global line), every service account from inside and outside its
networks, root and a stranger. The policy pack, ``vpsctl sync`` (before it signs) and the renderer use
this one function; on the server the agent asks the real sshd and libpam the same questions.

Findings are (policy id, problem); problems name accounts, addresses and settings, never secrets.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from agent import state as st
from cloudinit import hardening, pam, stock
from cloudinit import sshd_config as sshd

Finding = tuple[str, str]

# The sshd grammar each image's OpenSSH is read with. Ubuntu 22.04 (8.9) and 24.04 (9.6) have no grammar
# of their own: both are read as 9.2, which knows every keyword the design writes; the keywords 9.2 has
# and 8.9 lacks are refused for 22.04 below, so nothing the gate accepts makes that sshd fail.
GRAMMAR: dict[str, sshd.Version] = {"debian-12": (9, 2), "debian-13": (10, 0), "ubuntu-22.04": (9, 2),
                                    "ubuntu-24.04": (9, 2), "ubuntu-26.04": (10, 2)}  # fmt: skip
NEWER_THAN_8_9 = ("requiredrsasize", "channeltimeout", "unusedconnectiontimeout")

STRANGERS = ("root", "totp-vps-probe", "nobody", "totp-vps-stranger")
TOTP_MODULE = "pam_google_authenticator.so"
# sudo's stack reads the root-owned seed (secret=) as root (user=root): the design's two arguments.
SUDO_ARGS = frozenset({f"secret={st.SUDO_TOTP_DIR}/${{USER}}", "user=root"})

# Effective values for an admin, by the policy that owns them (st.ADMIN_EFFECTIVE is the agent's list).
ADMIN_POLICY = {"authenticationmethods": "sshd-01", "pubkeyauthentication": "sshd-01", "passwordauthentication": "sshd-02",
                "permitemptypasswords": "sshd-02", "permitrootlogin": "sshd-03", "usepam": "sshd-04",
                "kbdinteractiveauthentication": "sshd-04"}  # fmt: skip
CRYPTO = {"kexalgorithms": hardening.KEX, "ciphers": hardening.CIPHERS, "macs": hardening.MACS,
          "hostkeyalgorithms": hardening.HOST_KEY_ALGORITHMS, "pubkeyacceptedalgorithms": hardening.PUBKEY_ALGORITHMS}
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"

# What the checks see of a state: its files, port and accounts; no TOTP secret, signer or server name. Servers
# of one config (and the renderer's stand-in render before the real one) are then judged once per process.
JUDGED = ("files", "sshPort", "summary", "admins", "serviceAccounts", "offboarding")


def judge_state(state: Mapping[str, Any], image: str) -> list[Finding]:
    """Every way ``state`` (valid for the agent) would let a login in without both factors, let an account
    in from where it must not come, or weaken sshd, PAM or sudo below the design, on ``image``."""
    view = {key: state[key] for key in JUDGED if key in state}
    view["admins"] = [{k: v for k, v in admin.items() if k != "totp"} for admin in state["admins"]]
    return list(_judge(json.dumps(view, sort_keys=True), image))


@functools.lru_cache(maxsize=64)
def _judge(view: str, image: str) -> tuple[Finding, ...]:
    state = json.loads(view)
    return (*_sshd(state, image), *_pam(state), *_sudoers(state))


# ------------------------------------------------------------------------------------------------ sshd


def _sshd(state: Mapping[str, Any], image: str) -> Iterator[Finding]:
    files = {**stock.SSHD_FILES, st.DROPIN: state["files"][st.DROPIN]}
    version = GRAMMAR.get(image)
    if version is None:
        yield "sshd-05", f"image {image!r} is not one whose sshd the gate can read (known: {', '.join(GRAMMAR)})"
        return
    try:
        config = sshd.load(files, stock.SSHD_CONFIG, version)
    except sshd.Undecidable as exc:
        yield "sshd-05", f"what sshd reads depends on the running system, which no gate can see: {exc}"
        return
    except sshd.ConfigError as exc:
        yield "sshd-05", f"sshd -t would refuse the configuration ({exc}): the change cannot be applied"
        return
    if image == "ubuntu-22.04":
        dropin = state["files"][st.DROPIN]
        for keyword in NEWER_THAN_8_9:
            if re.search(rf"(?im)^[ \t]*{keyword}[ \t=]", dropin):
                yield "sshd-05", f"{keyword} is unknown to the OpenSSH 8.9 of {image} (sshd -t would fail)"
    live = {path: st.uncommented(files.get(path, "")) for path in config.files}
    if re.search(r"(?im)^[ \t]*include[ \t=]", live.get(st.DROPIN, "")):
        yield "sshd-05", f"{st.DROPIN} includes other files: sshd would read files the desired state does not carry"
    for path, text in live.items():
        for line in re.findall(r"(?im)^[ \t]*match[ \t=].*$", text):
            if re.search(r"(?i)\b(localaddress|rdomain)\b", line):
                # The server's own addresses are Hetzner's to assign: which logins such a block covers is
                # not known before the server exists.
                yield "sshd-05", f"{path}: a Match on the local address or routing domain covers logins no gate can enumerate"
    if config.ignored:
        yield "sshd-05", f"sshd skips {len(config.ignored)} line(s) without a word (an unbalanced quote)"
    if len(config.files) < 2 or config.files[1] != st.DROPIN:
        yield "sshd-05", f"{st.DROPIN} is not the first file sshd reads after {stock.SSHD_CONFIG}, so it does not win"
    port = state["sshPort"]
    admins = [a["name"] for a in state["admins"]]
    services = state["serviceAccounts"]
    addresses = st.probe_addresses([files.get(path, '') for path in config.files])
    first = True
    for name in admins:
        for addr in addresses:
            conn = sshd.Connection(name, addr, host=addr, lport=port, groups=(name, st.ADMIN_GROUP))
            values = _effective(config, conn)
            if isinstance(values, str):
                yield "sshd-05", values
                return
            where = f"{name} from {addr}"
            if first:  # global settings: once
                first = False
                yield from _listener(values, port)
            if not sshd.admits(config, conn, values):
                yield "sshd-01", f"{where} is refused by AllowUsers/DenyUsers/AllowGroups (locked out)"
            if sorted(values.get("allowusers", ())) != sorted(st.allow_users(dict(state))):
                yield "sshd-03", f"{where}: AllowUsers is {_show(values.get('allowusers'))}, want exactly the stack's accounts"
            yield from _admin(values, where, state, image)
    for account in services:
        inside = [st.first_host(c) for c in account["fromCidrs"]]
        for addr in inside:
            conn = sshd.Connection(account["name"], addr, host=addr, lport=port, groups=(account["name"],))
            values = _effective(config, conn)
            if isinstance(values, str):
                yield "sshd-05", values
                return
            where = f"service account {account['name']} from {addr}"
            if not sshd.admits(config, conn, values):
                yield "svc-02", f"{where} (inside its fromCidrs) is refused"
            yield from _service(values, where, account)
        nets = [ipaddress.ip_network(c) for c in account["fromCidrs"]]
        for addr in addresses:
            if any(ipaddress.ip_address(addr) in n for n in nets):
                continue
            conn = sshd.Connection(account["name"], addr, host=addr, lport=port, groups=(account["name"],))
            if _admitted(config, conn):
                yield "svc-02", f"service account {account['name']} is let in from {addr}, outside its fromCidrs"
    for stranger in STRANGERS:
        for addr in addresses:
            conn = sshd.Connection(stranger, addr, host=addr, lport=port, groups=(stranger,))
            values = _effective(config, conn)
            if isinstance(values, str):
                yield "sshd-05", values
                return
            if stranger == "root" and values.get("permitrootlogin") != ("no",):
                yield "sshd-03", f"root from {addr}: PermitRootLogin is {_show(values.get('permitrootlogin'))}"
            if sshd.admits(config, conn, values):
                yield "sshd-03", f"{stranger} from {addr} passes AllowUsers/DenyUsers: only the stack's accounts may log in"
                break


def _effective(config: sshd.Config, conn: sshd.Connection) -> dict[str, tuple[str, ...]] | str:
    try:
        return sshd.effective(config, conn)
    except sshd.Undecidable as exc:
        return f"for {conn.user} from {conn.addr} sshd's answer depends on the running system: {exc}"
    except sshd.ConfigError as exc:
        return f"sshd fails for {conn.user} from {conn.addr}: {exc}"


def _admitted(config: sshd.Config, conn: sshd.Connection) -> bool:
    try:
        return sshd.admits(config, conn)
    except sshd.ConfigError:
        return False  # sshd ends that connection


def _show(value: tuple[str, ...] | None) -> str:
    return "unset" if not value else " ".join(value)


def _listener(values: Mapping[str, tuple[str, ...]], port: int) -> Iterator[Finding]:
    if values.get("port") != (str(port),):
        yield "sshd-05", (f"sshd listens on port(s) {_show(values.get('port'))}, want exactly {port} "
                          "(Port lines add up across files)")
    if values.get("hostkey") != (HOST_KEY,):
        yield "sshd-05", f"HostKey is {_show(values.get('hostkey'))}, want only the pinned {HOST_KEY}"


def _admin(values: Mapping[str, tuple[str, ...]], where: str, state: Mapping[str, Any], image: str) -> Iterator[Finding]:
    for line in st.admin_lines(dict(state)):
        keyword, want = line.split(" ", 1)
        have = values.get(keyword)
        if have != (want,):
            why = {"authenticationmethods": " (both factors, the key then the code)", "usepam": " (no PAM: no code)",
                   "kbdinteractiveauthentication": " (the code prompt)"}.get(keyword, "")  # fmt: skip
            if keyword in st.FORWARDING:
                why = " (allowForwarding)"
            yield ADMIN_POLICY.get(keyword, "sshd-07"), f"{where}: {keyword} is {_show(have)}, want {want}{why}"
    tries = values.get("maxauthtries", ("6",))[0]
    if not tries.isdigit() or int(tries) > hardening.MAX_AUTH_TRIES:
        yield "sshd-07", f"{where}: maxauthtries is {tries}, want <= {hardening.MAX_AUTH_TRIES}"
    for keyword, table in CRYPTO.items():
        known = set(hardening.supported(table, image))
        for name in ",".join(values.get(keyword, ())).split(","):
            if name and name not in known:
                yield "sshd-06", f"{where}: {keyword} allows {name}, outside the hardened set for {image}"


def _service(values: Mapping[str, tuple[str, ...]], where: str, account: Mapping[str, Any]) -> Iterator[Finding]:
    for line in (*st.SERVICE_EFFECTIVE, *st.KEY_SOURCES):
        keyword, want = line.split(" ", 1)
        if values.get(keyword) != (want,):
            yield "svc-02", f"{where}: {keyword} is {_show(values.get(keyword))}, want {want}"
    forced = account.get("command") or "none"
    if values.get("forcecommand") != (forced,):
        yield "svc-02", f"{where}: forcecommand is {_show(values.get('forcecommand'))}, want {forced}"


# ------------------------------------------------------------------------------------------------- PAM


def _pam(state: Mapping[str, Any]) -> Iterator[Finding]:
    files = {**stock.PAM_FILES, **{p: t for p, t in state["files"].items() if p.startswith(pam.PAM_D)}}
    for service, policy, allowed in (("sshd", "pam-01", frozenset()), *((p[len(pam.PAM_D):], "pam-04", SUDO_ARGS)
                                                                        for p in st.PAM_SUDO)):
        for problem in pam.judge_auth(service, files.get, TOTP_MODULE, allowed=allowed):
            yield _pam_policy(problem, policy), problem


def _pam_policy(problem: str, stack_policy: str) -> str:
    """pam-02: an option of the module that waves users through; pam-03: a password module; otherwise the
    stack's own policy (pam-01 sshd, pam-04 sudo)."""
    if stack_policy != "pam-01":
        return stack_policy
    if re.search(rf"{re.escape(TOTP_MODULE)} \S+: ", problem):  # "...so nullok: users without ..."
        return "pam-02"
    if "asks for a password" in problem:
        return "pam-03"
    return stack_policy


# ----------------------------------------------------------------------------------------------- sudoers

# The only lines the design writes (visudo -c on the server checks the grammar; this checks the meaning).
# A restricted reading: anything else (Defaults, aliases, #include, continued lines, other users) is a
# finding, so no sudoers construct the gate does not understand can grant root.
_SUDO_AGENT = re.compile(rf"%{st.ADMIN_GROUP} ALL=\(root\) NOPASSWD: (/\S+)")
_SUDO_ADMIN = re.compile(r"([a-z_][a-z0-9_-]{0,31}) ALL=\(ALL:ALL\) (NOPASSWD: )?ALL")
_SUDO_SERVICE = re.compile(r"([a-z_][a-z0-9_-]{0,31}) ALL=\(root\) NOPASSWD: (/[^,]+(?:, /[^,]+)*)")
_INCLUDE = re.compile(r"[#@]include(dir)?\s")
# Programs that hand out a shell (or any command) to whoever runs them as root.
SHELL_LIKE = frozenset({
    "sh", "bash", "dash", "zsh", "ksh", "csh", "tcsh", "fish", "su", "sudo", "sudoedit", "env", "doas", "login", "runuser",
    "setpriv", "nsenter", "unshare", "chroot", "systemd-run", "script", "busybox", "vi", "vim", "nvim", "nano", "ed",
    "emacs", "less", "more", "man", "view", "python", "python3", "perl", "ruby", "lua", "node", "php", "awk", "gawk",
    "mawk", "find", "xargs", "docker", "podman", "visudo",
})  # fmt: skip


def shell_like(command: str) -> bool:
    """Whether a sudo command line lets its user run anything as root (a shell, an editor, a pager ...)."""
    program = command.split()[0].rsplit("/", 1)[-1]
    return program in SHELL_LIKE or re.sub(r"[0-9.]+$", "", program) in SHELL_LIKE or "*" in command


def _sudoers(state: Mapping[str, Any]) -> Iterator[Finding]:
    text = state["files"][st.SUDOERS]
    modes = {a["name"]: a["sudo"] for a in state["admins"]}
    services = {s["name"] for s in state["serviceAccounts"]}
    seen: dict[str, str] = {}
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        where = f"{st.SUDOERS} line {number}"
        if line.endswith("\\"):
            yield "sudo-01", f"{where}: a continued line (the design writes none)"
            continue
        if not line or (line.startswith("#") and not _INCLUDE.match(line)):
            continue
        if m := _SUDO_AGENT.fullmatch(line):
            if m.group(1) != f"/usr/local/sbin/{st.LAUNCHER}":
                yield "sudo-01", f"{where}: the admin group may run {m.group(1)} as root"
        elif m := _SUDO_ADMIN.fullmatch(line):
            name, mode = m.group(1), "nopasswd" if m.group(2) else "totp"
            if modes.get(name) != mode:
                yield "sudo-01", f"{where}: {name} gets sudo: {mode}, the stack says {modes.get(name, 'no admin of that name')}"
            seen[name] = mode
        elif m := _SUDO_SERVICE.fullmatch(line):
            name = m.group(1)
            if name not in services:
                yield "sudo-01", f"{where}: {name} is not a service account of this server"
            for command in m.group(2).split(", "):
                if shell_like(command):
                    yield "svc-03", f"{where}: service account {name} may run {command.split()[0]} as root (a root shell)"
        else:
            yield "sudo-01", f"{where}: not a line the design writes (Defaults, aliases, includes and other rules are refused)"
    for name, mode in modes.items():
        if mode != "none" and name not in seen:
            yield "sudo-01", f"{name} has sudo: {mode} in the stack but no rule in {st.SUDOERS}"
