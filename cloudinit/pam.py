"""/etc/pam.d as Linux-PAM reads it, and a judge for the sshd auth stack.

Ported from Linux-PAM's libpam (pam_handlers.c: line assembly and fields; pam_misc.c: tokens,
``[...]`` controls and arguments; pam_dispatch.c: how a stack of return codes becomes the answer),
with Debian's patches (``@include``, and jumps that count as 'ignore'), as Debian 12 (1.5.2) and
Debian 13 / Ubuntu (1.5.3-1.7) build it. Where those releases would read a file differently (long
lines, a continued line followed by a blank or comment line) the line is refused rather than read
one way.

The one parser of this grammar, used where a desired state is judged before it is applied: the policy
pack, the renderer's self-check, ``vpsctl sync`` (before it signs) and ``vpsctl verify``. On the server the
agent asks libpam itself (agent/pamtest.py): the real stack's verdict, not a second reading of it.

API:

- ``parse(text, name) -> list[Rule]``: one file; raises :class:`PamSyntaxError` (file, line, reason)
  for every line Linux-PAM would reject, treat as always failing, or partly ignore.
- ``stack(service, read, type_="auth") -> list[Rule]``: the rules PAM runs for ``type_`` with
  ``@include``/``include``/``substack`` resolved (``read(path)`` returns the text of ``/etc/pam.d/NAME``
  or an absolute include path, or None), ``/usr/lib/pam.d`` and ``other`` as fallbacks. A
  ``substack`` stays in the list as its own rule, followed by its rules one ``level`` deeper.
- ``judge_auth(service, read, required_module=..., installed=None) -> list[str]``: every way the auth
  stack can return PAM_SUCCESS although ``required_module`` did not succeed, found by running
  ``_pam_dispatch_aux``'s state machine over every return every module could give; plus the module
  missing, ``nullok`` (or another option that waves users through), password modules, and a stack
  that can never succeed. Empty list: the code is required.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

# PAM return codes, in their numeric order (pam_tokens.h); index 32 is "default".
RETURNS = (
    "success", "open_err", "symbol_err", "service_err", "system_err", "buf_err", "perm_denied", "auth_err",
    "cred_insufficient", "authinfo_unavail", "user_unknown", "maxtries", "new_authtok_reqd", "acct_expired",
    "session_err", "cred_unavail", "cred_expired", "cred_err", "no_module_data", "conv_err", "authtok_err",
    "authtok_recover_err", "authtok_lock_busy", "authtok_disable_aging", "try_again", "ignore", "abort",
    "authtok_expired", "module_unknown", "bad_item", "conv_again", "incomplete", "default",
)
SUCCESS, PERM_DENIED, AUTH_ERR, IGNORE, MODULE_UNKNOWN, INCOMPLETE = 0, 6, 7, 25, 28, 31
_NCODES = 32
_INVALID = 32  # a module returning a value outside 0..31
ACTIONS = ("ignore", "ok", "done", "bad", "die", "reset")
Action = str | int  # one of ACTIONS, or a jump over that many rules

TYPES = ("auth", "account", "session", "password")
PAM_D = "/etc/pam.d/"
PAM_DIST_D = "/usr/lib/pam.d/"
MAX_LEVEL = 16  # PAM_SUBSTACK_MAX_LEVEL
# Far beyond real files; keeps hostile input well under a second.
MAX_BYTES = 1 << 20
MAX_RULES = 2000
_MAX_STATES = 200_000
_MAX_WAYS = 20  # ways in reported one by one (each with a path); the rest are counted
_LINE_MAX = 1023  # Linux-PAM 1.5.2 reads lines into 1024 bytes; later releases read any length

_SPACE = " \t\n\v\f\r"  # C isspace
_DELIMS = " \n\t"

# Modules whose answer is known (every other module may return anything).
PERMIT, DENY, DEBUG = "pam_permit.so", "pam_deny.so", "pam_debug.so"
# Modules that ask for (and check) a password in the auth stack.
PASSWORD_MODULES = frozenset({
    "pam_unix.so", "pam_unix2.so", "pam_sss.so", "pam_ldap.so", "pam_krb5.so", "pam_winbind.so", "pam_pwdb.so",
    "pam_userdb.so", "pam_radius_auth.so", "pam_lsass.so", "pam_centrifydc.so", "pam_vas3.so", "pam_smbpass.so",
    "pam_kanidm.so", "pam_systemd_home.so",
})
# pam_google_authenticator options (20191231): which let a user through without a valid code, and
# which the module knows at all (an unknown one makes it refuse everybody).
_GA_BYPASS = {
    "nullok": "users without a secret file are let in without a code",
    "grace_period": "a login from the same host within the grace period needs no code",
}
_GA_WEAKEN = {
    "secret": "the secret file is taken from another path",
    "user": "every user's secret is read from one user's file",
    "no_strict_owner": "a secret file owned by someone else is trusted",
    "allowed_perm": "a secret file others can read or write is trusted",
    "allow_readonly": "a used code is accepted again when the state file cannot be written",
}
_GA_OPTIONS = {"debug", "try_first_pass", "use_first_pass", "forward_pass", "noskewadj", "no_increment_hotp",
               "echo-verification-code", "echo_verification_code"}

_SECURITY_DIR = re.compile(r"/(?:usr/)?lib(?:64)?/(?:[a-z0-9_]+-linux-[a-z0-9_]+/)?security/")


class PamSyntaxError(Exception):
    """Linux-PAM rejects, fails or partly ignores this line (line 0: the whole file)."""

    def __init__(self, file: str, line: int, reason: str) -> None:
        super().__init__(file, line, reason)
        self.file = file
        self.line = line
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}" if self.line else f"{self.file}: {self.reason}"


@dataclass(frozen=True)
class Rule:
    """One line of a PAM file as Linux-PAM reads it."""

    file: str
    line: int
    """First physical line of the (possibly continued) line."""
    type: str | None
    """auth, account, session or password (lowercased); None for ``@include``."""
    control: str
    """required, requisite, sufficient, optional, include, substack, @include (lowercased), or the
    ``[value=action ...]`` text as PAM read it (without the brackets)."""
    actions: tuple[Action, ...]
    """What each of the 32 return codes does ('ignore', 'ok', 'done', 'bad', 'die', 'reset' or a jump);
    empty for include lines."""
    module: str
    """The module path as written, or the included file."""
    args: tuple[str, ...]
    optional: bool = False
    """A leading '-': PAM does not log a missing module (it still runs it as 'module_unknown')."""
    level: int = 0
    """Substack depth (set by :func:`stack`)."""

    @property
    def includes(self) -> bool:
        return self.control in ("include", "substack", "@include")

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


# ------------------------------------------------------------------------------- reading a file


def _logical_lines(text: str, name: str) -> list[tuple[int, str]]:
    """pam_handlers.c _pam_assemble_line / pam_line.c _pam_line_assemble: '#' ends a line, a
    trailing backslash continues it (replaced by a space), blank and comment lines are skipped."""
    if "\0" in text:
        raise PamSyntaxError(name, text[: text.index("\0")].count("\n") + 1, "NUL byte: Linux-PAM stops reading the line there")
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    physical = text.split("\n")
    if physical and physical[-1] == "":
        physical.pop()  # the newline ending the last line
    for num, raw in enumerate(physical, start=1):
        if len(raw) > _LINE_MAX - 1 or sum(map(len, pending)) + len(raw) > _LINE_MAX - 1:
            why = f"line longer than {_LINE_MAX} bytes: Linux-PAM releases read it differently"
            raise PamSyntaxError(name, start if pending else num, why)
        s = raw.lstrip(" \t")
        if s == "" or s.startswith("#"):
            if pending:
                # 1.5.2 skips the line and keeps joining; 1.6 and later end the continued line here.
                why = "a continued line is followed by a blank or comment line: Linux-PAM releases read it differently"
                raise PamSyntaxError(name, start, why)
            continue
        if not pending:
            start = num
        if "#" in s:
            out.append((start, "".join(pending) + s[: s.index("#")]))
            pending = []
            continue
        body = s.rstrip(" \t")
        if body.endswith("\\"):
            pending.append(body[:-1] + " ")
            continue
        out.append((start, "".join(pending) + s))
        pending = []
    if pending:
        raise PamSyntaxError(name, start, "the file ends inside a continued line: Linux-PAM refuses the whole file")
    return out


def _strtok(s: str, pos: int | None) -> tuple[str | None, int | None]:
    """pam_misc.c _pam_StrTok: the next word (' ', TAB or newline separate) or '[...]' group, where
    '\\]' stands for ']' and the first ']' ends it; returns (token, where the rest starts)."""
    if pos is None:
        return None, None
    n = len(s)
    i = pos
    while i < n and s[i] in _DELIMS:
        i += 1
    if i >= n:
        return None, None
    if s[i] == "[":
        out: list[str] = []
        j = i + 1
        while j < n and s[j] != "]":
            if s[j] == "\\" and j + 1 < n and s[j + 1] == "]":
                j += 1
            out.append(s[j])
            j += 1
        token, end = "".join(out), j
    else:
        j = i
        while j < n and s[j] not in _DELIMS:
            j += 1
        token, end = s[i:j], j
    if end < n:
        end += 1  # the delimiter (or ']') is overwritten with the terminating NUL
    return token, (end if end < n else None)


def _parse_control(tok: str) -> tuple[list[Action | None], str | None]:
    """pam_misc.c _pam_parse_control: 'value=action ...'. Return codes and actions are matched as
    prefixes, nothing need separate one pair from the next, and any error makes every code 'bad'."""
    actions: list[Action | None] = [None] * _NCODES
    i, n = 0, len(tok)

    def fail(why: str) -> tuple[list[Action | None], str | None]:
        return ["bad"] * _NCODES, why

    while i < n:
        while i < n and tok[i] in _SPACE:
            i += 1
        if i >= n:
            break
        ret = next((k for k, name in enumerate(RETURNS) if tok.startswith(name, i)), None)
        if ret is None:
            return fail(f"expecting a return value at {tok[i:]!r}")
        i += len(RETURNS[ret])
        if i >= n:
            return fail(f"expecting '=' after {RETURNS[ret]!r}")
        while i < n and tok[i] in _SPACE:
            i += 1
        if i >= n or tok[i] != "=":
            return fail(f"expecting '=' after {RETURNS[ret]!r}")
        i += 1
        while i < n and tok[i] in _SPACE:
            i += 1
        if i >= n:
            return fail(f"expecting an action after {RETURNS[ret]}=")
        word = next((a for a in ACTIONS if tok.startswith(a, i)), None)
        act: Action
        if word is not None:
            i += len(word)
            act = word
        else:
            m = re.match(r"[0-9]+", tok[i:])
            if m is None or not m.group().isascii():
                return fail(f"expecting an action or a jump count at {tok[i:]!r}")
            i += m.end()
            count = int(m.group())
            if count == 0:
                return fail("a jump of 0 (use 'ignore')")
            if count > 2**31 - 1:
                return fail("a jump count that overflows an int")
            act = count
        if ret == _NCODES:  # default: every code not set so far
            actions = [act if a is None else a for a in actions]
        else:
            actions[ret] = act
    return actions, None


_KEYWORD_CONTROLS: dict[str, dict[int, Action]] = {
    "required": {SUCCESS: "ok", 12: "ok", IGNORE: "ignore", _NCODES: "bad"},
    "requisite": {SUCCESS: "ok", 12: "ok", IGNORE: "ignore", _NCODES: "die"},
    "optional": {SUCCESS: "ok", 12: "ok", _NCODES: "ignore"},
    "sufficient": {SUCCESS: "done", 12: "done", _NCODES: "ignore"},
}


def _module_basename_ok(path: str) -> bool:
    """extract_modulename: the file name without its extension must not be empty or '?' (else PAM
    refuses the whole file)."""
    base = path.rsplit("/", 1)[-1]
    if "." in base:
        base = base[: base.rindex(".")]
    return base not in ("", "?")


def parse(text: str, name: str) -> list[Rule]:
    """Every rule of one PAM file (``name`` is how errors and :attr:`Rule.file` name it); the first
    line Linux-PAM would not take as written raises :class:`PamSyntaxError`."""
    entries, problems, fatal = _parse_file(text, name)
    if problems:
        raise problems[0]
    if fatal is not None:
        raise fatal
    return [rule for rule, _failing in entries]


# A rule as Linux-PAM installs it: (rule, always fails). An unknown type, a missing control or
# module make PAM install the line as a rule that fails whatever its module would say.
_Entry = tuple[Rule, bool]


def _parse_file(text: str, name: str) -> tuple[list[_Entry], list[PamSyntaxError], PamSyntaxError | None]:
    """What Linux-PAM installs for a file, the problems with it, and the problem (if any) that stops
    it reading the file or that no single reading describes."""
    if len(text) > MAX_BYTES:
        return [], [], PamSyntaxError(name, 0, f"larger than {MAX_BYTES} bytes: refusing to judge it")
    try:
        lines = _logical_lines(text, name)
    except PamSyntaxError as e:
        return [], [], e
    entries: list[_Entry] = []
    problems: list[PamSyntaxError] = []
    for num, line in lines:
        rule, failing, problem = _parse_line(line, name, num)
        if problem is not None:
            if rule is None:
                return entries, problems, problem
            problems.append(problem)
        if rule is not None:
            entries.append((rule, failing))
    return entries, problems, None


def _parse_line(line: str, name: str, num: int) -> tuple[Rule | None, bool, PamSyntaxError | None]:
    """_pam_parse_conf_file for one line: (the rule PAM installs or None if PAM gives up on the file,
    whether it always fails, the problem)."""
    problem: PamSyntaxError | None = None
    failing = False

    def note(why: str) -> None:
        nonlocal problem
        problem = problem or PamSyntaxError(name, num, why)

    tok, rest = _strtok(line, 0)
    if tok is None:  # a continued line of blanks
        return Rule(name, num, "", "bad", ("bad",) * _NCODES, "", ()), True, PamSyntaxError(
            name, num, "empty module type: Linux-PAM installs an always-failing auth rule"
        )
    optional = tok.startswith("-")
    if optional:
        tok = tok[1:]
    kind = tok.lower() if tok.isascii() else tok
    if kind == "@include":
        target, rest = _strtok(line, rest)
        if target is None:
            return None, False, PamSyntaxError(name, num, "@include without a file name (Debian's Linux-PAM crashes on it)")
        if _strtok(line, rest)[0] is not None:
            note(f"text after '@include {target}' is ignored by Linux-PAM")
        return Rule(name, num, None, "@include", (), target, (), optional), False, problem
    if kind not in TYPES:
        # Installed as a rule of the type being read (auth at the top: "most sensitive") that fails.
        note(f"unknown type {tok!r}: Linux-PAM installs an always-failing auth rule in its place")
        kind, failing = "", True
    control, rest = _strtok(line, rest)
    if control is None:
        note("no control: Linux-PAM installs an always-failing rule")
        return Rule(name, num, kind, "bad", ("bad",) * _NCODES, "", (), optional), True, problem
    word = control.lower() if control.isascii() else control
    actions: list[Action | None]
    if word in ("include", "substack"):
        target, rest = _strtok(line, rest)
        if target is None:
            return None, False, PamSyntaxError(name, num, f"{word} without a file name (Debian's Linux-PAM crashes on it)")
        if _strtok(line, rest)[0] is not None:
            note(f"text after '{control} {target}' is ignored by Linux-PAM")
        return Rule(name, num, kind, word, (), target, (), optional), False, problem
    if word in _KEYWORD_CONTROLS:
        table = _KEYWORD_CONTROLS[word]
        actions = [table.get(code, table[_NCODES]) for code in range(_NCODES)]
        control = word
    else:
        actions, error = _parse_control(control)
        if error is not None:
            note(f"control [{control}]: {error}: Linux-PAM treats every return as 'bad'")
        actions = [a if a is not None else "bad" for a in actions]
    final = tuple(a for a in actions if a is not None)
    module, rest = _strtok(line, rest)
    if module is None:
        note("no module: Linux-PAM installs an always-failing rule")
        return Rule(name, num, kind, control, final, "", (), optional), True, problem
    if not _module_basename_ok(module):
        return None, False, PamSyntaxError(name, num, f"module {module!r} has no name: Linux-PAM refuses the whole file")
    args: list[str] = []
    while True:
        arg, rest = _strtok(line, rest)
        if arg is None:
            break
        args.append(arg)
    return Rule(name, num, kind, control, final, module, tuple(args), optional), failing, problem


# ---------------------------------------------------------------------------- building the stack

Reader = Callable[[str], "str | None"]


def _open(name: str, read: Reader, dist: bool) -> tuple[str, str] | None:
    """_pam_open_config_file: an absolute path as is, else /etc/pam.d/NAME (and, for a service,
    /usr/lib/pam.d/NAME after it; Debian's @include/include look in /etc/pam.d only)."""
    paths = [name] if name.startswith("/") else [PAM_D + name] + ([PAM_DIST_D + name] if dist else [])
    for path in paths:
        text = read(path)
        if text is not None:
            return path, text
    return None


class _Stop(Exception):
    """Linux-PAM stops reading (or no single reading exists): nothing more can be judged."""

    def __init__(self, problem: PamSyntaxError) -> None:
        super().__init__(str(problem))
        self.problem = problem


class _Builder:
    """Resolves includes the way _pam_load_conf_file does, collecting the problems on the way."""

    def __init__(self, read: Reader) -> None:
        self.read = read
        self.parsed: dict[str, list[_Entry]] = {}
        self.problems: list[PamSyntaxError] = []

    def entries(self, path: str, text: str) -> list[_Entry]:
        if path not in self.parsed:
            entries, problems, fatal = _parse_file(text, path)
            self.problems += problems
            if fatal is not None:
                raise _Stop(fatal)
            self.parsed[path] = entries
        return self.parsed[path]

    def load(self, path: str, text: str, type_: str | None, level: int, chain: tuple[str, ...]) -> list[_Entry]:
        """The rules of ``path`` of ``type_`` (None: every type), includes resolved."""
        out: list[_Entry] = []
        for rule, failing in self.entries(path, text):
            if rule.type == "":  # an unknown type: the type being read, or auth (most sensitive)
                rule = replace(rule, type=type_ or "auth")
            if rule.control == "@include":
                want = type_  # @include takes the type of the file being read (every type at the top)
            elif type_ is not None and rule.type != type_:
                continue
            else:
                want = rule.type
            if not rule.includes:
                out.append((replace(rule, level=level), failing))
            else:
                out += self._include(path, rule, want, type_, level, chain)
            if len(out) > MAX_RULES:
                raise _Stop(PamSyntaxError(path, rule.line, f"more than {MAX_RULES} rules: refusing to judge it"))
        return out

    def _include(self, path: str, rule: Rule, want: str | None, type_: str | None, level: int,
                 chain: tuple[str, ...]) -> list[_Entry]:
        out: list[_Entry] = []
        if rule.control == "substack":
            out.append((replace(rule, level=level), False))
        found = _open(rule.module, self.read, dist=False)
        deeper = level + (rule.control == "substack")
        if found is not None and (found[0] in chain or len(chain) >= MAX_LEVEL or deeper >= MAX_LEVEL):
            # 1.5.2 recurses until it crashes; later releases stop at 16 levels.
            raise _Stop(PamSyntaxError(path, rule.line, f"{rule.control} {rule.module}: includes nested too deep or in a cycle"))
        if found is None:
            if rule.control == "@include":
                # At the top PAM gives up on the service; deeper, the rule it adds has undefined controls.
                raise _Stop(PamSyntaxError(path, rule.line, f"@include {rule.module}: no such file"))
            self.problems.append(PamSyntaxError(path, rule.line, f"{rule.control} {rule.module}: no such file "
                                                "(Linux-PAM installs an always-failing rule)"))
            out.append((replace(rule, actions=("bad",) * _NCODES, level=level), True))
            return out
        target, target_text = found
        return out + self.load(target, target_text, want, deeper, (*chain, target))


def _build(service: str, read: Reader, type_: str, builder: _Builder) -> list[_Entry]:
    own = _open(service, read, dist=True)
    other = _open("other", read, dist=True)
    if own is None and other is None:
        why = "neither this file nor /etc/pam.d/other exists: Linux-PAM refuses every request"
        raise _Stop(PamSyntaxError(PAM_D + service, 0, why))
    chains: list[list[_Entry]] = []
    for found in (own, other):
        if found is None:
            chains.append([])
            continue
        path, text = found
        # The whole file is read (every type): a file PAM cannot read breaks the service.
        chains.append([e for e in builder.load(path, text, None, 0, (path,)) if e[0].type == type_])
    mine, fallback = chains
    return mine if mine else fallback  # the service's own rules for this type, else those of 'other'


def stack(service: str, read: Reader, type_: str = "auth") -> list[Rule]:
    """The rules Linux-PAM runs for ``type_`` of ``service``, in order (see the module docstring);
    raises :class:`PamSyntaxError` for the first line PAM would not take as written."""
    if type_ not in TYPES:
        raise ValueError(f"type_ must be one of {', '.join(TYPES)}")
    builder = _Builder(read)
    try:
        entries = _build(service, read, type_, builder)
    except _Stop as stop:
        raise (builder.problems or [stop.problem])[0] from None
    if builder.problems:
        raise builder.problems[0]
    return [rule for rule, _failing in entries]


# ------------------------------------------------------------------------------------ the judge

_UNDEF, _POS, _NEG = 0, 1, -1
_ANY = frozenset(range(_NCODES + 1))


def _module_name(path: str) -> str | None:
    """The module a path loads from the system's module directory, or None (anywhere else, or a
    relative path with a directory: PAM resolves those against its module directory)."""
    if "/" not in path:
        return path if "$ISA" not in path else None
    m = _SECURITY_DIR.match(path)
    if m is None or "/" in path[m.end() :] or "$ISA" in path:
        return None
    return path[m.end() :]


def _ga_problems(rule: Rule, allowed: frozenset[str] = frozenset()) -> tuple[list[str], bool]:
    """pam_google_authenticator's parse_args over the rule's arguments: the problems, and whether the
    module can accept anybody at all (any argument it does not know makes it refuse everybody).
    ``allowed``: exact arguments the caller's design uses on purpose (not reported)."""
    problems: list[str] = []
    usable = True
    for arg in rule.args:
        if arg in allowed:
            continue
        say = f"{rule.where}: {rule.module} {arg}: "
        if arg == "nullok":
            problems.append(say + _GA_BYPASS["nullok"])
        elif arg.startswith("grace_period="):
            value = arg[len("grace_period=") :]  # strtol(..., 10) with nothing left over, >= 0
            seconds = int(value) if re.fullmatch(r"[ \t\n\v\f\r]*[+-]?[0-9]+", value) else 0 if value == "" else -1
            if seconds < 0:
                problems.append(say + "an invalid value makes the module refuse everybody")
                usable = False
            elif seconds > 0:
                problems.append(say + _GA_BYPASS["grace_period"])
        elif arg.startswith(("secret=", "user=", "allowed_perm=")) or arg in ("no_strict_owner", "allow_readonly"):
            problems.append(say + _GA_WEAKEN[arg.split("=", 1)[0]])
        elif not (arg.startswith("authtok_prompt=") or arg in _GA_OPTIONS):
            problems.append(say + "an unknown option makes the module refuse everybody")
            usable = False
    return problems, usable


@dataclass(frozen=True)
class _Step:
    rule: Rule
    code: int
    action: Action


# (rule index, impression, status is PAM_SUCCESS, level of the previous rule, the (impression,
# status) saved on entering each substack level)
_State = tuple[int, int, bool, int, tuple[tuple[int, bool], ...]]
# (rule index, return code (-1: a substack rule, nothing ran), action)
_Move = tuple[int, int, Action]


class _Judge:
    def __init__(self, entries: list[_Entry], required: str, installed: Callable[[str], bool] | None) -> None:
        self.chain = [rule for rule, _failing in entries]
        self.failing = [failing for _rule, failing in entries]
        self.required = required
        self.installed = installed
        # The rules of one (sub)stack level in a row ("siblings", a substack counting as one), and
        # where the row ends: jumps move along a row, done/die go to its end.
        n = len(self.chain)
        self.row: list[int] = [0] * n
        self.pos: list[int] = [0] * n
        rows: list[list[int]] = []
        open_rows: list[tuple[int, int]] = []  # (level, row)
        for i, rule in enumerate(self.chain):
            while open_rows and open_rows[-1][0] > rule.level:
                open_rows.pop()
            if not open_rows or open_rows[-1][0] < rule.level:
                rows.append([])
                open_rows.append((rule.level, len(rows) - 1))
            r = open_rows[-1][1]
            self.row[i], self.pos[i] = r, len(rows[r])
            rows[r].append(i)
        self.rows = rows
        self.row_end = [0] * len(rows)
        for r, members in enumerate(rows):
            j = members[-1] + 1
            while j < n and self.chain[j].level > self.chain[members[-1]].level:
                j += 1
            self.row_end[r] = j

    def outcomes(self, rule: Rule, world: _World) -> frozenset[int]:
        """The return codes a module may give in ``world``. A module of known behaviour answers the
        same way every time it runs (and is there or missing everywhere); any other module may
        return anything at any time."""
        name = _module_name(rule.module)
        if world.absent(rule.module, name):
            return frozenset({MODULE_UNKNOWN})
        if name == self.required:
            if world.user == "code":
                return frozenset({SUCCESS if _ga_problems(rule)[1] else AUTH_ERR})
            if world.user == "no-secret" and "nullok" in rule.args:
                return frozenset({IGNORE})
            return frozenset({AUTH_ERR})
        if name == PERMIT:
            return frozenset({SUCCESS})
        if name == DENY:
            return frozenset({AUTH_ERR})
        if name == DEBUG:
            for arg in rule.args:
                if arg.startswith("auth="):
                    code = arg[5:]
                    return frozenset({RETURNS.index(code) if code in RETURNS[:_NCODES] else SUCCESS})
            return frozenset({SUCCESS})
        return _ANY

    def worlds(self, with_code: bool) -> list[_World]:
        """Every combination of what decides the known modules' answers: which of them are
        installed (when that is not known) and, without a code, whether the user has a secret file
        (pam_google_authenticator ... nullok returns 'ignore' for one without)."""
        names = {_module_name(r.module) for r in self.chain}
        known = sorted(n for n in names if n is not None and n in (self.required, PERMIT, DENY, DEBUG))
        if with_code:
            return [_World("code", frozenset(), self.installed)]  # a legitimate user, everything there
        nullok = any(_module_name(r.module) == self.required and "nullok" in r.args for r in self.chain)
        users = ("secret", "no-secret") if nullok else ("secret",)
        if self.installed is not None:
            return [_World(u, frozenset(), self.installed) for u in users]
        gone = [frozenset(n for k, n in enumerate(known) if mask >> k & 1) for mask in range(1 << len(known))]
        return [_World(u, g, None) for u in users for g in gone]

    def run(self, with_code: bool, limit: int) -> tuple[dict[int, list[_Step]], int]:
        """_pam_dispatch_aux over every choice of returns, in every world. The rules whose success
        can be what makes the stack end in PAM_SUCCESS (they turn the result positive on a path that
        ends in success): up to ``limit`` of them with such a path each, and how many there are."""
        found: dict[int, list[_Step]] = {}
        grants: set[int] = set()
        for world in self.worlds(with_code):
            got, granters = self._run(world, limit - len(found))
            for i, path in got.items():
                found.setdefault(i, path)
            grants |= granters
        return found, len(grants)

    def _run(self, world: _World, limit: int) -> tuple[dict[int, list[_Step]], set[int]]:
        chain = self.chain
        n = len(chain)
        if n == 0:
            return {}, set()  # "no modules loaded": PAM_MUST_FAIL_CODE
        choices = [
            [] if r.control == "substack" else _choices(r, frozenset({PERM_DENIED}) if failing else self.outcomes(r, world))
            for r, failing in zip(chain, self.failing, strict=True)
        ]
        start: _State = (0, _UNDEF, False, 0, ())
        # Forward: every reachable state, how it was first reached, and every move out of it.
        parent: dict[_State, tuple[_State, _Move] | None] = {start: None}
        moves: dict[_State, list[tuple[_State, _Move]]] = {}
        todo = [start]
        while todo:
            state = todo.pop()
            i, imp, ok, prev, subs = state
            if i >= n:
                continue
            rule = chain[i]
            level = rule.level
            subs = subs[:level]  # deeper levels are saved again before they are read
            if prev < level:  # entering a substack: remember the state of play
                subs = (*subs[: level - 1], (imp, ok))
            out: list[tuple[_State, _Move]] = []
            if rule.control == "substack":
                out.append(((i + 1, imp, ok, level, subs), (i, -1, "ignore")))
            else:
                for code, action, retval in choices[i]:
                    out.append((self._step(i, imp, ok, subs, retval, action), (i, code, action)))
            moves[state] = out
            for nxt, move in out:
                if nxt not in parent:
                    if len(parent) >= _MAX_STATES:
                        raise _TooComplex()
                    parent[nxt] = (state, move)
                    todo.append(nxt)
        # Backward: which states can still end in success, and the next move towards it.
        towards: dict[_State, tuple[_State, _Move] | None] = {
            st: None for st in parent if st[0] >= n and st[2] and st[1] == _POS
        }
        incoming: dict[_State, list[tuple[_State, _Move]]] = {}
        for st, out in moves.items():
            for nxt, move in out:
                incoming.setdefault(nxt, []).append((st, move))
        queue = list(towards)
        while queue:
            st = queue.pop()
            for before, move in incoming.get(st, ()):
                if before not in towards:
                    towards[before] = (st, move)
                    queue.append(before)
        grants: dict[int, tuple[_State, _Move, _State]] = {}
        for st, out in moves.items():
            granted = st[1] == _POS and st[2]
            for nxt, move in out:
                if move[0] not in grants and not granted and nxt[1] == _POS and nxt[2] and nxt in towards:
                    grants[move[0]] = (st, move, nxt)
        chosen = sorted(grants)[: max(limit, 0)]
        return {i: self._witness(parent, towards, *grants[i]) for i in chosen}, set(grants)

    def _witness(self, parent: dict[_State, tuple[_State, _Move] | None], towards: dict[_State, tuple[_State, _Move] | None],
                 st: _State, move: _Move, nxt: _State) -> list[_Step]:
        before: list[_Move] = []
        link = parent[st]
        while link is not None:
            st, m = link
            before.append(m)
            link = parent[st]
        after: list[_Move] = []
        link = towards[nxt]
        while link is not None:
            nxt, m = link
            after.append(m)
            link = towards[nxt]
        return [_Step(self.chain[i], code, action) for i, code, action in [*before[::-1], move, *after] if code >= 0]

    def _step(self, i: int, imp: int, ok: bool, subs: tuple[tuple[int, bool], ...], retval: int, action: Action) -> _State:
        level = self.chain[i].level
        nxt = i + 1
        decided = False
        if action == "reset":
            imp, ok = subs[level - 1] if level else (_UNDEF, False)
        elif action in ("ok", "done"):
            if imp == _UNDEF or (imp == _POS and ok):
                imp, ok = _POS, retval == SUCCESS
            if imp == _POS and action == "done":
                decided = True
        elif action in ("bad", "die"):
            if imp != _NEG:
                imp, ok = _NEG, retval == SUCCESS  # status = retval (the final sanity check catches SUCCESS)
            if action == "die":
                decided = True
        elif isinstance(action, int):
            # Skip that many rules of this row (a substack counts as one); too few left: bad jump.
            row, pos = self.rows[self.row[i]], self.pos[i]
            if action <= len(row) - pos - 1:
                nxt = row[pos + action + 1] if pos + action + 1 < len(row) else self.row_end[self.row[i]]
            else:
                nxt = self.row_end[self.row[i]]
                imp, ok = _NEG, False
        if decided:  # skip the rest of this (sub)stack
            nxt = self.row_end[self.row[i]]
        return nxt, imp, ok, level, subs


def _choices(rule: Rule, codes: frozenset[int]) -> list[tuple[int, Action, int]]:
    """(code, action, return value) for each way a rule's returns move the stack: only the action and
    whether the value is PAM_SUCCESS matter, so one code stands for all that move it alike."""
    out: dict[tuple[Action, bool], tuple[int, Action, int]] = {}
    for code in sorted(codes):
        if code == INCOMPLETE:
            continue  # pam_authenticate returns PAM_INCOMPLETE: not a success
        action: Action = "bad" if code == _INVALID else rule.actions[code]  # an invalid value: PAM_MUST_FAIL_CODE
        retval = PERM_DENIED if code == _INVALID else code
        out.setdefault((action, retval == SUCCESS), (code, action, retval))
    return list(out.values())


@dataclass(frozen=True)
class _World:
    user: str  # "secret" (a wrong code), "no-secret" (no secret file, no code) or "code" (a right code)
    gone: frozenset[str]  # known modules assumed missing (when installed is not known)
    installed: Callable[[str], bool] | None

    def absent(self, module: str, name: str | None) -> bool:
        if self.installed is not None:
            return not self.installed(module)
        return name in self.gone


class _TooComplex(Exception):
    pass


def _describe(path: list[_Step]) -> str:
    steps = []
    for s in path:
        what = RETURNS[s.code] if s.code < _NCODES else "an invalid code"
        steps.append(f"{s.rule.where} {s.rule.module} {what}->{s.action}")
    return "; ".join(steps) if steps else "no rule runs"


# What judge_auth's problems say, for callers that sort them.
BYPASS = "can end the auth stack in success without"
LOCKOUT = "can never succeed"


def judge_auth(
    service: str,
    read: Reader,
    required_module: str = "pam_google_authenticator.so",
    installed: Callable[[str], bool] | None = None,
    allowed: frozenset[str] = frozenset(),
) -> list[str]:
    """Every problem with ``service``'s auth stack (empty: a login needs ``required_module`` to succeed).

    ``installed(module)`` says whether a module (as written in the file) exists on the server; None
    means unknown, so every module may also be missing (and then returns module_unknown). A line PAM
    does not take as written is reported and judged the way PAM runs it; a file PAM cannot read, or
    reads differently from release to release, is reported and nothing after it is judged. ``allowed``:
    exact ``required_module`` arguments the design uses on purpose (sudo's root-owned ``secret=...``
    and ``user=root``), not reported as weakening; any other value of the same option still is."""
    builder = _Builder(read)
    try:
        entries = _build(service, read, "auth", builder)
    except _Stop as stop:
        return [str(p) for p in builder.problems] + [f"{stop.problem}: not judged further"]
    problems = [str(p) for p in builder.problems]
    chain = [rule for rule, _failing in entries]
    required = [r for r, bad in entries if not bad and r.control != "substack" and _module_name(r.module) == required_module]
    if not required:
        problems.append(f"{PAM_D}{service}: {required_module} is not in the auth stack")
    for rule in required:
        problems += _ga_problems(rule, allowed)[0]
    for rule, failing in entries:
        name = _module_name(rule.module)
        if failing or rule.control == "substack":
            continue
        if name in PASSWORD_MODULES:
            problems.append(f"{rule.where}: {rule.module} asks for a password in the auth stack")
        if name is None:
            problems.append(f"{rule.where}: {rule.module} is not loaded from the system's module directory")
    judge = _Judge(entries, required_module, installed)
    try:
        bypasses, count = judge.run(with_code=False, limit=_MAX_WAYS)
        _, live = judge.run(with_code=True, limit=0)
    except _TooComplex:
        return [*problems, f"{PAM_D}{service}: the auth stack is too complex to judge ({len(chain)} rules)"]
    for granter, path in sorted(bypasses.items()):
        rule = chain[granter]
        problems.append(f"{rule.where}: {rule.module} {BYPASS} {required_module} succeeding ({_describe(path)})")
    if count > len(bypasses):
        problems.append(f"{PAM_D}{service}: {count - len(bypasses)} more rules {BYPASS} {required_module} succeeding")
    if not live:
        problems.append(f"{PAM_D}{service}: the auth stack {LOCKOUT}, even with a right code: every login is refused")
    return problems
