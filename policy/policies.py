"""The totp-vps policies as plain validators, and the CrossGuard policy objects built from them.

Importing this module starts nothing: ``policy/__main__.py`` hands :func:`build_policies` to a
``PolicyPack`` (which serves the engine forever), and ``vpsctl check`` hands the same list to the SDK's
analyzer servicer in-process. Either way every validator sees what CrossGuard gives it:

- ``args.props`` in camelCase wire names, with the SDK's unknown-checking proxy: reading a value that
  is unknown at preview raises ``UnknownValueError``, which the analyzer turns into an advisory
  "can't run policy ... during preview" instead of a pass. Validators never catch it.
- Plain values: the Python analyzer drops secret markers when it deserializes properties, so a policy
  cannot see whether an input was ``Output.secret``. What it can see is the resource option
  ``additionalSecretOutputs`` (the engine then stores the property encrypted), so "secret" below means
  "declared in additionalSecretOutputs", and the secret-shape scans (sec-01, sec-02) allow secret
  material only in such properties and in the program's designated secret output (``enrollment``).

Waivers: a Hetzner label ``totp-vps.waive/<policy id>: <reason>`` on the resource turns that policy's
violations on that resource into advisory notes of the ``waived`` policy, naming the label. The
component sets ``totp-vps.waive/fw-01: allowSshFromAnywhere`` and ``totp-vps.waive/srv-03: rebuild``
itself when the stack config asks for those. Stack policies (sec-*) cannot be waived.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pulumi_policy as pp
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError

from agent import state as agent_state
from cloudinit import cloudconfig, hardening

PACK_NAME = "totp-vps"
PACK_VERSION = "0.1.0"
PACK_DESCRIPTION = "totp-vps: Hetzner servers whose SSH needs an SSH key AND a TOTP code."

FIREWALL = "hcloud:index/firewall:Firewall"
SERVER = "hcloud:index/server:Server"
STACK = "pulumi:pulumi:Stack"
TOTP_SERVER = "totp-vps:index:TotpServer"

WAIVER_PREFIX = "totp-vps.waive/"
WAIVED = "waived"

# The desired state (in the user-data) names the files the agent installs.
SSHD_STAGE = agent_state.DROPIN
PAM_STAGE = agent_state.PAM_SSHD
SSHD_DROPIN_DIR = "/etc/ssh/sshd_config.d/"

# Where secret material is expected by design, beyond properties listed in additionalSecretOutputs:
# (resource type, top-level property). The program exports these with Output.secret.
DESIGNATED_SECRET = frozenset({(STACK, "enrollment"), (TOTP_SERVER, "enrollment")})


# ---------------------------------------------------------------------------------------------------
# Rules: id, title, remedy, the resource types they apply to, and a check yielding problems.


@dataclass(frozen=True)
class Resource:
    """What a resource validator gets: CrossGuard's args, reduced to what the checks read."""

    type: str
    name: str
    props: Mapping[str, Any]
    ignore_changes: tuple[str, ...]
    additional_secret_outputs: tuple[str, ...]


Check = Callable[[Resource], Iterator[str]]


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    remedy: str
    types: frozenset[str]
    check: Check

    def message(self, problem: str) -> str:
        return f"{problem}. Remedy: {self.remedy}"


RULES: dict[str, Rule] = {}


def rule(id_: str, title: str, remedy: str, *types: str) -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        if id_ in RULES:
            raise ValueError(f"duplicate policy id {id_}")
        RULES[id_] = Rule(id_, title, remedy, frozenset(types), check)
        return check

    return register


# ---------------------------------------------------------------------------------------------------
# Firewall helpers. Hetzner ports are "22", "80-85" or "any" (or absent for icmp/gre/esp).


def _port_range(port: Any) -> tuple[int, int]:
    if port is None or str(port).strip() in ("", "any"):
        return 1, 65535
    low, _, high = str(port).partition("-")
    return int(low), int(high or low)


def _covers(rule_: Mapping[str, Any], protocol: str, port: int) -> bool:
    if rule_.get("protocol") != protocol:
        return False
    low, high = _port_range(rule_.get("port"))
    return low <= port <= high


def _is_anywhere(cidr: Any) -> bool:
    try:
        return ipaddress.ip_network(str(cidr), strict=False).prefixlen == 0
    except ValueError:
        return False


def _rules(r: Resource, direction: str) -> list[tuple[int, Mapping[str, Any]]]:
    return [(i, x) for i, x in enumerate(r.props.get("rules") or []) if x.get("direction") == direction]


@rule("fw-01", "No inbound SSH from the whole internet",
      "list your networks in allowedCidrs; to really open SSH to 0.0.0.0/0 or ::/0 set allowSshFromAnywhere: true "
      "(the component then labels the firewall totp-vps.waive/fw-01)", FIREWALL)
def world_open_ssh(r: Resource) -> Iterator[str]:
    for i, x in _rules(r, "in"):
        if x.get("protocol") == "tcp":
            wide = [str(c) for c in (x.get("sourceIps") or []) if _is_anywhere(c)]
            if wide:
                yield f"rules[{i}] opens TCP port {x.get('port')} to {', '.join(wide)}"


@rule("fw-02", "No inbound UDP 123 (NTP is outbound only)",
      "remove the inbound UDP rule covering port 123; the server's NTP client needs no inbound rule", FIREWALL)
def inbound_ntp(r: Resource) -> Iterator[str]:
    for i, x in _rules(r, "in"):
        if _covers(x, "udp", 123):
            yield f"rules[{i}] lets UDP port {x.get('port') or 'any'} in"


@rule("fw-03", "Inbound: only SSH (one TCP port) and ICMP",
      "remove the extra inbound rule, or waive it: add the label totp-vps.waive/fw-03: <reason> to the server's labels", FIREWALL)
def inbound_only_ssh(r: Resource) -> Iterator[str]:
    tcp_ports: set[str] = set()
    for i, x in _rules(r, "in"):
        protocol = x.get("protocol")
        if protocol == "icmp":
            continue
        if protocol == "tcp":
            low, high = _port_range(x.get("port"))
            if low != high:
                yield f"rules[{i}] opens the TCP port range {x.get('port') or 'any'}, not the single SSH port"
                continue
            tcp_ports.add(str(low))
            continue
        port = x.get("port")
        yield f"rules[{i}] lets {protocol}{f' port {port}' if port else ''} in"
    if len(tcp_ports) > 1:
        yield f"inbound TCP ports {', '.join(sorted(tcp_ports, key=int))}: only the SSH port may be open"


EGRESS_NEEDS = (("udp", 53, "DNS"), ("udp", 123, "NTP: TOTP needs a synced clock"), ("tcp", 443, "HTTPS"))


@rule("fw-04", "Egress rules, if any, keep DNS, NTP and HTTPS",
      "add outbound rules for udp/53, udp/123 and tcp/443 (restrictEgress: true adds the full preset)", FIREWALL)
def egress_keeps_basics(r: Resource) -> Iterator[str]:
    out = [x for _, x in _rules(r, "out")]
    if not out:
        return  # no outbound rule: Hetzner allows all egress
    for protocol, port, why in EGRESS_NEEDS:
        if not any(_covers(x, protocol, port) for x in out):
            yield f"outbound rules exist but none allows {protocol}/{port} ({why})"


# ---------------------------------------------------------------------------------------------------
# Server


@rule("srv-01", "Firewall attached at creation",
      "pass firewallIds to the server (TotpServer does); a firewall attached later leaves the first boot open",
      SERVER)
def firewall_attached(r: Resource) -> Iterator[str]:
    ids = r.props.get("firewallIds")
    if not ids or len(ids) == 0:
        yield "firewallIds is empty"


@rule("srv-02", "User-data present and secret",
      "create the server through TotpServer, which renders the user-data, wraps it in Output.secret and lists "
      "userData in additionalSecretOutputs", SERVER)
def user_data_secret(r: Resource) -> Iterator[str]:
    if "userData" not in r.additional_secret_outputs:
        yield "userData is not in additionalSecretOutputs, so the state would keep the TOTP seeds in plain text"
    user_data = r.props.get("userData")
    if not isinstance(user_data, str) or not user_data.startswith("#cloud-config\n"):
        yield "userData is missing or is not #cloud-config"


@rule("srv-03", "User-data changes ignored unless a rebuild is requested",
      "keep ignoreChanges [userData] (TotpServer does); to replace the server on purpose set rebuild: true "
      "for it, which labels it totp-vps.waive/srv-03", SERVER)
def user_data_ignored(r: Resource) -> Iterator[str]:
    if "userData" not in r.ignore_changes:
        yield "ignoreChanges lacks userData: a template upgrade would replace (destroy) the running server"


@rule("srv-04", "Image in the supported list",
      f"use one of {', '.join(sorted(hardening.IMAGES))} (cloudinit/hardening.py)", SERVER)
def supported_image(r: Resource) -> Iterator[str]:
    image = r.props.get("image")
    if image not in hardening.IMAGES:
        yield f"image {image!r} is not supported"


# ---------------------------------------------------------------------------------------------------
# sshd and PAM, parsed from the rendered user-data (what cloud-init will actually write).


@lru_cache(maxsize=64)
def _files(user_data: str) -> Mapping[str, str] | str:
    """path -> content of the files the first boot installs (the desired state's), or why it cannot be read."""
    try:
        return dict(cloudconfig.state_of(cloudconfig.read(user_data))["files"])
    except (ValueError, KeyError, TypeError) as exc:
        return f"user-data cannot be parsed ({type(exc).__name__})"


def _file(r: Resource, path: str) -> str | None:
    """Content of ``path`` in the user-data's write_files; yields nothing: callers report absence."""
    user_data = r.props.get("userData")
    files = _files(user_data) if isinstance(user_data, str) else "userData is missing"
    if isinstance(files, str):
        return None
    return files.get(path)


def sshd_settings(text: str) -> dict[str, str]:
    """lowercased directive -> value, global section only, FIRST occurrence wins (as in sshd)."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, _, value = line.partition(" ")
        key = key.lower()
        if key == "match":
            break
        out.setdefault(key, value.strip())
    return out


def _sshd(r: Resource) -> dict[str, str] | None:
    text = _file(r, SSHD_STAGE)
    return None if text is None else sshd_settings(text)


NO_SSHD = f"the user-data has no {SSHD_STAGE} (the sshd drop-in)"
NO_PAM = f"the user-data has no {PAM_STAGE} (the PAM sshd stack)"


@rule("sshd-01", "AuthenticationMethods requires publickey AND keyboard-interactive",
      "set 'AuthenticationMethods publickey,keyboard-interactive' in the drop-in", SERVER)
def auth_methods(r: Resource) -> Iterator[str]:
    s = _sshd(r)
    if s is None:
        yield NO_SSHD
        return
    value = s.get("authenticationmethods")
    if not value or value == "any":
        yield f"AuthenticationMethods is {value or 'unset'}: one factor is enough"
        return
    for chain in value.split():
        methods = {m.split(":", 1)[0] for m in chain.split(",")}
        if not {"publickey", "keyboard-interactive"} <= methods:
            yield f"AuthenticationMethods chain {chain!r} lacks publickey or keyboard-interactive"


@rule("sshd-02", "No password authentication",
      "set 'PasswordAuthentication no' and 'PermitEmptyPasswords no' and keep 'password' out of AuthenticationMethods",
      SERVER)
def no_passwords(r: Resource) -> Iterator[str]:
    s = _sshd(r)
    if s is None:
        yield NO_SSHD
        return
    if s.get("passwordauthentication") != "no":
        yield f"PasswordAuthentication is {s.get('passwordauthentication', 'unset (default yes)')}"
    if s.get("permitemptypasswords", "no") != "no":
        yield "PermitEmptyPasswords is not no"
    if "password" in re.split(r"[ ,]", s.get("authenticationmethods", "")):
        yield "AuthenticationMethods allows password"


@rule("sshd-03", "No root login", "set 'PermitRootLogin no'; admins log in as themselves and use sudo", SERVER)
def no_root(r: Resource) -> Iterator[str]:
    s = _sshd(r)
    if s is None:
        yield NO_SSHD
    elif s.get("permitrootlogin") != "no":
        yield f"PermitRootLogin is {s.get('permitrootlogin', 'unset (default prohibit-password)')}"


@rule("sshd-04", "UsePAM yes and keyboard-interactive on (the TOTP prompt)",
      "set 'UsePAM yes' and 'KbdInteractiveAuthentication yes' (this replaces dev-sec ssh-baseline's "
      "'ChallengeResponseAuthentication no', which would switch the TOTP prompt off)", SERVER)
def pam_on(r: Resource) -> Iterator[str]:
    s = _sshd(r)
    if s is None:
        yield NO_SSHD
        return
    if s.get("usepam") != "yes":
        yield f"UsePAM is {s.get('usepam', 'unset (default no)')}: keyboard-interactive would never ask for the code"
    # ChallengeResponseAuthentication is an alias of KbdInteractiveAuthentication: the first one read wins.
    kbd = next((v for k, v in s.items() if k in ("kbdinteractiveauthentication", "challengeresponseauthentication")), None)
    if kbd != "yes":
        yield f"KbdInteractiveAuthentication is {kbd or 'unset'}: the TOTP prompt is off"


@rule("sshd-05", "The drop-in sorts first (00-)",
      f"install the drop-in as {agent_state.DROPIN}: sshd keeps the first value it reads", SERVER)
def dropin_first(r: Resource) -> Iterator[str]:
    user_data = r.props.get("userData")
    try:
        written = cloudconfig.read(user_data).files if isinstance(user_data, str) else None
    except ValueError as exc:
        yield str(exc)
        return
    if written is None:
        yield "userData is missing"
        return
    for path in sorted(p for p in written if p.startswith(SSHD_DROPIN_DIR)):
        if not path[len(SSHD_DROPIN_DIR):].startswith("00-"):
            yield f"{path} does not sort first (name it 00-*.conf)"
    if agent_state.DROPIN not in written:
        yield f"no lockdown drop-in {agent_state.DROPIN} for the first boot"


CRYPTO = {
    "kexalgorithms": ("KexAlgorithms", hardening.KEX),
    "ciphers": ("Ciphers", hardening.CIPHERS),
    "macs": ("MACs", hardening.MACS),
    "hostkeyalgorithms": ("HostKeyAlgorithms", hardening.HOST_KEY_ALGORITHMS),
    "pubkeyacceptedalgorithms": ("PubkeyAcceptedAlgorithms", hardening.PUBKEY_ALGORITHMS),
}


@rule("sshd-06", "Crypto lists within the hardened set",
      f"use the lists from cloudinit/hardening.py (version {hardening.VERSION}); re-render the user-data", SERVER)
def hardened_crypto(r: Resource) -> Iterator[str]:
    s = _sshd(r)
    if s is None:
        yield NO_SSHD
        return
    image = r.props.get("image")
    for key, (directive, table) in CRYPTO.items():
        value = s.get(key)
        if not value:
            yield f"{directive} is unset, so sshd's defaults (with weaker algorithms) apply"
            continue
        if value[0] in "+-^":
            yield f"{directive} modifies sshd's default list ({value[0]}...) instead of replacing it"
            continue
        allowed = {name for name, _ in table}
        known = set(hardening.supported(table, image)) if image in hardening.IMAGES else allowed
        for name in value.split(","):
            if name not in allowed:
                yield f"{directive} allows {name}, which is outside the hardened set"
            elif name not in known:
                yield f"{directive} lists {name}, which the sshd of {image} does not know (sshd -t would fail)"


BASELINE = {
    # dev-sec ssh-baseline controls that apply unchanged: directive -> required value.
    "HostbasedAuthentication": "no",
    "IgnoreRhosts": "yes",
    "PermitUserEnvironment": "no",
    "StrictModes": "yes",
    "X11Forwarding": "no",
    "PermitTunnel": "no",
    "LogLevel": "VERBOSE",
}


@rule("sshd-07", "dev-sec ssh-baseline settings and limits",
      "restore the directive in the drop-in template (cloudinit/templates/sshd.conf.j2)", SERVER)
def baseline(r: Resource) -> Iterator[str]:
    s = _sshd(r)
    if s is None:
        yield NO_SSHD
        return
    for directive, want in BASELINE.items():
        have = s.get(directive.lower())
        if have != want:
            yield f"{directive} is {have or 'unset'}, want {want}"
    tries = s.get("maxauthtries", "6")
    if not tries.isdigit() or int(tries) > hardening.MAX_AUTH_TRIES:
        yield f"MaxAuthTries is {tries}, want <= {hardening.MAX_AUTH_TRIES}"


def pam_lines(text: str) -> list[list[str]]:
    return [line.split() for line in (raw.split("#", 1)[0].strip() for raw in text.splitlines()) if line]


def _pam(r: Resource) -> list[list[str]] | None:
    text = _file(r, PAM_STAGE)
    return None if text is None else pam_lines(text)


def _module(tokens: list[str]) -> str:
    return tokens[2].rsplit("/", 1)[-1] if len(tokens) > 2 else ""


def _auth(lines: list[list[str]]) -> list[list[str]]:
    return [t for t in lines if t[0].lstrip("-") == "auth"]


@rule("pam-01", "pam_google_authenticator required in the sshd auth stack",
      "keep 'auth required pam_google_authenticator.so' and no 'sufficient' or pam_permit auth line", SERVER)
def totp_required(r: Resource) -> Iterator[str]:
    lines = _pam(r)
    if lines is None:
        yield NO_PAM
        return
    auth = _auth(lines)
    if not any(_module(t) == "pam_google_authenticator.so" and t[1] in ("required", "requisite") for t in auth):
        yield "no 'auth required pam_google_authenticator.so' line"
    for t in auth:
        if t[1] == "sufficient" or _module(t) == "pam_permit.so" or "success=done" in " ".join(t[1:2]):
            yield f"auth line '{' '.join(t[:3])}' can let a login through without the code"


@rule("pam-02", "No nullok", "drop nullok: an admin without a TOTP file must be refused, not waved through", SERVER)
def no_nullok(r: Resource) -> Iterator[str]:
    lines = _pam(r)
    if lines is None:
        yield NO_PAM
        return
    for t in _auth(lines):
        if _module(t) == "pam_google_authenticator.so" and "nullok" in t[3:]:
            yield "pam_google_authenticator.so has nullok"


PASSWORD_STACKS = ("common-auth", "system-auth", "password-auth")


@rule("pam-03", "No pam_unix/common-auth in the sshd auth stack",
      "remove '@include common-auth' and pam_unix from /etc/pam.d/sshd's auth lines: sshd already checked the key",
      SERVER)
def no_password_stack(r: Resource) -> Iterator[str]:
    lines = _pam(r)
    if lines is None:
        yield NO_PAM
        return
    for t in lines:
        if t[0] == "@include" and len(t) > 1 and t[1] in PASSWORD_STACKS:
            yield f"'@include {t[1]}' adds a password prompt (pam_unix)"
    for t in _auth(lines):
        if _module(t) == "pam_unix.so":
            yield "auth uses pam_unix.so (a password prompt)"
        if t[1] in ("include", "substack") and len(t) > 2 and t[2] in PASSWORD_STACKS:
            yield f"auth {t[1]}s {t[2]} (a password prompt)"


# ---------------------------------------------------------------------------------------------------
# Secrets, by shape. Messages name the property path and the kind, never the value.

_BASE32_RUN = re.compile(r"(?<![A-Za-z0-9+/])[A-Z2-7]{32,}(?![A-Za-z0-9+/])")
_BASE32_GROUPS = re.compile(r"(?<![A-Za-z0-9])(?:[A-Z2-7]{4} ){7,}[A-Z2-7]{1,4}(?![A-Za-z0-9])")
_CODE = re.compile(r"(?<![0-9.:/-])[1-9][0-9]{7}(?![0-9.:/-])")
_CODE_ONLY = re.compile(r"^[1-9][0-9]{7}$")


def secret_kinds(value: str) -> set[str]:
    """What kinds of secret material ``value`` looks like it carries."""
    kinds = set()
    if "PRIVATE KEY-----" in value:
        kinds.add("a private key")
    if "otpauth://" in value:
        kinds.add("an otpauth:// URI (holds the TOTP seed)")
    if _BASE32_RUN.search(value) or _BASE32_GROUPS.search(value):
        kinds.add("a base32 TOTP seed")
    if len(_CODE.findall(value)) >= 2:
        kinds.add("a list of 8-digit backup codes")
    return kinds


def scan(tree: Any, path: str, unknown: list[str]) -> Iterator[tuple[str, set[str]]]:
    """(path, kinds) for every string leaf of a proxied property tree that looks secret.

    Unknown leaves are skipped and their paths collected in ``unknown``."""
    if isinstance(tree, Mapping):
        items: Iterator[tuple[str, Any]] = ((f"{path}.{k}" if path else str(k), k) for k in list(tree))
        getter: Callable[[Any], Any] = tree.__getitem__
    elif isinstance(tree, Sequence) and not isinstance(tree, str):
        items = ((f"{path}[{i}]", i) for i in range(len(tree)))
        getter = tree.__getitem__
    else:
        if isinstance(tree, str):
            kinds = secret_kinds(tree)
            if kinds:
                yield path, kinds
        return
    codes = 0
    for sub_path, key in items:
        try:
            value = getter(key)
        except UnknownValueError:
            unknown.append(sub_path)
            continue
        if isinstance(value, str) and _CODE_ONLY.match(value):
            codes += 1
        yield from scan(value, sub_path, unknown)
    if codes >= 2:
        yield path, {"a list of 8-digit backup codes"}


def _stack_scan(resources: Sequence[pp.PolicyResource], report: pp.ReportViolation, outputs: bool, remedy: str) -> None:
    unknown: list[str] = []
    for res in resources:
        if (res.resource_type == STACK) != outputs:
            continue
        declared = set(res.opts.additional_secret_outputs or [])
        for key in list(res.props):
            if key in declared or (res.resource_type, key) in DESIGNATED_SECRET:
                continue
            try:
                value = res.props[key]
            except UnknownValueError:
                unknown.append(f"{res.name}.{key}")
                continue
            for where, kinds in scan(value, key, unknown):
                what = "stack output" if outputs else f"{res.resource_type} {res.name}: property"
                report(f"{what} {where} carries {' and '.join(sorted(kinds))}. Remedy: {remedy}", res.urn)
    if unknown:
        # Values not known yet were not checked: say so (advisory) instead of passing them.
        raise UnknownValueError(UNKNOWN_STRING_VALUE, [f"{unknown[0]} (and {len(unknown) - 1} more)"])


STACK_RULES = {
    "sec-01": (
        "No stack output carries a seed, backup code or private key",
        "export secret material only inside the secret 'enrollment' output (Output.secret); "
        "read it with `pulumi stack output enrollment --show-secrets`",
        True,
    ),
    "sec-02": (
        "No non-secret property carries a seed, backup code or private key",
        "keep secret material in user-data (with userData in additionalSecretOutputs) or in provider secret outputs; "
        "never in labels, names, descriptions or component outputs other than 'enrollment'",
        False,
    ),
}


# ---------------------------------------------------------------------------------------------------
# CrossGuard glue


def _resource(args: pp.ResourceValidationArgs) -> Resource:
    return Resource(
        type=args.resource_type,
        name=args.name,
        props=args.props,
        ignore_changes=tuple(args.opts.ignore_changes or ()),
        additional_secret_outputs=tuple(args.opts.additional_secret_outputs or ()),
    )


def waivers(props: Mapping[str, Any]) -> dict[str, str]:
    """policy id -> reason, from the resource's ``totp-vps.waive/<id>`` labels."""
    labels = props.get("labels") or {}
    return {k[len(WAIVER_PREFIX):]: str(labels[k]) for k in list(labels) if str(k).startswith(WAIVER_PREFIX)}


def _validator(rule_: Rule) -> pp.ResourceValidation:
    def validate(args: pp.ResourceValidationArgs, report: pp.ReportViolation) -> None:
        if args.resource_type not in rule_.types:
            return
        if rule_.id in waivers(args.props):
            return  # reported by the advisory 'waived' policy instead
        # Report as found: a value unknown at preview stops the check (advisory) but keeps what it found.
        for problem in rule_.check(_resource(args)):
            report(rule_.message(problem), None)

    validate.__name__ = f"validate_{rule_.id.replace('-', '_')}"
    return validate


def validate_waived(args: pp.ResourceValidationArgs, report: pp.ReportViolation) -> None:
    """Advisory notes for waived violations, naming the label that waived them."""
    if args.resource_type not in (FIREWALL, SERVER):
        return
    found = waivers(args.props)
    r = _resource(args)
    for id_, reason in sorted(found.items()):
        label = f"{WAIVER_PREFIX}{id_}={reason}"
        if id_ not in RULES:
            report(f"label {label} names no policy of this pack (policies: {', '.join(RULES)})", None)
            continue
        if r.type in RULES[id_].types:
            for problem in RULES[id_].check(r):
                report(f"{id_} waived by label {label}: {problem}", None)


def _stack_validator(outputs: bool, remedy: str) -> pp.StackValidation:
    def validate(args: pp.StackValidationArgs, report: pp.ReportViolation) -> None:
        _stack_scan(args.resources, report, outputs, remedy)

    return validate


def build_policies() -> list[pp.Policy]:
    """Every policy of the pack, mandatory by default (pack config ``enforcementLevel`` overrides)."""
    policies: list[pp.Policy] = [
        pp.ResourceValidationPolicy(
            name=r.id,
            description=r.title,
            validate=_validator(r),
            enforcement_level=pp.EnforcementLevel.MANDATORY,
            remediation_steps=r.remedy,
        )
        for r in RULES.values()
    ]
    for id_, (title, remedy, outputs) in STACK_RULES.items():
        policies.append(
            pp.StackValidationPolicy(
                name=id_,
                description=title,
                validate=_stack_validator(outputs, remedy),
                enforcement_level=pp.EnforcementLevel.MANDATORY,
                remediation_steps=remedy,
            )
        )
    policies.append(
        pp.ResourceValidationPolicy(
            name=WAIVED,
            description="Waived violations (labels totp-vps.waive/<policy id>)",
            validate=validate_waived,
            enforcement_level=pp.EnforcementLevel.ADVISORY,
            remediation_steps="review the waiver; remove the label to enforce the policy again",
        )
    )
    return policies


def titles() -> dict[str, tuple[str, str]]:
    """policy id -> (title, remedy), for documentation and the CLI."""
    out = {r.id: (r.title, r.remedy) for r in RULES.values()}
    out.update({id_: (title, remedy) for id_, (title, remedy, _) in STACK_RULES.items()})
    return out
