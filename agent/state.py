"""The desired state of one server: its schema, its canonical bytes and serial, and the record of it.

Both sides use this module: the operator's renderer builds states that pass :func:`validate`, the
server-side agent refuses anything that does not, and the non-secret :func:`record` of a state is what the
agent keeps after applying it and what ``vpsctl sync`` compares the stack with (the plan, the drift report).
Standard library only: this file is shipped to the servers (Python >= 3.10).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import lzma
import re
from typing import Any

FORMAT = "totp-vps/desired-state/1"
SIGNATURE_NAMESPACE = "totp-vps-state"  # what the stack's key signs states for (ssh-keygen -Y's namespace)

DROPIN = "/etc/ssh/sshd_config.d/00-totp-vps.conf"
PAM_SSHD = "/etc/pam.d/sshd"
PAM_SUDO = ("/etc/pam.d/sudo", "/etc/pam.d/sudo-i")
SUDOERS = "/etc/sudoers.d/totp-vps"
KEYS_DIR = "/etc/ssh/authorized_keys"  # AuthorizedKeysFile /etc/ssh/authorized_keys/%u: root-owned, not the user's
TOTP_FILE = ".google_authenticator"  # in the admin's home: pam_google_authenticator rewrites it at every login
SUDO_TOTP_DIR = "/var/lib/totp-vps/sudo-totp"  # root-owned seeds for `sudo: totp`: the admin can neither read nor reset them
LAUNCHER = "totp-vps-activate"  # the agent's entry point; its modules travel in one bundle beside it
ADMIN_GROUP = "totp-vps"  # admins: may run the agent through sudo (a signature, not sudo, authorises a change)

LOCKDOWN = """\
# totp-vps: first-boot lockdown, read first. Nobody logs in until the totp-vps agent has created the
# accounts, installed the PAM stack and the real drop-in and proved them; if that fails this stays (fail
# closed). Written by cloud-init at first boot, and by the agent from this same text whenever it must lock.
HostKey /etc/ssh/ssh_host_ed25519_key
Port {port}
DenyUsers *
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication no
"""

# Every file the agent installs from a state's ``files``, with its mode (all owned by root).
FILES = {DROPIN: 0o644, PAM_SSHD: 0o644, PAM_SUDO[0]: 0o644, PAM_SUDO[1]: 0o644, SUDOERS: 0o440}
MAX_STATE = 1 << 20  # bytes: a state is a few KiB per admin
SUDO_MODES = ("nopasswd", "totp", "none")
SHELLS = frozenset({"/bin/bash", "/bin/sh", "/usr/bin/bash", "/usr/bin/zsh", "/bin/zsh", "/usr/bin/fish"})
KEY_TYPES = frozenset({
    "ssh-ed25519", "sk-ssh-ed25519@openssh.com", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com", "ssh-rsa",
})  # fmt: skip

# What `sshd -T -C user=<admin>,...` must show for every admin, whatever the address: both factors, in order.
ADMIN_EFFECTIVE = (
    "usepam yes",
    "authenticationmethods publickey,keyboard-interactive",
    "pubkeyauthentication yes",
    "kbdinteractiveauthentication yes",
    "passwordauthentication no",
    "permitemptypasswords no",
    "permitrootlogin no",
)
# ... and for a service account connecting from one of its networks: the key only, no terminal, no forwarding.
SERVICE_EFFECTIVE = (
    "authenticationmethods publickey",
    "pubkeyauthentication yes",
    "passwordauthentication no",
    "permittty no",
    "allowtcpforwarding no",
    "allowagentforwarding no",
    "allowstreamlocalforwarding no",
    "x11forwarding no",
    "permittunnel no",
)

# Where a connection may come from, for the per-connection questions both sides ask sshd: documentation
# addresses (from nowhere in particular), and every address, network or IPv4 wildcard a file sshd reads
# names, since a Match Address block for one network is as real as a global line.
PROBES = ("192.0.2.10", "2001:db8::10")
_ADDRESSISH = re.compile(
    r"(?<![\w.:])(?:[0-9*?]{1,3}(?:\.[0-9*?]{1,3}){1,3}|[0-9a-fA-F]*:[0-9a-fA-F:.]*)(?:/[0-9]{1,3})?(?![\w.:])"
)


def first_host(cidr: str) -> str:
    net = ipaddress.ip_network(cidr, strict=False)
    return str(net.network_address + (net.num_addresses > 1))


def uncommented(text: str) -> str:
    """The lines sshd reads (it skips those whose first non-blank character is #)."""
    return "\n".join(line for line in text.split("\n") if not line.lstrip(" \t").startswith("#"))


def probe_addresses(texts: list[str]) -> list[str]:
    """PROBES, then the first and last address of every network any of ``texts`` (sshd files) names
    outside comment lines; a wildcard such as ``10.*`` stands for one address it matches."""
    found: dict[str, None] = dict.fromkeys(PROBES)
    for text in texts:
        for token in _ADDRESSISH.findall(uncommented(text)):
            host, _, bits = token.partition("/")
            if "." in host and ":" not in host:
                parts = [p.replace("*", "1").replace("?", "1") or "1" for p in host.split(".")]
                host = ".".join((parts + ["1"] * 4)[:4])
            try:
                net = ipaddress.ip_network(f"{host}/{bits}" if bits else host, strict=False)
            except ValueError:
                continue
            for addr in (net.network_address + (net.num_addresses > 1), net.broadcast_address - (net.num_addresses > 2)):
                found.setdefault(str(addr), None)
    return list(found)


# Match criteria whose outcome is the same for every user (OpenSSH servconf.c match_cfg_line; each takes one
# pattern), and the one Include the agent reads the files of (Debian's and Ubuntu's drop-in directory).
_USER_BLIND = frozenset({"address", "host", "localaddress", "localport", "rdomain"})
_DROPINS = frozenset({"/etc/ssh/sshd_config.d/*.conf", "sshd_config.d/*.conf"})


def same_for_every_user(texts: list[str]) -> bool:
    """Whether ``sshd -T -C`` gives every user the same answer for one connection, going by ``texts`` (the
    files sshd reads): every Match line is ``Match all`` or criterion-pattern pairs of the criteria above, and
    no Include brings in a file outside the drop-in directory. Anything else (User, Group, invalid-user, an
    unknown word, a quote or escape) counts as telling users apart."""
    for text in texts:
        for line in uncommented(text).split("\n"):
            words = [w for w in re.split(r"[ \t\r\f=]+", line) if w]
            keyword, args = (words[0].lower(), [w.lower() for w in words[1:]]) if words else ("", [])
            if keyword == "include" and not set(words[1:]) <= _DROPINS:
                return False
            if keyword == "match" and args != ["all"] and (
                    any(c in line for c in "\"'\\") or not args or len(args) % 2
                    or not set(args[0::2]) <= _USER_BLIND or {"user", "group", "invalid-user"} & set(args)):
                return False
    return True


# ... and the rest of what an admin's connection must show: dev-sec ssh-baseline, keys only from the
# agent's root-owned files, forwarding as the stack says (admin_lines).
ADMIN_BASELINE = (
    "hostbasedauthentication no",
    "ignorerhosts yes",
    "permituserenvironment no",
    "strictmodes yes",
    "x11forwarding no",
    "permittunnel no",
    "gatewayports no",
    "usedns no",
    "loglevel VERBOSE",
    "forcecommand none",
)
KEY_SOURCES = (
    f"authorizedkeysfile {KEYS_DIR}/%u",
    "authorizedkeyscommand none",
    "authorizedprincipalsfile none",
    "trustedusercakeys none",
)
FORWARDING = ("allowtcpforwarding", "allowagentforwarding", "allowstreamlocalforwarding")


def admin_lines(state: dict[str, Any]) -> tuple[str, ...]:
    """Every ``sshd -T -C`` line an admin's connection must show under ``state``."""
    forwarding = "yes" if state["summary"].get("allowForwarding") else "no"
    return (*ADMIN_EFFECTIVE, *ADMIN_BASELINE, *KEY_SOURCES, *(f"{k} {forwarding}" for k in FORWARDING))


SERIAL = re.compile(r"[0-9a-f]{64}")
NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
BASE32 = re.compile(r"[A-Z2-7]{26,128}")
CODE = re.compile(r"[1-9][0-9]{7}")
TOTP_OPTION = re.compile(r'" (RATE_LIMIT [0-9]+ [0-9]+|WINDOW_SIZE [0-9]+|DISALLOW_REUSE|TOTP_AUTH)')
COMMAND = re.compile(r"/[^\x00-\x1f\x7f\"\\#]{0,1023}")  # ForceCommand and command="...": no quoting needed


class StateError(ValueError):
    """A desired state that must not be applied: ``where`` names the part, ``reason`` says why (no values)."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


# ------------------------------------------------------------------------------------ bytes and serial


def normal(value: Any) -> Any:
    """``value`` as it looks after a trip through Pulumi's outputs (numbers are float64 there, and a key whose
    value is null is dropped): whole floats as ints, no null values in objects. The same state, the same serial."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [normal(v) for v in value]
    return value


def canonical(state: dict[str, Any]) -> bytes:
    """The bytes a serial and a signature are computed over (the agent's own files travel beside them)."""
    body = {k: normal(v) for k, v in state.items() if k != "agentFiles"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def serial(state: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(state)).hexdigest()


def lockdown(port: int) -> str:
    """The sshd drop-in that lets nobody in: the agent's own text, never a copy of what is installed."""
    return LOCKDOWN.format(port=port)


def signed_message(state: dict[str, Any], nonce: str) -> bytes:
    """What the stack's key signs for one server and one moment: the state and the nonce the server gave out."""
    return canonical(state) + b"\n" + nonce.encode()


def allow_users(state: dict[str, Any]) -> list[str]:
    """sshd's AllowUsers: each admin, and each service account only from its own networks."""
    return [a["name"] for a in state["admins"]] + [f"{s['name']}@{c}" for s in state["serviceAccounts"] for c in s["fromCidrs"]]


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def short(serial_: str) -> str:
    """A serial as people read it."""
    return serial_[:12]


def pack(value: Any) -> bytes:
    """JSON, xz, base85: how the user-data carries the agent's modules and the first state (plain text, so
    cloud-init writes it as it is; xz and base85 beat cloud-init's own gzip and base64 by a quarter)."""
    data = json.dumps(value, sort_keys=True, ensure_ascii=False).encode()
    # preset 9's 64 MiB dictionary reserves ~670 MiB to compress a few KB; 1 MiB packs these as tightly.
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": 1 << 20}]
    return base64.b85encode(lzma.compress(data, format=lzma.FORMAT_XZ, filters=filters))


def unpack(data: bytes) -> Any:
    return json.loads(lzma.decompress(base64.b85decode(data.strip())))


def bundle(modules: dict[str, str]) -> bytes:
    """The agent's modules (name -> text) in the one file the launcher imports them from."""
    return pack(modules)


def unbundle(data: bytes) -> dict[str, str]:
    modules = unpack(data)
    if not isinstance(modules, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in modules.items()):
        raise ValueError("not an agent bundle")
    return modules


def agent_digest(files: dict[str, str]) -> str:
    """Identifies one version of the agent: its files (name -> text) as installed on the server."""
    return hashlib.sha256(json.dumps(files, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def key_fingerprint(line: str) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` prints it, from a public key line (options and comment ignored)."""
    blob = base64.b64decode(_key_parts(line)[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _key_parts(line: str) -> tuple[str, str]:
    words = line.split()
    return (words[0], words[1]) if len(words) >= 2 else ("", "")


def totp_parts(text: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(seed, option lines, backup codes) of a ~/.google_authenticator text, in file order."""
    lines = text.splitlines()
    seed = lines[0] if lines else ""
    options = tuple(line for line in lines[1:] if line.startswith('"'))
    codes = tuple(line for line in lines[1:] if not line.startswith('"') and line)
    return seed, options, codes


def totp_fingerprint(text: str) -> str:
    """Identifies a TOTP secret (seed and backup codes), not the module's live state (used codes, skew,
    rate-limit entries). The seed's 160 bits make it safe to show."""
    seed, _options, codes = totp_parts(text)
    return hashlib.sha256(("totp-vps-totp\0" + seed + "\0" + ",".join(codes)).encode()).hexdigest()


def authorized_keys(account: dict[str, Any], service: bool) -> str:
    """The root-owned authorized_keys file of one account. A service account's keys are restricted to its
    networks (``from=``), get no terminal or forwarding (``restrict``), and run only its command."""
    options = ""
    if service:
        options = "restrict,from=\"" + ",".join(account["fromCidrs"]) + "\""
        if account.get("command"):
            options += ",command=\"" + account["command"] + "\""
        options += " "
    return "".join(f"{options}{key}\n" for key in account["keys"])


# -------------------------------------------------------------------------------------------- schema


def validate(raw: object) -> dict[str, Any]:
    """The state (numbers normalised), if it may be applied; StateError naming the first part that may not."""
    state = normal(raw)
    if not isinstance(state, dict):
        raise StateError("state", "is not a JSON object")
    _only(state, {"format", "server", "sshPort", "summary", "signer", "files", "admins", "serviceAccounts", "offboarding",
                  "agent", "agentFiles"}, "state")
    if state.get("format") != FORMAT:
        raise StateError("format", f"is not {FORMAT} (a newer totp-vps wrote it? update the agent first)")
    if not isinstance(state.get("server"), str) or not HOSTNAME.fullmatch(state["server"]):
        raise StateError("server", "is not a hostname label")
    port = state.get("sshPort")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise StateError("sshPort", "is not a TCP port")
    if not isinstance(state.get("summary"), dict) or not all(isinstance(k, str) for k in state["summary"]):
        raise StateError("summary", "is not an object")
    _check_key(state.get("signer"), "signer", types={"ssh-ed25519"})
    files = state.get("files")
    if not isinstance(files, dict) or set(files) != set(FILES):
        raise StateError("files", f"must hold exactly {', '.join(sorted(FILES))}")
    for path, text in files.items():
        if not isinstance(text, str) or "\0" in text or len(text) > 65536:
            raise StateError(f"files.{path}", "is not a text file")
    admins = _list(state.get("admins"), "admins")
    if not admins:
        raise StateError("admins", "is empty: nobody could log in")
    accounts = _list(state.get("serviceAccounts"), "serviceAccounts")
    names: list[str] = []
    for i, admin in enumerate(admins):
        where = f"admins[{i}]"
        _only(admin, {"name", "shell", "keys", "sudo", "totp", "sudoTotp"}, where)
        names.append(_person(admin, where))
        if admin.get("sudo") not in SUDO_MODES:
            raise StateError(f"{where}.sudo", f"is not one of {', '.join(SUDO_MODES)}")
        _check_totp(admin.get("totp"), f"{where}.totp")
        if admin["sudo"] == "totp":
            _check_totp(admin.get("sudoTotp"), f"{where}.sudoTotp")
        elif admin.get("sudoTotp") is not None:
            raise StateError(f"{where}.sudoTotp", "is set but sudo is not totp")
    for i, account in enumerate(accounts):
        where = f"serviceAccounts[{i}]"
        _only(account, {"name", "shell", "keys", "fromCidrs", "command"}, where)
        names.append(_person(account, where))
        cidrs = _list(account.get("fromCidrs"), f"{where}.fromCidrs")
        if not cidrs:
            raise StateError(f"{where}.fromCidrs", "is empty")
        for j, cidr in enumerate(cidrs):
            try:
                ipaddress.ip_network(cidr, strict=True)
            except (TypeError, ValueError):
                raise StateError(f"{where}.fromCidrs[{j}]", "is not a network") from None
        command = account.get("command")
        if command is not None and (not isinstance(command, str) or not COMMAND.fullmatch(command)):
            raise StateError(f"{where}.command", "is not an absolute command without quotes or control characters")
    if len(set(names)) != len(names):
        raise StateError("admins", "two accounts have the same name")
    offboarding = state.get("offboarding")
    if not isinstance(offboarding, dict) or set(offboarding) != {"removeHome"} or not isinstance(offboarding["removeHome"], bool):
        raise StateError("offboarding", "must be {\"removeHome\": true|false}")
    agent = state.get("agent")
    if not isinstance(agent, dict) or set(agent) != {"version", "sha256"} or not isinstance(agent["sha256"], str) \
            or not re.fullmatch(r"[0-9a-f]{64}", agent["sha256"]) or not isinstance(agent["version"], str):
        raise StateError("agent", "must be {\"version\": ..., \"sha256\": ...}")
    agent_files = state.get("agentFiles", {})
    if not isinstance(agent_files, dict) or not all(isinstance(v, str) for v in agent_files.values()):
        raise StateError("agentFiles", "is not an object of file texts")
    return state


def _only(item: object, keys: set[str], where: str) -> None:
    if not isinstance(item, dict):
        raise StateError(where, "is not an object")
    extra = sorted(set(item) - keys)
    if extra:
        raise StateError(f"{where}.{extra[0]}", "is not part of the format")


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise StateError(where, "is not a list")
    return value


def _person(item: dict[str, Any], where: str) -> str:
    name = item.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name) or name in ("root", ADMIN_GROUP, "totp-vps-probe"):
        raise StateError(f"{where}.name", "is not an allowed user name")
    if item.get("shell") not in SHELLS:
        raise StateError(f"{where}.shell", "is not an allowed shell")
    keys = _list(item.get("keys"), f"{where}.keys")
    if not keys:
        raise StateError(f"{where}.keys", "is empty")
    for j, key in enumerate(keys):
        _check_key(key, f"{where}.keys[{j}]", types=KEY_TYPES)
    return name


def _check_key(line: object, where: str, *, types: frozenset[str] | set[str]) -> None:
    """One public key line without options; its comment printable (it ends up in authorized_keys)."""
    if not isinstance(line, str) or not line.isprintable() or len(line) > 16384:
        raise StateError(where, "is not one printable public key line")
    kind, b64 = _key_parts(line)
    if kind not in types:
        raise StateError(where, "has a key type that is not accepted")
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise StateError(where, "key data is not base64") from None
    length = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
    if blob[4 : 4 + length] != kind.encode():
        raise StateError(where, "key type does not match the key data")


def _check_totp(text: object, where: str) -> None:
    """A ~/.google_authenticator as pam_google_authenticator reads it (see its scratch-code parser)."""
    if not isinstance(text, str) or len(text) > 4096:
        raise StateError(where, "is not a TOTP file")
    lines = text.splitlines()
    if not lines or not BASE32.fullmatch(lines[0]):
        raise StateError(where, "does not start with a base32 seed of at least 130 bits")
    options = [line for line in lines[1:] if line.startswith('"')]
    codes = [line for line in lines[1:] if not line.startswith('"')]
    if lines[1 : 1 + len(options)] != options or not all(TOTP_OPTION.fullmatch(o) for o in options):
        raise StateError(where, "has option lines other than RATE_LIMIT, WINDOW_SIZE, DISALLOW_REUSE, TOTP_AUTH first")
    if '" TOTP_AUTH' not in options:
        raise StateError(where, "lacks TOTP_AUTH (the module would count HOTP codes instead)")
    if not 1 <= len(codes) <= 10 or not all(CODE.fullmatch(c) for c in codes):
        raise StateError(where, "needs 1-10 backup codes of 8 digits without a leading zero")
    if not text.endswith("\n"):
        raise StateError(where, "does not end with a newline")


# ---------------------------------------------------------------------------------------- the record


def record(state: dict[str, Any]) -> dict[str, Any]:
    """What a state looks like without its secrets: kept by the agent once applied, and what the operator's
    plan compares. Key and TOTP fingerprints identify material without revealing it."""
    return {
        "serial": serial(state),
        "server": state["server"],
        "summary": state["summary"],
        "signer": key_fingerprint(state["signer"]),
        "files": {path: digest(text) for path, text in sorted(state["files"].items())},
        "admins": {
            a["name"]: {
                "shell": a["shell"],
                "sudo": a["sudo"],
                "keys": sorted(key_fingerprint(k) for k in a["keys"]),
                "keysFile": digest(authorized_keys(a, False)),
                "totp": totp_fingerprint(a["totp"]),
                "sudoTotp": totp_fingerprint(a["sudoTotp"]) if a.get("sudoTotp") else None,
            }
            for a in state["admins"]
        },
        "serviceAccounts": {
            s["name"]: {
                "shell": s["shell"],
                "keys": sorted(key_fingerprint(k) for k in s["keys"]),
                "keysFile": digest(authorized_keys(s, True)),
                "fromCidrs": list(s["fromCidrs"]),
                "command": s.get("command"),
            }
            for s in state["serviceAccounts"]
        },
        "removeHome": state["offboarding"]["removeHome"],
    }
