"""Gates that cannot be talked round: tampered desired states and user-data, written from the real tools'
grammar, each caught by its named policy through CrossGuard's analyzer path, refused by `vpsctl sync`
before it signs, and (where the change would reach sshd or PAM on a server) refused by the agent on a
loopback server that runs the real sshd and libpam.

Every variant is one class of the ways a gate can be passed while the second factor is gone: PAM lines
that end the stack early, options that wave users through, password modules; sshd Match blocks,
separators and case, keywords that accumulate; sudo rules; service-account limits; the user-data's own
structure; the whole internet in pieces; secrets outside secret marks. Each class has at least three
variants, and a control per path shows the untampered state passes.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from configs import Fleet, make_fleet
from conftest import require_root, require_tool
from pulumi.runtime import rpc
from sshd_harness import Server, new_key, running_server

from agent import state as st
from cloudinit import cloudconfig, gate, render, stackconfig
from cloudinit.model import ConfigError, ServiceAccount
from components import mockengine
from components.mockengine import ProgramRun, Registration
from policy import offline
from vpsctl import sshsig, sync

State = dict[str, Any]
GA = "pam_google_authenticator.so"
GA_LINE = f"auth       required     {GA}"
SERVER_TYPE = "hcloud:index/server:Server"


# ------------------------------------------------------------------------------------------- edits


def in_file(path: str, edit: Callable[[str], str]) -> Callable[[State], None]:
    def change(state: State) -> None:
        before = state["files"][path]
        state["files"][path] = edit(before)
        assert state["files"][path] != before, f"the edit of {path} did not apply"

    return change


def before_match_all(block: str) -> Callable[[State], None]:
    """Insert ``block`` before the drop-in's trailing ``Match all`` (sshd keeps the first value it reads)."""
    return in_file(st.DROPIN, lambda t: t.replace("\nMatch all\n", f"\n{block}\nMatch all\n", 1))


def prepend(path: str, text: str) -> Callable[[State], None]:
    return in_file(path, lambda t: text + t)


def pam_before_code(path: str, line: str) -> Callable[[State], None]:
    return in_file(
        path, lambda t: re.sub(rf"(?m)^(auth +required +{re.escape(GA)})", lambda m: f"{line}\n{m.group(1)}", t, count=1)
    )


def sub(path: str, old: str, new: str) -> Callable[[State], None]:
    return in_file(path, lambda t: t.replace(old, new, 1))


def both(*edits: Callable[[State], None]) -> Callable[[State], None]:
    def change(state: State) -> None:
        for edit in edits:
            edit(state)

    return change


@dataclass(frozen=True)
class Variant:
    kind: str  # the class of bypass
    policy: str  # the policy that must catch it
    label: str
    edit: Callable[[State], None]
    agent: bool = True
    """The agent refuses it on the server too, where it asks the real sshd and libpam. False where the real tools'
    answer shows no way in yet and only the design's stricter reading refuses it, at signing time: sudoers
    meaning (the agent only runs visudo -c), options whose effect needs a history of logins (grace_period,
    allow_readonly), nullok on a stack where it alone sets no result (PAM still refuses a wrong code and a
    missing file), and algorithm lists (the agent does not carry the hardening data)."""


SUDO = st.PAM_SUDO[0]
DROPIN, PAM = st.DROPIN, st.PAM_SSHD
VARIANTS = [
    # PAM: a control that can end the auth stack with success before (or without) the code.
    Variant(
        "pam-early-end",
        "pam-01",
        "[success=done] permit ahead",
        pam_before_code(PAM, "auth [success=done default=ignore] pam_permit.so"),
    ),
    Variant("pam-early-end", "pam-01", "sufficient permit ahead", pam_before_code(PAM, "auth sufficient pam_permit.so")),
    Variant(
        "pam-early-end",
        "pam-01",
        "a jump over the code, then permit",
        both(
            pam_before_code(PAM, "auth [success=1 default=ignore] pam_permit.so"),
            sub(PAM, "account    required     pam_nologin.so", "auth required pam_permit.so\naccount required pam_nologin.so"),
        ),
    ),
    Variant(
        "pam-early-end",
        "pam-01",
        "a failed code ignored",
        sub(PAM, GA_LINE, f"AUTH [ success = ok auth_err = ignore default = bad ] {GA}\nauth required pam_permit.so"),
    ),
    Variant(
        "pam-early-end",
        "pam-01",
        "'-' optional module that may return anything",
        pam_before_code(PAM, "-auth sufficient pam_exec.so /bin/true"),
    ),
    Variant("pam-early-end", "pam-01", "a continued line", pam_before_code(PAM, "auth \\\n   sufficient \\\n\tpam_permit.so")),
    # PAM: options of the module that let someone in without a valid code.
    Variant("pam-options", "pam-02", "nullok", sub(PAM, GA_LINE, f"{GA_LINE} nullok"), agent=False),
    Variant("pam-options", "pam-02", "a secret file from elsewhere", sub(PAM, GA_LINE, f"{GA_LINE} secret=/tmp/${{USER}}")),
    Variant("pam-options", "pam-02", "grace_period", sub(PAM, GA_LINE, f"{GA_LINE} grace_period=86400"), agent=False),
    Variant("pam-options", "pam-02", "allow_readonly", sub(PAM, GA_LINE, f"{GA_LINE} allow_readonly"), agent=False),
    # PAM: a password prompt in the sshd auth stack.
    Variant("pam-password", "pam-03", "@include common-auth", pam_before_code(PAM, "@include common-auth")),
    Variant("pam-password", "pam-03", "auth include common-auth", pam_before_code(PAM, "auth include common-auth")),
    Variant("pam-password", "pam-03", "pam_unix optional", pam_before_code(PAM, "auth optional pam_unix.so")),
    # sudo's stack: the code of the sudo seed.
    Variant("sudo-pam", "pam-04", "sufficient permit ahead", pam_before_code(SUDO, "auth sufficient pam_permit.so")),
    Variant("sudo-pam", "pam-04", "nullok", sub(SUDO, "user=root", "user=root nullok"), agent=False),
    Variant(
        "sudo-pam",
        "pam-04",
        "common-auth (a password, none is set: pam_unix nullok)",
        pam_before_code(SUDO, "@include common-auth"),
    ),
    # sshd: a Match block that drops the second factor for someone, somewhere.
    Variant(
        "sshd-match",
        "sshd-01",
        "Match Address",
        before_match_all("Match Address 203.0.113.0/24\n\tAuthenticationMethods publickey"),
    ),
    Variant("sshd-match", "sshd-01", "Match User", before_match_all("Match User bob\n\tAuthenticationMethods publickey")),
    Variant(
        "sshd-match",
        "sshd-01",
        "Match Group",
        before_match_all(f"Match Group {st.ADMIN_GROUP}\n\tAuthenticationMethods publickey"),
    ),
    Variant(
        "sshd-match",
        "sshd-01",
        "Match Address wildcard",
        before_match_all("Match Address 10.*\n\tAuthenticationMethods publickey"),
    ),
    Variant(
        "sshd-match",
        "sshd-02",
        "passwords for one network",
        before_match_all("Match Address 203.0.113.0/24\n\tPasswordAuthentication yes\n\tAuthenticationMethods password"),
    ),
    # sshd: who may log in at all, and whether the code prompt exists.
    Variant(
        "sshd-access", "sshd-03", "root for one network", before_match_all("Match Address 203.0.113.0/24\n\tPermitRootLogin yes")
    ),
    Variant("sshd-access", "sshd-03", "a stranger in AllowUsers", sub(DROPIN, "AllowUsers ", "AllowUsers mallory ")),
    Variant("sshd-access", "sshd-03", "anyone from one network", sub(DROPIN, "AllowUsers ", "AllowUsers *@203.0.113.0/24 ")),
    Variant(
        "sshd-access",
        "sshd-04",
        "no code prompt for one user",
        before_match_all("Match User bob\n\tKbdInteractiveAuthentication no"),
    ),
    Variant(
        "sshd-access",
        "sshd-04",
        "the old alias, for one network",
        before_match_all("Match Address 203.0.113.0/24\n\tChallengeResponseAuthentication no"),
    ),
    # sshd: its own syntax (separators, case, first value wins, accumulating keywords).
    Variant(
        "sshd-syntax", "sshd-01", "lower case and '='", before_match_all("match user alice\n\tauthenticationmethods=publickey")
    ),
    Variant(
        "sshd-syntax",
        "sshd-01",
        "tabs, upper case, quotes",
        before_match_all('MATCH\tADDRESS\t"203.0.113.0/24"\n\tAUTHENTICATIONMETHODS\t"publickey"'),
    ),
    Variant("sshd-syntax", "sshd-07", "a global line read first", prepend(DROPIN, "PermitUserEnvironment=yes\n")),
    Variant("sshd-syntax", "sshd-07", "lower case and a tab, read first", prepend(DROPIN, "strictmodes\tno\n")),
    Variant(
        "sshd-syntax", "sshd-05", "Port accumulates", in_file(DROPIN, lambda t: t.replace("\nPort ", "\nPort=2200\nPort ", 1))
    ),
    Variant("sshd-syntax", "sshd-06", "a weak algorithm added to the default", prepend(DROPIN, "MACs +hmac-sha1\n"), agent=False),
    # Service accounts: the key alone, but only from their networks, with no terminal.
    Variant("service", "svc-02", "let in from anywhere", sub(DROPIN, "AllowUsers ", "AllowUsers deploy ")),
    Variant("service", "svc-02", "a terminal", sub(DROPIN, "\tPermitTTY no\n", "\tPermitTTY yes\n")),
    Variant(
        "service", "svc-02", "no forced command", in_file(DROPIN, lambda t: re.sub(r"\tForceCommand [^\n]*\n", "", t, count=1))
    ),
    # sudo rules: only the design's forms, each as the account's setting says.
    Variant(
        "sudoers",
        "sudo-01",
        "NOPASSWD for a sudo: totp admin",
        sub(st.SUDOERS, "bob ALL=(ALL:ALL) ALL", "bob ALL=(ALL:ALL) NOPASSWD: ALL"),
        agent=False,
    ),
    Variant(
        "sudoers",
        "sudo-01",
        "Defaults !authenticate",
        in_file(st.SUDOERS, lambda t: t + "Defaults:bob !authenticate\n"),
        agent=False,
    ),
    Variant("sudoers", "sudo-01", "an #include", in_file(st.SUDOERS, lambda t: t + "#include /home/bob/sudoers\n"), agent=False),
    Variant(
        "sudoers",
        "svc-03",
        "a root shell for a service account",
        in_file(
            st.SUDOERS, lambda t: re.sub(r"(?m)^deploy ALL=\(root\) NOPASSWD: .*$", "deploy ALL=(root) NOPASSWD: /bin/bash", t)
        ),
        agent=False,
    ),
]
# A control: the state as rendered passes every gate.
KINDS = sorted({v.kind for v in VARIANTS})


def variant_params(only_agent: bool = False) -> list[Any]:
    return [pytest.param(v, id=f"{v.kind}: {v.label}") for v in VARIANTS if v.agent or not only_agent]


def test_every_class_has_three_variants() -> None:
    for kind in KINDS:
        assert sum(v.kind == kind for v in VARIANTS) >= 3, kind


# ------------------------------------------------------------------------------- the gate itself


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    _, deploy = new_key("deploy@ci")
    account = ServiceAccount(
        name="deploy",
        ssh_keys=(deploy,),
        from_cidrs=("127.0.0.2/32",),
        command="/usr/bin/id",
        sudo_commands=("/usr/bin/systemctl restart app",),
    )
    return make_fleet(("alice", "bob"), admin_options={"bob": {"sudo": "totp"}}, service_accounts=(account,))


@pytest.fixture(scope="module")
def state(fleet: Fleet) -> State:
    return cloudconfig.state_of(cloudconfig.read(fleet.user_data))


def tampered(state: State, variant: Variant) -> State:
    bad = copy.deepcopy(state)
    variant.edit(bad)
    return st.validate(bad)


def test_the_rendered_state_passes_the_gate(state: State) -> None:
    assert gate.judge_state(state, "debian-12") == []


@pytest.mark.parametrize("variant", variant_params())
def test_the_gate_names_the_policy(state: State, variant: Variant) -> None:
    found = gate.judge_state(tampered(state, variant), "debian-12")
    assert variant.policy in {policy for policy, _ in found}, found


# ---------------------------------------------------------------------------- CrossGuard's analyzer


def config() -> dict[str, Any]:
    """The example stack with a service account and a `sudo: totp` admin, so every variant has its target."""
    plain, _ = stackconfig.from_stack_file(yaml.safe_load((mockengine.PROGRAM.parent / "Pulumi.example.yaml").read_text()))
    _, deploy = new_key("deploy@ci")
    plain["serviceAccounts"] = [
        {
            "name": "deploy",
            "sshKeys": [deploy],
            "fromCidrs": ["198.51.100.7/32"],
            "command": "/usr/bin/id",
            "sudoCommands": ["/usr/bin/systemctl restart app"],
        }
    ]
    plain["admins"][1]["sudo"] = "totp"
    return plain


@pytest.fixture(scope="module")
def run() -> ProgramRun:
    return mockengine.run(config())


def server_reg(run: ProgramRun) -> Registration:
    return run.one(SERVER_TYPE, "web-1-server")


def with_user_data(run: ProgramRun, edit: Callable[[str], str]) -> ProgramRun:
    bad = copy.deepcopy(run)
    reg = server_reg(bad)
    text = mockengine.unwrap(reg.inputs["userData"])
    changed = edit(text)
    assert changed != text
    reg.inputs["userData"] = reg.outputs["userData"] = rpc.wrap_rpc_secret(changed)
    return bad


def embed(user_data: str, edit: Callable[[State], None]) -> str:
    """The user-data with its desired state edited (as a tampered template or a hand edit would leave it)."""
    state = cloudconfig.state_of(cloudconfig.read(user_data))
    bad = copy.deepcopy(state)
    edit(bad)
    old, new = render.state_file(state).encoded, render.state_file(bad).encoded
    assert old in user_data
    return user_data.replace(old, new)


def mandatory(findings: list[offline.Finding]) -> set[str]:
    return {f.policy for f in findings if f.level == "mandatory"}


def test_the_stack_with_service_accounts_and_sudo_totp_passes(run: ProgramRun) -> None:
    findings = offline.check(run)
    assert mandatory(findings) == set(), findings
    advisory = [f for f in findings if f.policy == "svc-01"]
    assert len(advisory) == 2 and all("deploy" in f.message and "no TOTP" in f.message for f in advisory), findings


@pytest.mark.parametrize("variant", variant_params())
def test_the_analyzer_names_the_policy(run: ProgramRun, variant: Variant) -> None:
    found = offline.check(with_user_data(run, lambda text: embed(text, variant.edit)))
    assert variant.policy in mandatory(found), found
    for f in found:
        assert "PRIVATE KEY" not in f.message and "otpauth" not in f.message


# The user-data's own structure: what cloud-init would act on beyond the design.
STRUCTURE = {
    "an extra runcmd entry": lambda t: t.replace(
        "runcmd:\n", "runcmd:\n  - [sh, -c, 'echo PermitRootLogin yes > /etc/ssh/sshd_config.d/01-x.conf']\n"
    ),
    "an extra bootcmd entry": lambda t: t.replace("bootcmd:\n", "bootcmd:\n  - touch /etc/ssh/sshd_config.d/01-x.conf\n"),
    "a deferred duplicate of the drop-in": lambda t: t.replace(
        "write_files:\n",
        f"write_files:\n  - path: {st.DROPIN}\n    defer: true\n    content: |\n      AuthenticationMethods publickey\n",
    ),
    "an appended line": lambda t: t.replace(f"  - path: {st.DROPIN}\n", f"  - path: {st.DROPIN}\n    append: true\n"),
    "another top-level key": lambda t: t + "ssh_authorized_keys: [ssh-ed25519 AAAA x]\n",
    "YAML cloud-init cannot read (it then drops ALL of it)": lambda t: t.replace("ssh_pwauth: false", "ssh_pwauth: [false"),
    "a state the agent refuses (a name with a line break)": lambda t: embed(t, lambda s: s["admins"][0].update(name="alice\n")),
}


@pytest.mark.parametrize("label", sorted(STRUCTURE))
def test_user_data_structure_is_pinned(run: ProgramRun, label: str) -> None:
    assert "srv-05" in mandatory(offline.check(with_user_data(run, STRUCTURE[label])))


# The whole internet in pieces (fw-01 judges coverage of the public address space, not prefix length 0).
ANYWHERE = {
    "two IPv4 halves in one rule": [["0.0.0.0/1", "128.0.0.0/1"]],
    "two IPv4 halves in two rules": [["0.0.0.0/1"], ["128.0.0.0/1"]],
    "2000::/3 (all public IPv6)": [["2000::/3"]],
    "an eighth of the IPv4 internet": [["64.0.0.0/3"]],
}


@pytest.mark.parametrize("label", sorted(ANYWHERE))
def test_anywhere_by_coverage(run: ProgramRun, label: str) -> None:
    bad = copy.deepcopy(run)
    fw = next(r for r in bad.registrations if r.type == "hcloud:index/firewall:Firewall")
    extra = [{"direction": "in", "protocol": "tcp", "port": "22", "sourceIps": cidrs} for cidrs in ANYWHERE[label]]
    fw.inputs["rules"] = fw.outputs["rules"] = [*fw.inputs["rules"], *extra]
    assert "fw-01" in mandatory(offline.check(bad))


def test_a_sixty_fourth_of_the_internet_is_not_anywhere(run: ProgramRun) -> None:
    bad = copy.deepcopy(run)
    fw = next(r for r in bad.registrations if r.type == "hcloud:index/firewall:Firewall")
    fw.inputs["rules"] = fw.outputs["rules"] = [
        *fw.inputs["rules"],
        {"direction": "in", "protocol": "tcp", "port": "22", "sourceIps": ["64.0.0.0/6"]},
    ]
    assert "fw-01" not in mandatory(offline.check(bad))


# Secrets wherever they go: by the engine's secret marks and by this stack's own values in any spelling.
def seed_bytes(run: ProgramRun) -> bytes:
    reg = next(r for r in run.registrations if r.name.endswith("-alice-totp-seed-a"))
    return base64.b64decode(mockengine.unwrap(reg.outputs)["base64"])


def leak(where: str, spelling: Callable[[bytes], str]) -> Callable[[ProgramRun], None]:
    def change(run: ProgramRun) -> None:
        value = spelling(seed_bytes(run))
        if where == "label":
            reg = server_reg(run)
            reg.inputs["labels"] = reg.outputs["labels"] = {**mockengine.unwrap(reg.inputs["labels"]), "note": value}
        else:
            run.stack_outputs["note"] = value

    return change


def unmark(key: str) -> Callable[[ProgramRun], None]:
    def change(run: ProgramRun) -> None:
        run.stack_outputs[key] = mockengine.unwrap(run.stack_outputs[key])

    return change


SECRETS: dict[str, tuple[str, Callable[[ProgramRun], None]]] = {
    "a seed in lower case in a label": ("sec-02", leak("label", lambda raw: base64.b32encode(raw).decode().lower())),
    "a seed in hex in a label": ("sec-02", leak("label", lambda raw: raw.hex())),
    "a seed in base64 in an output": ("sec-01", leak("output", lambda raw: base64.b64encode(raw).decode())),
    "the enrollment output without Output.secret": ("sec-01", unmark("enrollment")),
    "the desired states without Output.secret": ("sec-01", unmark("desiredState")),
    "the sync keys without Output.secret": ("sec-01", unmark("sync")),
}


@pytest.mark.parametrize("label", sorted(SECRETS))
def test_secrets_outside_secret_marks(run: ProgramRun, label: str) -> None:
    policy, change = SECRETS[label]
    bad = copy.deepcopy(run)
    change(bad)
    found = offline.check(bad)
    assert policy in mandatory(found), found
    seed = seed_bytes(run)
    for f in found:  # named by path and kind, never by value
        assert seed.hex() not in f.message and base64.b32encode(seed).decode().rstrip("=") not in f.message


def test_a_server_on_a_firewall_of_another_stack(run: ProgramRun) -> None:
    bad = copy.deepcopy(run)
    reg = server_reg(bad)
    reg.inputs["firewallIds"] = reg.outputs["firewallIds"] = [*mockengine.unwrap(reg.inputs["firewallIds"]), 4242]
    assert "srv-06" in mandatory(offline.check(bad))


# Input validation: what cloud-init would split, cannot write or cannot parse never reaches the user-data.
BAD_INPUT = {
    "a name with a trailing newline": lambda c: c["admins"][0].update(name="alice\n"),
    "a key comment with a vertical tab": lambda c: c["admins"][0].update(sshKeys=[c["admins"][0]["sshKeys"][0] + "\x0bx"]),
    "a key comment with U+2028": lambda c: c["admins"][0].update(sshKeys=[c["admins"][0]["sshKeys"][0] + "\u2028x"]),
    "a key comment with NEL (U+0085)": lambda c: c["admins"][0].update(sshKeys=[c["admins"][0]["sshKeys"][0] + "\x85x"]),
    "a service account from every allowed network": lambda c: c["serviceAccounts"][0].update(
        fromCidrs=["198.51.100.0/24", "2001:db8:1234::/48"]
    ),
    "a service account with a root shell": lambda c: c["serviceAccounts"][0].update(sudoCommands=["/usr/bin/python3"]),
}


@pytest.mark.parametrize("label", sorted(BAD_INPUT))
def test_bad_input_is_refused_before_anything_is_rendered(label: str) -> None:
    values = config()
    BAD_INPUT[label](values)
    with pytest.raises(ConfigError) as caught:
        stackconfig.parse(values)
    assert "\n" not in str(caught.value)


def test_an_emoji_in_a_key_comment_arrives_whole() -> None:
    """The state travels as JSON inside xz (never through YAML), so a character outside the BMP is no pair of
    lone surrogates on the server: the agent writes the comment as given."""
    values = config()
    values["admins"][0]["sshKeys"] = [values["admins"][0]["sshKeys"][0] + " \U0001f600"]
    run = mockengine.run(values)
    user_data = mockengine.unwrap(server_reg(run).inputs)["userData"]
    state = cloudconfig.state_of(cloudconfig.read(user_data))
    assert st.authorized_keys(state["admins"][0], False).rstrip("\n").endswith(" \U0001f600")
    st.authorized_keys(state["admins"][0], False).encode("utf-8")  # no lone surrogate: encodes


# ------------------------------------------------------------------------- the signing side (sync)


def test_sync_refuses_to_sign_a_state_the_gate_refuses(fleet: Fleet, state: State) -> None:
    """Before its first login (nothing reaches the server, nothing is signed)."""
    outputs = {"sync": {"signingKey": fleet.signer.private_openssh, "previousSeeds": {}}}
    syncer = sync.Syncer(outputs, "alice", fleet.keys["alice"], prompt=None, confirm_within=60, timeout=5, say=lambda _: None)
    unreachable = ("127.0.0.1", [(state["sshPort"], 9)], ("ssh-ed25519", "AAAA"))  # port 9: nothing would answer
    for variant in VARIANTS:
        outcome = syncer.first_login(sync.Target("web-1", tampered(state, variant), *unreachable))
        assert isinstance(outcome, sync.Outcome) and outcome.status == "refused", variant.label
        assert "fails the gate" in outcome.detail and "nothing was sent" in outcome.detail, outcome.detail
    control = syncer.first_login(sync.Target("web-1", state, *unreachable))
    assert isinstance(control, sync.Outcome) and control.status == "unreachable", control  # the gate let it through


# ------------------------------------------------------------------------------ the agent on a server


@pytest.fixture(scope="module")
def server(fleet: Fleet) -> Iterator[Server]:
    require_root()
    require_tool("sshd")
    with running_server(fleet.user_data) as running:
        assert running.activation is not None and running.activation.returncode == 0, running.logs()
        yield running


def signed_apply(server: Server, fleet: Fleet, state: State) -> dict[str, Any]:
    nonce = json.loads(server.agent("status").stdout)["nonce"]
    signature = sshsig.sign(st.signed_message(st.normal(state), nonce), fleet.signer.private_openssh, st.SIGNATURE_NAMESPACE)
    done = server.agent("apply", stdin=json.dumps({"state": state, "signature": signature, "confirmWithin": 60}))
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("variant", variant_params(only_agent=True))
def test_the_agent_refuses_it_on_a_server(server: Server, fleet: Fleet, state: State, variant: Variant) -> None:
    before = json.loads(server.agent("status").stdout)["applied"]["serial"]
    try:
        answer = signed_apply(server, fleet, tampered(state, variant))
    finally:
        if json.loads(server.agent("status").stdout)["pending"] is not None:
            server.agent("rollback")  # a variant the agent let through must not spoil the next one
    assert answer.get("result") == "refused", answer
    record = json.loads(server.agent("status").stdout)
    assert record["applied"]["serial"] == before and record["pending"] is None, record
    for path, text in state["files"].items():  # the previous configuration is back, byte for byte
        assert server.read(path) == text, path


def test_after_the_battery_the_server_still_lets_admins_in(server: Server, fleet: Fleet) -> None:
    assert server.login("alice", key=fleet.keys["alice"], code=fleet.code("alice")).accepted
    assert not server.login("alice", key=fleet.keys["alice"]).accepted
