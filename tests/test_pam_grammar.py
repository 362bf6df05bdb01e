"""cloudinit.pam against real Linux-PAM (Debian 12: libpam 1.5.2 with Debian's patches).

Every case is a PAM service (plus the files it includes) written from the grammar of
pam_handlers.c and the semantics of pam_dispatch.c. In one private mount namespace, /etc gets an
overlay (so test users can be added with useradd), each case's files are bind-mounted over
/etc/pam.d, and ``pamtester`` runs the real libpam with the real pam_permit, pam_deny, pam_debug,
pam_succeed_if and pam_google_authenticator:

- a WRONG code for two users with a secret file and for one without: accepted by some ⇔ the judge
  says the stack can succeed without the code;
- the same with the module's .so hidden (an empty file bind-mounted over it) ⇔ the judge, told the
  module is not installed, says so too;
- a RIGHT code: accepted by some user ⇔ the judge does not say the stack can never succeed.

misc_conv reads a piped answer one byte at a time up to the newline (it has no terminal), so each
prompt takes exactly one line of stdin: the driver feeds several lines, one per possible prompt.
The host's /etc is checked unchanged afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyotp
import pytest
from conftest import require, require_root, require_tool

from cloudinit import pam as P

SERVICE = "t-svc"
GA = "pam_google_authenticator.so"
MODULE_DIR = "/lib/x86_64-linux-gnu/security"
USERS = {"pgt-alice": True, "pgt-carol": True, "pgt-bob": False}  # user -> has a secret file
SEED = pyotp.random_base32(32)
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Case:
    name: str
    files: dict[str, str]
    """/etc/pam.d/NAME -> text (on top of the host's own /etc/pam.d)."""
    bypass: bool
    """Real PAM accepts a wrong code (for some user)."""
    live: bool
    """Real PAM accepts a right code (for some user)."""
    bypass_when_missing: bool | None = None
    """Real PAM accepts a wrong code when the module's .so is missing (None: same as bypass)."""


def svc(text: str, **others: str) -> dict[str, str]:
    return {SERVICE: text, **{name.replace("_", "-"): body for name, body in others.items()}}


SUFFICIENT = "auth sufficient pam_permit.so\n"
CASES = [
    Case("the code required", svc(f"auth required {GA}\n"), False, True),
    Case("sufficient permit before the code", svc(f"{SUFFICIENT}auth required {GA}\n"), True, True),
    Case("[success=done] before the code", svc(f"auth [success=done default=ignore] pam_permit.so\nauth required {GA}\n"),
         True, True),
    Case("[success=ok] does not end the stack", svc(f"auth [success=ok default=ignore] pam_permit.so\nauth required {GA}\n"),
         False, True),
    Case("a jump over the code, then permit", svc(f"auth [success=1 default=ignore] pam_permit.so\nauth required {GA}\n"
                                                 "auth required pam_permit.so\n"), True, True),
    Case("a jump to the end sets no result", svc(f"auth [success=1 default=ignore] pam_permit.so\nauth required {GA}\n"),
         False, False),
    Case("done with a code other than success", svc(
        "auth [success=done new_authtok_reqd=done default=ignore] pam_debug.so auth=new_authtok_reqd\n"
        f"auth required {GA}\n"), False, False),
    Case("optional permit, then the code", svc(f"auth optional pam_permit.so\nauth required {GA}\n"), False, True),
    Case("a failed code ignored", svc(f"auth [success=ok auth_err=ignore default=bad] {GA}\nauth required pam_permit.so\n"),
         True, True, bypass_when_missing=False),
    Case("the code optional", svc(f"auth optional {GA}\nauth required pam_permit.so\n"), True, True),
    Case("the code requisite", svc(f"auth requisite {GA}\nauth required pam_permit.so\n"), False, True),
    Case("the code sufficient after a success", svc(f"auth required pam_permit.so\nauth sufficient {GA}\n"), True, True),
    Case("reset after a wrong code", svc(f"auth required pam_permit.so\nauth [success=ok auth_err=reset default=bad] {GA}\n"),
         False, True),
    Case("die on a wrong code", svc(f"auth [success=ok default=die] {GA}\n{SUFFICIENT}"), False, True),
    Case("done needs a positive impression", svc(f"auth [success=ok default=bad] {GA}\n{SUFFICIENT}"), False, True),
    Case("include: sufficient ends the whole stack", svc(f"auth include t-inc\nauth required {GA}\n", t_inc=SUFFICIENT),
         True, True),
    Case("substack: sufficient ends only the substack", svc(f"auth substack t-inc\nauth required {GA}\n", t_inc=SUFFICIENT),
         False, True),
    Case("include: a jump leaves the included file", svc(
        f"auth include t-jmp\nauth required {GA}\nauth required pam_permit.so\n",
        t_jmp="auth [success=2 default=ignore] pam_permit.so\nauth requisite pam_deny.so\n"), True, True),
    Case("substack: a jump cannot leave it", svc(
        f"auth substack t-jmp\nauth required {GA}\nauth required pam_permit.so\n",
        t_jmp="auth [success=2 default=ignore] pam_permit.so\nauth requisite pam_deny.so\n"), False, False),
    Case("substack: reset restores the state from before it", svc(
        "auth [success=ok default=ignore] pam_permit.so\nauth substack t-rst\n",
        t_rst=f"auth [success=ok default=bad] {GA}\nauth [default=reset] pam_deny.so\n"), True, True),
    Case("include: reset goes back to the very start", svc(
        "auth [success=ok default=ignore] pam_permit.so\nauth include t-rst\n",
        t_rst=f"auth [success=ok default=bad] {GA}\nauth [default=reset] pam_deny.so\n"), False, False),
    Case("'-' module missing: sufficient ignores module_unknown",
         svc(f"-auth sufficient pam_nonexistent.so\nauth required {GA}\n"), False, True),
    Case("'-' module missing: module_unknown jumps over the code", svc(
        f"-auth [module_unknown=1 default=ignore] pam_nonexistent.so\nauth required {GA}\nauth required pam_permit.so\n"),
        True, True),
    Case("'-' does not skip a required missing module", svc(f"-auth required pam_nonexistent.so\nauth required {GA}\n"),
         False, False),
    Case("@include chain", svc("@include t-a\n", t_a="@include t-b\naccount required pam_permit.so\n",
                               t_b=f"auth required {GA}\n"), False, True),
    Case("@include brings a sufficient line", svc(f"@include t-c\nauth required {GA}\n",
                                                  t_c=f"{SUFFICIENT}session required pam_permit.so\n"), True, True),
    Case("nullok waves users without a secret through", svc(f"auth required {GA} nullok\nauth required pam_permit.so\n"),
         True, True, bypass_when_missing=False),
    Case("nullok alone sets no result", svc(f"auth required {GA} nullok\n"), False, True),
    Case("continued lines", svc(f"auth \\\n   required \\\n\t{GA}\n"), False, True),
    Case("a bracketed control continued over two lines", svc(
        f"auth [success=done \\\n default=ignore] pam_permit.so\nauth required {GA}\n"), True, True),
    Case("spaces inside brackets", svc(f"auth [ success = done   default = ignore ] pam_permit.so\nauth required {GA}\n"),
         True, True),
    Case("case of type and control", svc(f"AUTH Sufficient pam_permit.so\nAuth REQUIRED {GA}\n"), True, True),
    Case("a control without brackets", svc(f"auth success=done pam_permit.so\nauth required {GA}\n"), True, True),
    Case("a misspelt control: every return is bad", svc(f"auth requried pam_permit.so\nauth required {GA}\n"), False, False),
    Case("a misspelt type: an always-failing auth rule", svc(f"autth sufficient pam_permit.so\nauth required {GA}\n"),
         False, True),
    Case("a misspelt session line lands in auth", svc(f"auth required {GA}\nsesion required pam_permit.so\n"), False, False),
    Case("pam_succeed_if lets one user jump the code", svc(
        f"auth [success=1 default=ignore] pam_succeed_if.so user = pgt-alice\nauth required {GA}\n"
        "auth required pam_permit.so\n"), True, True),
    Case("pam_succeed_if gate before the code", svc(f"auth requisite pam_succeed_if.so user = pgt-carol\nauth required {GA}\n"),
         False, True),
    Case("'#' ends a line even before a backslash", svc(f"auth sufficient pam_permit.so # \\\nauth required {GA}\n"),
         True, True),
    Case("pam_debug success kept, the code ignored", svc(
        f"auth [success=ok default=ignore] pam_debug.so\nauth [success=ok default=ignore] {GA}\n"), True, True),
    Case("pam_debug ignore, then the code", svc(f"auth required pam_debug.so auth=ignore\nauth required {GA}\n"), False, True),
    Case("the code twice", svc(f"auth required {GA}\nauth required {GA}\n"), False, True),
    Case("'other' runs when the service has no auth rule", {SERVICE: "account required pam_permit.so\n", "other": SUFFICIENT},
         True, True),
    Case("a missing included file fails its rule", svc(f"auth optional pam_permit.so\nauth include t-none\nauth required {GA}\n"),
         False, False),
    Case("a missing code module is ignored", svc(
        f"auth [success=ok module_unknown=ignore default=die] {GA}\nauth required pam_permit.so\n"), False, True,
        bypass_when_missing=True),
    Case("done with a negative impression does not end the stack", svc(
        f"auth [default=bad] pam_deny.so\n{SUFFICIENT}auth [default=reset] pam_deny.so\n{SUFFICIENT}auth required {GA}\n"),
        True, True),
    Case("ok with a failure turns a success into a failure", svc(f"auth required pam_permit.so\nauth [default=ok] {GA}\n"),
         False, True),
    Case("bad with a success value still fails", svc(
        f"auth [success=bad default=ignore] pam_permit.so\nauth [success=ok default=ignore] {GA}\n"), False, False),
    Case("substack: die ends only the substack", svc(
        f"auth substack t-die\nauth [default=reset] pam_deny.so\n{SUFFICIENT}", t_die=f"auth [success=ok default=die] {GA}\n"),
        True, True),
    Case("include: die ends the whole stack", svc(
        f"auth include t-die\nauth [default=reset] pam_deny.so\n{SUFFICIENT}", t_die=f"auth [success=ok default=die] {GA}\n"),
        False, True),
    Case("a jump counts a substack as one rule", svc(
        f"auth [success=2 default=ignore] pam_permit.so\nauth substack t-two\nauth required {GA}\nauth required pam_permit.so\n",
        t_two="auth optional pam_debug.so\nauth optional pam_debug.so\n"), True, True),
    Case("brackets in arguments", svc(f"auth [success=done default=ignore] pam_debug.so [auth=success x]\n"
                                      f"auth required {GA}\n"), True, True),
]

# Files PAM cannot read, or that its releases read differently: the judge reports them and judges
# nothing after. The bool: Debian 12's libpam accepts a wrong code (why no single reading will do).
REFUSED = [
    ("a file ending in a continuation", svc(f"auth required {GA}\n{SUFFICIENT.strip()} \\"), False),
    ("a continuation followed by a comment line", svc(f"auth sufficient \\\n# comment\npam_permit.so\nauth required {GA}\n"),
     True),
    ("a line longer than 1023 bytes", svc(f"auth required {GA} " + "x" * 1100 + "\n"), False),
    ("an include cycle", svc(f"auth include t-loop\nauth required {GA}\n", t_loop="auth include t-svc\n"), False),
    ("@include of a missing file", svc(f"@include t-absent\nauth required {GA}\n"), False),
]


def _module_path(module: str) -> str:
    return module if "/" in module else f"{MODULE_DIR}/{module}"


def installed_on_host(module: str) -> bool:
    return os.path.exists(_module_path(module))


def _codes(now: float) -> set[str]:
    totp = pyotp.TOTP(SEED)
    return {totp.at(now + 30 * k) for k in range(-4, 5)}


def _wrong_code() -> str:
    valid = _codes(time.time())
    return next(f"{n:06d}" for n in range(123456, 999999, 7919) if f"{n:06d}" not in valid)


# ------------------------------------------------------------------- inside the mount namespace


def _namespace_driver(job_path: str) -> None:
    """Runs as root in a private mount namespace: overlay /etc, add the users, then run pamtester
    for every case and scenario; writes {case: {scenario: [exit code, output]}} next to the job."""
    job = json.loads(Path(job_path).read_text())
    root = Path(job["root"])

    def run(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True)

    (root / "upper").mkdir()
    (root / "overlay-work").mkdir()
    run("mount", "-t", "overlay", "overlay", "-o", f"lowerdir=/etc,upperdir={root}/upper,workdir={root}/overlay-work", "/etc")
    for user, has_secret in USERS.items():
        home = root / "home" / user
        run("useradd", "-M", "-d", str(home), "-s", "/bin/sh", user)
        home.mkdir(parents=True)
        if has_secret:
            secret = home / ".google_authenticator"
            secret.write_text(f'{job["seed"]}\n" TOTP_AUTH\n" WINDOW_SIZE 3\n')
            secret.chmod(0o600)
            shutil.chown(secret, user, user)
        shutil.chown(home, user, user)
        home.chmod(0o700)
    (root / "empty.so").write_bytes(b"")
    results: dict[str, dict[str, list[object]]] = {}
    for case in job["cases"]:
        run("mount", "--bind", case["dir"], "/etc/pam.d")
        got: dict[str, list[object]] = {}
        for scenario in job["scenarios"]:
            if scenario["missing"]:
                run("mount", "--bind", str(root / "empty.so"), job["ga_path"])
            code = pyotp.TOTP(job["seed"]).now() if scenario["right"] else job["wrong"]
            # One line per prompt (misc_conv reads a pipe up to each newline); more than any stack asks.
            answer = "".join(f"{code}\n" for _ in range(32))
            p = subprocess.run(["pamtester", "-v", SERVICE, scenario["user"], "authenticate"], input=answer,
                               capture_output=True, text=True, timeout=30)
            got[scenario["name"]] = [p.returncode, p.stdout + p.stderr]
            if scenario["missing"]:
                run("umount", job["ga_path"])
        run("umount", "/etc/pam.d")
        results[case["name"]] = got
    Path(job_path).with_suffix(".out").write_text(json.dumps(results))


SCENARIOS = [
    {"name": "wrong-alice", "user": "pgt-alice", "right": False, "missing": False},
    {"name": "wrong-carol", "user": "pgt-carol", "right": False, "missing": False},
    {"name": "wrong-bob-nosecret", "user": "pgt-bob", "right": False, "missing": False},
    {"name": "missing-alice", "user": "pgt-alice", "right": False, "missing": True},
    {"name": "missing-carol", "user": "pgt-carol", "right": False, "missing": True},
    {"name": "right-alice", "user": "pgt-alice", "right": True, "missing": False},
    {"name": "right-carol", "user": "pgt-carol", "right": True, "missing": False},
]


def _fingerprint(paths: list[str]) -> dict[str, str]:
    out = {}
    for top in paths:
        for p in sorted(Path(top).rglob("*")) if Path(top).is_dir() else [Path(top)]:
            if p.is_file() and not p.is_symlink():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


WATCHED = ["/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow", "/etc/subuid", "/etc/subgid", "/etc/pam.d",
           f"{MODULE_DIR}/{GA}"]
HOST: dict[str, dict[str, str]] = {}


@pytest.fixture(scope="module")
def real() -> dict[str, dict[str, list[object]]]:
    """pamtester's answers for every case and scenario (and the host's files before and after)."""
    HOST["before"] = _fingerprint(WATCHED)
    try:
        return run_pamtester(CASES + [Case(name, files, accepts, False) for name, files, accepts in REFUSED])
    finally:
        HOST["after"] = _fingerprint(WATCHED)


def run_pamtester(all_cases: list[Case]) -> dict[str, dict[str, list[object]]]:
    """{case name: {scenario: [pamtester's exit code, its output]}} from one private mount namespace."""
    require_root()
    require_tool("pamtester")
    require_tool("unshare")
    require(os.path.exists(f"{MODULE_DIR}/{GA}"), "needs libpam-google-authenticator")
    host_pamd = {p.name: p.read_text() for p in Path("/etc/pam.d").iterdir() if p.is_file()}
    with tempfile.TemporaryDirectory(prefix="pam-grammar-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # the test users must reach their homes
        cases = []
        for n, case in enumerate(all_cases):
            d = root / f"case{n}"
            d.mkdir()
            for name, text in {**host_pamd, **case.files}.items():
                (d / name).write_text(text)
            cases.append({"name": case.name, "dir": str(d)})
        job = root / "job.json"
        job.write_text(json.dumps({"root": tmp, "cases": cases, "scenarios": SCENARIOS, "seed": SEED,
                                   "wrong": _wrong_code(), "ga_path": f"{MODULE_DIR}/{GA}"}))
        driver = f"import sys; sys.path[:0] = [{str(Path(__file__).parent)!r}, {str(REPO)!r}]; " \
                 "import test_pam_grammar as t; t._namespace_driver(sys.argv[1])"
        subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", driver, str(job)],
                       check=True, timeout=600)
        return json.loads(job.with_suffix(".out").read_text())


def reader(case_files: dict[str, str]) -> Callable[[str], str | None]:
    """What the case's /etc/pam.d holds: the host's files with the case's on top."""

    def read(path: str) -> str | None:
        if path.startswith(P.PAM_D):
            name = path[len(P.PAM_D) :]
            if name in case_files:
                return case_files[name]
            host = Path(path)
            return host.read_text() if host.is_file() else None
        return None

    return read


def _accepted(answers: dict[str, list[object]], prefix: str) -> bool:
    return any(rc == 0 for name, (rc, _out) in answers.items() if name.startswith(prefix))


def test_host_etc_untouched(real: dict[str, dict[str, list[object]]]) -> None:
    """useradd, the pam.d files and the hidden module all lived in the namespace only."""
    assert real and HOST["before"] and HOST["after"] == HOST["before"]
    assert not any(line.startswith("pgt-") for line in Path("/etc/passwd").read_text().splitlines())


def test_battery_is_big_enough() -> None:
    assert len(CASES) >= 30
    assert {c.bypass for c in CASES} == {True, False} and {c.live for c in CASES} == {True, False}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_judge_agrees_with_pam(case: Case, real: dict[str, dict[str, list[object]]]) -> None:
    answers = real[case.name]
    for name, (rc, out) in answers.items():
        assert rc in (0, 1), f"{name}: pamtester itself failed: {out}"
    read = reader(case.files)
    judged = P.judge_auth(SERVICE, read, installed=installed_on_host)
    missing = P.judge_auth(SERVICE, read, installed=lambda m: installed_on_host(m) and not m.endswith(GA))
    unknown = P.judge_auth(SERVICE, read)
    bypass = any(P.BYPASS in p for p in judged)
    live = not any(P.LOCKOUT in p for p in judged)

    assert _accepted(answers, "wrong-") == bypass == case.bypass, (answers, judged)
    want_missing = case.bypass if case.bypass_when_missing is None else case.bypass_when_missing
    assert _accepted(answers, "missing-") == any(P.BYPASS in p for p in missing) == want_missing, (answers, missing)
    assert _accepted(answers, "right-") == live == case.live, (answers, judged)
    # Not knowing what is installed can only add ways in.
    if bypass or want_missing:
        assert any(P.BYPASS in p for p in unknown)
    # A right code was really asked for where the code matters.
    if case.live and not case.bypass:
        assert "Verification code:" in str(answers["right-alice"][1]) + str(answers["right-carol"][1])


@pytest.mark.parametrize(("name", "files", "accepts"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_files(name: str, files: dict[str, str], accepts: bool, real: dict[str, dict[str, list[object]]]) -> None:
    judged = P.judge_auth(SERVICE, reader(files), installed=installed_on_host)
    assert judged and judged[-1].endswith("not judged further"), judged
    assert _accepted(real[name], "wrong-") == accepts, real[name]
    with pytest.raises(P.PamSyntaxError):
        P.stack(SERVICE, reader(files))


# ----------------------------------------------------------------------------- the grammar itself


def test_parse_fields() -> None:
    text = (
        "# comment\n"
        "-auth [success=done new_authtok_reqd=1 default=ignore]\tpam_debug.so [a b\\]c] x=1\n"
        "Account  Required pam_permit.so\n"
        "@include common-account\n"
        "session substack t-sub\n"
    )
    rules = P.parse(text, "f")
    assert [(r.line, r.type, r.control, r.module, r.args, r.optional) for r in rules] == [
        (2, "auth", "success=done new_authtok_reqd=1 default=ignore", "pam_debug.so", ("a b]c", "x=1"), True),
        (3, "account", "required", "pam_permit.so", (), False),
        (4, None, "@include", "common-account", (), False),
        (5, "session", "substack", "t-sub", (), False),
    ]
    actions = rules[0].actions
    assert len(actions) == 32 and actions[P.SUCCESS] == "done" and actions[12] == 1 and actions[P.AUTH_ERR] == "ignore"
    required = rules[1].actions
    assert required[P.SUCCESS] == "ok" and required[P.IGNORE] == "ignore" and required[P.AUTH_ERR] == "bad"


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("auth [success=okay] pam_permit.so", "every return as 'bad'"),
        ("auth [SUCCESS=ok] pam_permit.so", "every return as 'bad'"),
        ("auth [success=0] pam_permit.so", "jump of 0"),
        ("auth [success=99999999999] pam_permit.so", "overflows"),
        ("auth [success=ok pam_permit.so", "every return as 'bad'"),
        ("auth required", "no module"),
        ("auth", "no control"),
        ("autth required pam_permit.so", "unknown type"),
        ("- required pam_permit.so", "unknown type"),
        ("auth include", "without a file name"),
        ("@include", "without a file name"),
        ("@include common-auth more", "ignored"),
        ("auth substack x y", "ignored"),
        ("auth required .so", "no name"),
        ("auth required pam_permit.so\0", "NUL"),
    ],
)
def test_parse_refuses(line: str, why: str) -> None:
    with pytest.raises(P.PamSyntaxError, match=why) as caught:
        P.parse(line + "\n", "/etc/pam.d/x")
    assert caught.value.file == "/etc/pam.d/x" and caught.value.line == 1


def test_stack_keeps_substacks_and_levels() -> None:
    files = {"svc": "auth substack s1\nauth include i1\n@include i2\n", "s1": "auth substack s2\naccount required pam_deny.so\n",
             "s2": "auth required pam_permit.so\n", "i1": "auth optional pam_debug.so\n",
             "i2": "auth requisite pam_deny.so\naccount optional pam_permit.so\n",
             "other": "auth required pam_deny.so\n"}
    rules = P.stack("svc", lambda p: files.get(p.removeprefix(P.PAM_D)))
    assert [(r.file, r.control, r.module, r.level) for r in rules] == [
        ("/etc/pam.d/svc", "substack", "s1", 0),
        ("/etc/pam.d/s1", "substack", "s2", 1),
        ("/etc/pam.d/s2", "required", "pam_permit.so", 2),
        ("/etc/pam.d/i1", "optional", "pam_debug.so", 0),
        ("/etc/pam.d/i2", "requisite", "pam_deny.so", 0),
    ]
    # s1's account rule is not read: 'auth substack s1' takes s1's auth rules only; @include takes all.
    accounts = P.stack("svc", lambda p: files.get(p.removeprefix(P.PAM_D)), "account")
    assert [(r.file, r.module) for r in accounts] == [("/etc/pam.d/i2", "pam_permit.so")]


def test_judge_reports_options_and_password_modules() -> None:
    files = {"svc": f"auth required pam_unix.so\nauth required {GA} nullok grace_period=60 no_strict_owner\n"
                    "auth required /tmp/pam_permit.so\n"}
    problems = P.judge_auth("svc", lambda p: files.get(p.removeprefix(P.PAM_D)))
    text = "\n".join(problems)
    assert "pam_unix.so asks for a password" in text
    assert "nullok" in text and "grace_period=60" in text and "no_strict_owner" in text
    assert "/tmp/pam_permit.so is not loaded from the system's module directory" in text
    assert f"{GA} is not in the auth stack" in "\n".join(P.judge_auth("svc", lambda p: "auth required pam_permit.so\n"))
    assert P.judge_auth("svc", lambda p: f"auth required {GA} unknown_option\n")[-1].endswith("every login is refused")


def test_judge_names_every_way_in() -> None:
    """Two ways around the code: an unknown module 'sufficient' before it, and a jump over it."""
    text = (f"auth sufficient pam_x.so\nauth [success=1 default=ignore] pam_y.so\nauth required {GA}\n"
            "auth required pam_permit.so\n")
    ways = [p for p in P.judge_auth("svc", lambda p: text, installed=lambda m: True) if P.BYPASS in p]
    assert [w.split(": ", 1)[0] for w in ways] == ["/etc/pam.d/svc:1", "/etc/pam.d/svc:4"]
    assert "/etc/pam.d/svc:2 pam_y.so success->1" in ways[1]


# ------------------------------------------------------------------------------------ hostile input


@pytest.mark.parametrize(
    ("name", "files", "error"),
    [
        ("10 MB file", {"svc": "# padding\n" * 1_000_000}, "larger than"),
        ("1 MB of comments", {"svc": "# x\n" * 250_000 + f"auth required {GA}\n"}, None),
        ("10,000 @include lines", {"svc": "@include inc\n" * 10_000, "inc": f"auth required {GA}\n"}, "refusing to judge"),
        ("include chain 40 deep", {"svc": "auth include f0\n", **{f"f{i}": f"auth include f{i + 1}\n" for i in range(40)}},
         "too deep"),
        ("2,000 rules", {"svc": "auth optional pam_debug.so\n" * 1990 + f"auth required {GA}\n"}, None),
        ("jumps everywhere", {"svc": "".join(f"auth [success={1 + i % 3} default=ignore] pam_x{i}.so\n" for i in range(600))
                              + f"auth required {GA}\n"}, None),
    ],
)
def test_hostile_input_is_fast(name: str, files: dict[str, str], error: str | None) -> None:
    start = time.perf_counter()
    problems = P.judge_auth("svc", lambda p: files.get(p.removeprefix(P.PAM_D)))
    if error:
        assert any(error in p for p in problems), problems
    assert time.perf_counter() - start < 0.8, name
