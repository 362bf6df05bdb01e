"""The totp-vps policies as plain validators, and the CrossGuard policy objects built from them.

Importing this module starts nothing: ``policy/__main__.py`` hands :func:`build_policies` to a
``PolicyPack`` (which serves the engine forever), and ``vpsctl check`` hands the same list to the SDK's
analyzer servicer in-process. Either way every validator sees what CrossGuard gives it:

- ``args.props`` in camelCase wire names, with the SDK's unknown-checking proxy: reading a value that
  is unknown at preview raises ``UnknownValueError``, which the analyzer turns into an advisory
  "can't run policy ... during preview" instead of a pass. Validators never catch it.
- Which values the engine sent as secrets: the analyzer unwraps secret markers before any policy runs,
  so the pack records them first (policy/secrecy.py). "Secret" below means marked by the engine
  (``Output.secret``, a provider's secret output, ``additionalSecretOutputs`` in the state), never a
  property's name: a regression that drops ``Output.secret`` is caught wherever the value goes.
- The server's user-data as cloud-init reads it (cloudinit.cloudconfig): its structure is pinned
  (srv-05), and the desired state it carries is judged the way sshd, Linux-PAM and sudo on the image
  will read it (cloudinit.gate, one judgement shared with ``vpsctl sync`` and the renderer).

Waivers: a Hetzner label ``totp-vps.waive/<policy id>: <reason>`` on the resource turns that policy's
violations on that resource into advisory notes of the ``waived`` policy, naming the label. The
component sets ``totp-vps.waive/fw-01: allowSshFromAnywhere`` and ``totp-vps.waive/srv-03: rebuild``
itself when the stack config asks for those. Stack policies cannot be waived.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pulumi_policy as pp
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError

from agent import state as agent_state
from cloudinit import cloudconfig, gate, hardening, model
from policy import secrecy

PACK_NAME = "totp-vps"
PACK_VERSION = "0.2.0"
PACK_DESCRIPTION = "totp-vps: Hetzner servers whose SSH needs an SSH key AND a TOTP code."

FIREWALL = "hcloud:index/firewall:Firewall"
SERVER = "hcloud:index/server:Server"
STACK = "pulumi:pulumi:Stack"
TOTP_SERVER = "totp-vps:index:TotpServer"

WAIVER_PREFIX = "totp-vps.waive/"
WAIVED = "waived"


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
    level: pp.EnforcementLevel = pp.EnforcementLevel.MANDATORY

    def message(self, problem: str) -> str:
        return f"{problem}. Remedy: {self.remedy}"


RULES: dict[str, Rule] = {}


def rule(id_: str, title: str, remedy: str, *types: str,
         level: pp.EnforcementLevel = pp.EnforcementLevel.MANDATORY) -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        if id_ in RULES:
            raise ValueError(f"duplicate policy id {id_}")
        RULES[id_] = Rule(id_, title, remedy, frozenset(types), check, level)
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


def _networks(values: Iterable[Any]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(str(value), strict=False))
        except ValueError:
            continue  # the provider refuses it; nothing is opened
    return out


def _rules(r: Resource, direction: str) -> list[tuple[int, Mapping[str, Any]]]:
    return [(i, x) for i, x in enumerate(r.props.get("rules") or []) if x.get("direction") == direction]


@rule("fw-01", "No inbound SSH from the whole internet",
      "list your networks in allowedCidrs; to really open SSH to 0.0.0.0/0 or ::/0 set allowSshFromAnywhere: true "
      "(the component then labels the firewall totp-vps.waive/fw-01)", FIREWALL)
def world_open_ssh(r: Resource) -> Iterator[str]:
    # By coverage of the public address space, over every inbound TCP rule together: 0.0.0.0/1 plus
    # 128.0.0.0/1 in two rules is the whole internet as much as 0.0.0.0/0 is (cloudinit.model.public_share).
    sources: dict[str, list[Any]] = {}
    for _i, x in _rules(r, "in"):
        if x.get("protocol") == "tcp":
            sources.setdefault(str(x.get("port")), []).extend(x.get("sourceIps") or [])
    for port, cidrs in sources.items():
        for version, share in sorted(model.public_share(_networks(cidrs)).items()):
            if share >= model.ANYWHERE_SHARE:
                yield f"inbound TCP port {port} is open to {share:.0%} of the public IPv{version} internet"


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
    if "userData" in r.props and not secrecy.under("userData", secrecy.secret_paths(r.props)):
        yield "userData is not a secret (Output.secret), so the engine would store the TOTP seeds in plain text"
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


@rule("srv-05", "User-data is exactly what the design writes",
      "render the user-data with TotpServer (cloudinit/render.py) and do not add to it: cloud-init acts on every "
      "key, command and file in it", SERVER)
def user_data_structure(r: Resource) -> Iterator[str]:
    user_data = r.props.get("userData")
    if isinstance(user_data, str):
        yield from _structure(user_data)


@lru_cache(maxsize=64)
def _structure(user_data: str) -> tuple[str, ...]:
    return tuple(cloudconfig.judge(user_data))


# ---------------------------------------------------------------------------------------------------
# sshd, PAM and sudo: the desired state in the user-data, judged as the image's tools will read it.


@lru_cache(maxsize=64)
def _judged(user_data: str, image: str) -> Mapping[str, tuple[str, ...]] | None:
    """policy id -> problems of the desired state the first boot applies (None: there is none to judge)."""
    try:
        state = cloudconfig.state_of(cloudconfig.read(user_data))
    except (ValueError, KeyError, TypeError):
        return None
    out: dict[str, list[str]] = {}
    for policy, problem in gate.judge_state(state, image):
        out.setdefault(policy, []).append(problem)
    return {k: tuple(v) for k, v in out.items()}


def _gate_check(policy: str) -> Check:
    def check(r: Resource) -> Iterator[str]:
        user_data, image = r.props.get("userData"), r.props.get("image")
        if not isinstance(user_data, str) or image not in hardening.IMAGES:
            return  # srv-02 / srv-04 report those
        judged = _judged(user_data, image)
        if judged is not None:  # no desired state cloud-init and the agent would apply: srv-05 says why
            yield from judged.get(policy, ())

    return check


GATE_RULES = {
    "sshd-01": ("Every admin, from every address, needs publickey AND keyboard-interactive",
                "keep 'AuthenticationMethods publickey,keyboard-interactive' and 'PubkeyAuthentication yes' for every "
                "admin in the drop-in, globally and in every Match block that can apply (and let every admin in)"),
    "sshd-02": ("No password authentication for anyone",
                "set 'PasswordAuthentication no' and 'PermitEmptyPasswords no', in Match blocks too"),
    "sshd-03": ("No root login; only the stack's accounts",
                "set 'PermitRootLogin no' and keep AllowUsers to exactly the stack's admins and service accounts"),
    "sshd-04": ("UsePAM yes and keyboard-interactive on (the TOTP prompt)",
                "set 'UsePAM yes' and 'KbdInteractiveAuthentication yes' (dev-sec ssh-baseline's "
                "'ChallengeResponseAuthentication no' would switch the TOTP prompt off)"),
    "sshd-05": ("sshd reads the drop-in first, accepts it, listens on one port with the pinned key",
                f"install the design's drop-in as {agent_state.DROPIN} alone: no Include, one Port, only the pinned "
                "HostKey, no Match on local addresses"),
    "sshd-06": ("Crypto lists within the hardened set",
                f"use the lists from cloudinit/hardening.py (version {hardening.VERSION}); re-render the user-data"),
    "sshd-07": ("dev-sec ssh-baseline settings, limits, forwarding and key sources",
                "restore the directive in the drop-in template (cloudinit/templates/sshd.conf.j2): keys only from the "
                "agent's root-owned files, forwarding only as allowForwarding says"),
    "pam-01": ("The sshd auth stack cannot succeed without pam_google_authenticator",
               "keep 'auth required pam_google_authenticator.so' with nothing ahead of it that can end the stack "
               "(sufficient, [success=done], ok, jumps) and no other auth module"),
    "pam-02": ("No nullok (or other option that waves users through)",
               "drop nullok, grace_period, secret=, user= and the like: an admin without a TOTP file is refused"),
    "pam-03": ("No password module in the sshd auth stack",
               "remove '@include common-auth' and pam_unix from /etc/pam.d/sshd's auth lines: sshd already checked the key"),
    "pam-04": ("sudo's auth stack needs a code of the admin's sudo seed",
               "keep /etc/pam.d/sudo and sudo-i as the design writes them (cloudinit/templates/pam-sudo.j2)"),
    "sudo-01": ("sudo rules exactly as each account's sudo setting says",
                "keep /etc/sudoers.d/totp-vps as rendered: nopasswd, totp and none per admin, exact commands per "
                "service account, no Defaults, aliases or includes"),
    "svc-02": ("Service accounts: key alone only from their networks, no terminal, no forwarding",
               "keep the design's 'Match User NAME Address NETWORKS' block and AllowUsers NAME@NETWORK entries"),
    "svc-03": ("No root shell for a service account",
               "list only the exact programs the automation needs in sudoCommands (no shells, interpreters, editors, "
               "pagers)"),
}
for _id, (_title, _remedy) in GATE_RULES.items():
    rule(_id, _title, _remedy, SERVER)(_gate_check(_id))


@rule("svc-01", "Service accounts are exempt from the code (advisory, never a silent pass)",
      "review each key-only account: its networks, forced command and sudo commands", SERVER,
      level=pp.EnforcementLevel.ADVISORY)
def service_accounts(r: Resource) -> Iterator[str]:
    user_data = r.props.get("userData")
    if not isinstance(user_data, str):
        return
    try:
        state = cloudconfig.state_of(cloudconfig.read(user_data))
    except (ValueError, KeyError, TypeError):
        return  # srv-05 reports it
    for account in state["serviceAccounts"]:
        command = account.get("command") or "any command (no forced command)"
        yield (f"service account {account['name']} logs in with its key alone (no TOTP) from "
               f"{', '.join(account['fromCidrs'])}, runs {command}")


# ---------------------------------------------------------------------------------------------------
# Stack policies: joins across resources, and secrets wherever they go.


def _ssh_sources(server: pp.PolicyResource) -> tuple[int, list[Any]]:
    """(firewall ids the server names, the inbound TCP sources of this stack's firewalls it depends on)."""
    ids = server.props.get("firewallIds") or []
    firewalls = [d for d in server.property_dependencies.get("firewallIds", []) if d.resource_type == FIREWALL]
    sources = [c for fw in firewalls for x in (fw.props.get("rules") or [])
               if x.get("direction") == "in" and x.get("protocol") == "tcp" for c in (x.get("sourceIps") or [])]
    return len(ids) - len(firewalls), sources


def _foreign_firewalls(resources: Sequence[pp.PolicyResource], report: pp.ReportViolation) -> None:
    for res in resources:
        if res.resource_type == SERVER:
            foreign, _ = _ssh_sources(res)
            if foreign > 0:
                report(f"server {res.name}: {foreign} of its firewallIds name no firewall of this stack. Remedy: "
                       "attach only the stack's firewalls (TotpServer does); a firewall managed elsewhere can change "
                       "under the stack", res.urn)


def _service_networks(resources: Sequence[pp.PolicyResource], report: pp.ReportViolation) -> None:
    for res in resources:
        if res.resource_type != SERVER or res.parent is None or res.parent.resource_type != TOTP_SERVER:
            continue
        state = res.parent.props.get("desiredState")
        if not isinstance(state, Mapping):
            continue
        _, sources = _ssh_sources(res)
        allowed = _networks(sources)
        for account in state.get("serviceAccounts") or []:
            nets = _networks(account.get("fromCidrs") or [])
            if allowed and model.covers(nets, allowed):
                report(f"server {res.name}: service account {account.get('name')} may come from every network the "
                       "firewall lets reach SSH. Remedy: give fromCidrs only the automation's own hosts, narrower than "
                       "allowedCidrs", res.urn)


# Secrets, by shape and by value. Messages name the property path and the kind, never the value.
_BASE32_RUN = re.compile(r"(?<![A-Za-z0-9+/])(?:[A-Z2-7]{32,}|[a-z2-7]{32,})(?![A-Za-z0-9+/])")
_BASE32_GROUPS = re.compile(r"(?<![A-Za-z0-9])(?:[A-Z2-7]{4} ){7,}[A-Z2-7]{1,4}(?![A-Za-z0-9])", re.IGNORECASE)
# A code by its shape stands on its own: not inside a hex digest (a serial, a fingerprint), an address or a path.
_CODE = re.compile(r"(?<![0-9A-Za-z.:/-])[1-9][0-9]{7}(?![0-9A-Za-z.:/-])")
_CODE_ONLY = re.compile(r"^[1-9][0-9]{7}$")
_BASE32_SEED = re.compile(r"[A-Z2-7]{26,128}=*")


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


@dataclass
class Known:
    """The stack's own secret values, in every spelling a leak might use."""

    spellings: dict[str, str]
    """spelling -> what it is (never the spelling itself in a message)."""
    codes: set[str]

    def kinds(self, value: str) -> set[str]:
        found = {kind for spelling, kind in self.spellings.items() if spelling in value}
        if any(code in value for code in self.codes):  # this stack's own codes, glued to anything
            found.add("a backup code of this stack")
        return found


def _seed_spellings(raw: bytes) -> dict[str, str]:
    b32 = base64.b32encode(raw).decode()
    spelled = {b32.rstrip("="): "base32", b32.rstrip("=").lower(): "base32 (lower case)", raw.hex(): "hex",
               raw.hex().upper(): "hex", base64.b64encode(raw).decode().rstrip("="): "base64",
               base64.urlsafe_b64encode(raw).decode().rstrip("="): "base64"}
    return {s: f"a TOTP seed of this stack ({how})" for s, how in spelled.items()}


def known_secrets(resources: Sequence[pp.PolicyResource]) -> Known:
    """Every seed and backup code the stack holds as a secret: random bytes and base32 seeds under a secret
    mark, and 8-digit codes on their own lines (TOTP files, code lists) inside secret values."""
    known = Known({}, set())
    for res in resources:
        marked = secrecy.secret_paths(res.props)
        for path, value in _leaves(res.props, ""):
            if not secrecy.under(path, marked) or not isinstance(value, str):
                continue
            candidates: list[bytes] = []
            if res.resource_type == "random:index/randomBytes:RandomBytes" and path == "base64":
                with _quiet():
                    candidates.append(base64.b64decode(value))
            for token in _BASE32_SEED.findall(value):
                with _quiet():
                    candidates.append(base64.b32decode(token + "=" * (-len(token) % 8)))
            for raw in candidates:
                if len(raw) >= hardening.SEED_BYTES // 2:
                    known.spellings.update(_seed_spellings(raw[: hardening.SEED_BYTES]))
                    known.spellings.update(_seed_spellings(raw))
            known.codes |= {line.strip() for line in value.splitlines() if _CODE_ONLY.match(line.strip())}
            if _CODE_ONLY.match(value):
                known.codes.add(value)
    return known


class _quiet:
    """Ignore a value that does not decode (it is then no seed)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        return kind is not None and issubclass(kind, (ValueError, binascii.Error))


def _leaves(tree: Any, path: str, unknown: list[str] | None = None) -> Iterator[tuple[str, Any]]:
    """(path, value) of every leaf of a (proxied) property tree; unknown leaves collected in ``unknown``."""
    if isinstance(tree, Mapping):
        items: Iterable[tuple[str, Any]] = ((f"{path}.{k}" if path else str(k), k) for k in list(tree) if k != secrecy.KEY)
    elif isinstance(tree, Sequence) and not isinstance(tree, str):
        items = ((f"{path}[{i}]", i) for i in range(len(tree)))
    else:
        yield path, tree
        return
    for sub_path, key in items:
        try:
            value = tree[key]
        except UnknownValueError:
            if unknown is not None:
                unknown.append(sub_path)
            continue
        yield from _leaves(value, sub_path, unknown)


def scan(tree: Any, path: str, unknown: list[str], known: Known | None = None,
         secrets: Sequence[str] = ()) -> Iterator[tuple[str, set[str]]]:
    """(path, kinds) for every string leaf of a proxied property tree that looks secret and is not under a
    secret mark; a mapping or list holding two or more bare 8-digit codes counts as a code list."""
    codes: dict[str, int] = {}
    for where, value in _leaves(tree, path, unknown):
        if secrets and secrecy.under(where, secrets):
            continue
        if not isinstance(value, str):
            continue
        kinds = secret_kinds(value) | (known.kinds(value) if known else set())
        if kinds:
            yield where, kinds
        if _CODE_ONLY.match(value):
            parent = re.sub(r"(\[[0-9]+\]|\.[^.\[]+)$", "", where)
            codes[parent] = codes.get(parent, 0) + 1
    for parent, count in codes.items():
        if count >= 2:
            yield parent, {"a list of 8-digit backup codes"}


def _stack_scan(resources: Sequence[pp.PolicyResource], report: pp.ReportViolation, outputs: bool, remedy: str) -> None:
    unknown: list[str] = []
    known = known_secrets(resources)
    for res in resources:
        if (res.resource_type == STACK) != outputs:
            continue
        marked = secrecy.secret_paths(res.props)
        for where, kinds in scan(res.props, "", unknown, known, marked):
            what = "stack output" if outputs else f"{res.resource_type} {res.name}: property"
            report(f"{what} {where} carries {' and '.join(sorted(kinds))} without being secret. Remedy: {remedy}", res.urn)
    if unknown:
        # Values not known yet were not checked: say so (advisory) instead of passing them.
        raise UnknownValueError(UNKNOWN_STRING_VALUE, [f"{unknown[0]} (and {len(unknown) - 1} more)"])


STACK_RULES: dict[str, tuple[str, str, Callable[[Sequence[pp.PolicyResource], pp.ReportViolation], None]]] = {
    "sec-01": (
        "No stack output carries a seed, backup code or private key unless it is secret",
        "export secret material only with Output.secret (the 'enrollment' output is); read it with "
        "`pulumi stack output enrollment --show-secrets`",
        lambda resources, report: _stack_scan(resources, report, True, STACK_RULES["sec-01"][1]),
    ),
    "sec-02": (
        "No property carries a seed, backup code or private key unless it is secret",
        "wrap secret material in Output.secret (user-data, converge stdin) or keep it in provider secret outputs; "
        "never in labels, names, descriptions or plain component outputs",
        lambda resources, report: _stack_scan(resources, report, False, STACK_RULES["sec-02"][1]),
    ),
    "srv-06": (
        "Servers use only this stack's firewalls",
        "attach the stack's firewalls (TotpServer does)",
        _foreign_firewalls,
    ),
    "svc-04": (
        "Service accounts come from networks narrower than the admins'",
        "give fromCidrs only the automation's own hosts",
        _service_networks,
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


def _stack_validator(check: Callable[[Sequence[pp.PolicyResource], pp.ReportViolation], None]) -> pp.StackValidation:
    def validate(args: pp.StackValidationArgs, report: pp.ReportViolation) -> None:
        check(args.resources, report)

    return validate


def build_policies() -> list[pp.Policy]:
    """Every policy of the pack, mandatory unless advisory by design (pack config ``enforcementLevel`` overrides)."""
    secrecy.install()
    policies: list[pp.Policy] = [
        pp.ResourceValidationPolicy(
            name=r.id,
            description=r.title,
            validate=_validator(r),
            enforcement_level=r.level,
            remediation_steps=r.remedy,
        )
        for r in RULES.values()
    ]
    for id_, (title, remedy, check) in STACK_RULES.items():
        policies.append(
            pp.StackValidationPolicy(
                name=id_,
                description=title,
                validate=_stack_validator(check),
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
