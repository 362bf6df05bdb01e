"""Bring running servers to the stack's desired state, safely: plan, apply provisionally, prove, confirm.

For each server (in parallel): log in as an admin who exists before and after the change (key + code),
ask the server's agent for its record, and show the plan (`web-1: -bob +carol ~alice(rotated)`) before
anything changes; `--dry-run` stops there and is the drift report (exit 0 in sync, 3 drifted, 1
unreachable). Then send the desired state, signed with the stack's key for this server's current nonce; the
agent checks and applies it and reloads sshd, but keeps it provisional. A second, NEW login (key + the
next code) proves the new configuration lets an admin in and confirms it; without that confirmation the
server rolls back by itself. The result is checked over that second login like `vpsctl verify` does.
Two logins per server (pam_google_authenticator allows 3 per 30 s), one key offered each time.
`--wait SECONDS` lets the first login wait for a server that is still booting (`pulumi up` converging a server
it has just created): nothing answers yet, or sshd still runs the first-boot lockdown, which offers no
authentication method at all. A refused key or code is never retried.
Exit: 0 every server in sync or confirmed, 1 one was unreachable, refused or rolled back, 2 bad input.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
import pyotp

from agent import state as st
from cloudinit import desired as desired_files
from cloudinit import gate
from vpsctl import plan as planning
from vpsctl import sshclient, sshsig, stackoutputs, verify
from vpsctl.errors import EXIT_FAIL, EXIT_OK, CliError

AGENT = desired_files.AGENT_COMMAND
EXIT_DRIFT = 3
EXITS = {EXIT_OK: "every server in sync, or changed and confirmed by a new login",
         EXIT_FAIL: "a server was unreachable, refused the change or rolled it back, or a check failed",
         EXIT_DRIFT: "--dry-run: a server differs from the stack (the plan says how)"}
README_SECTION = "Day two: changing running servers"
CONFIRM_WITHIN = 120
MAX_WAIT = 3600
# Between first-login tries while a server boots. OpenSSH 9.8+ (PerSourcePenalties) charges a source 5 s for a login
# that failed (or named a user who does not exist yet, as before the activation), 1 s for a connection that never
# tried, and refuses it only once 15 s have accrued: a try every 10 s never gets there.
RETRY_EVERY = 10.0


@dataclass
class Target:
    """One server to sync and how to reach it."""

    server: str
    state: dict[str, Any]
    host: str
    ports: list[tuple[int, int]]
    """(server port, port to connect to) to try for the first login, in order; the first is the new one."""
    pinned: tuple[str, str]


@dataclass
class Outcome:
    server: str
    status: str
    """in sync, drifted, confirmed, rolled back, refused, unreachable."""
    detail: str = ""
    plan: planning.Plan | None = None
    checks: verify.Report | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("in sync", "confirmed") and (self.checks is None or self.checks.passed)

    def line(self) -> str:
        verdict = ""
        if self.checks is not None:
            failed = [c.id for c in self.checks.checks if c.ok is not True]
            verdict = f"; checks: {len(self.checks.checks) - len(failed)} passed"
            verdict += f", FAILED {', '.join(failed)}" if failed else ""
        return f"{self.server}: {self.status}{f' ({self.detail})' if self.detail else ''}{verdict}"


@dataclass
class Session:
    """What the first login of one server found, kept open until the change is confirmed."""

    target: Target
    login: sshclient.Login
    server_port: int
    status: dict[str, Any]
    plan: planning.Plan
    codes_used: set[str] = field(default_factory=set)


def seed_of(state: Mapping[str, Any], admin: str) -> str | None:
    entry = next((a for a in state["admins"] if a["name"] == admin), None)
    return None if entry is None else st.totp_parts(entry["totp"])[0]


def locked_down(attempt: sshclient.Login) -> bool:
    """The agent's lockdown drop-in (before the first-boot activation, or after it failed) turns every
    authentication method off: the server offers none, which a wrong key or code never causes."""
    return attempt.steps == (("publickey", "not-offered"),) and not any(attempt.offered.get("publickey", ()))


def agent_command(login: sshclient.Login, *args: str, stdin: bytes | None = None, timeout: float = 180) -> dict[str, Any]:
    """Run the server's agent through sudo; its JSON answer, or CliError-free dict with result=failed."""
    done = login.run(["sudo", "-n", AGENT, *args], stdin=stdin, timeout=timeout)
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else None
    except (ValueError, IndexError):
        answer = None
    if not isinstance(answer, dict):
        reason = (done.stderr.strip().splitlines() or [f"exit {done.status}"])[-1]
        if "command not found" in done.stderr or "No such file" in done.stderr:
            reason = "this server has no totp-vps agent (set up by totp-vps 0.1?): rebuild it, or see the README's upgrade notes"
        return {"result": "failed", "reason": reason[:300]}
    return answer


class Syncer:
    """One sync run over several servers: the same admin, key and signing key for all of them."""

    def __init__(self, outputs: Mapping[str, Any], admin: str, key: paramiko.PKey, *, prompt: Callable[[str], str] | None,
                 confirm_within: int, timeout: float, say: Callable[[str], None], wait: float = 0) -> None:
        self.outputs = outputs
        self.admin = admin
        self.key = key
        self.prompt = prompt
        self.confirm_within = confirm_within
        self.timeout = timeout
        self.say = say
        self.wait = wait
        self.signing_key = outputs["sync"]["signingKey"]
        agent = desired_files.agent_files()
        self.agent_files = agent
        self.agent_digest = st.agent_digest(agent)

    # ---------------------------------------------------------------------------------------- phase 1

    def code(self, target: Target, seed: str, when: str, used: set[str]) -> str:
        if self.prompt is not None:
            return self.prompt(f"{target.server}: {self.admin}'s {when} code: ")
        totp = pyotp.TOTP(seed)
        for _ in range(3):
            now = time.time()
            # What the server accepts now (WINDOW_SIZE 3: this step and one either side), not used yet (DISALLOW_REUSE).
            code = next((c for c in (totp.at(now), totp.at(now + 30), totp.at(now - 30)) if c not in used), None)
            if code is not None:
                used.add(code)
                return code
            time.sleep(30 - now % 30 + 0.5)  # each of them was used: the next step brings a new one
        raise AssertionError("no TOTP code left after two steps")  # cannot happen: a step adds a code

    def first_codes(self, target: Target, seed: str, used: set[str]) -> list[str]:
        """Login 1's codes, one round each on the same connection: the current seed's now, then the previous
        seed's (a server not synced since the admin's last rotation still has it) or, without a rotation,
        the current seed's next step (the code of now may have been used within the last minute)."""
        taken = set(used)  # only codes that are really sent count as used (the caller records those)
        codes = [self.code(target, seed, "current", taken)]
        if self.prompt is not None:
            return codes
        # Two rounds at most: the server takes 3 logins per 30 s, and login 2 needs one of them.
        previous = (self.outputs["sync"].get("previousSeeds") or {}).get(target.server, {}).get(self.admin)
        if isinstance(previous, str) and previous != seed:
            codes.append(self.code(target, previous, "previous", taken))
        else:
            codes.append(self.code(target, seed, "current", taken))
        return codes

    def first_login(self, target: Target) -> Session | Outcome:
        """Login 1 and the plan (nothing changes yet); with ``wait``, tried again while the server is not ready yet."""
        judged = gate.judge_state(target.state, target.state["summary"]["image"])
        if judged:
            # The signing key must never vouch for a state that lets a login in without both factors.
            policy, problem = judged[0]
            return Outcome(target.server, "refused", f"the desired state fails the gate ({policy}: {problem}"
                           f"{f'; and {len(judged) - 1} more' if len(judged) > 1 else ''}): nothing was sent")
        seed = seed_of(target.state, self.admin)
        if seed is None:
            return Outcome(target.server, "refused", f"{self.admin} is not an admin in the new state of {target.server}: "
                           "sync logs in as an admin who exists before and after the change (choose one with --as)")
        deadline = time.monotonic() + self.wait
        told = False
        while True:
            found = self.first_login_once(target, seed)
            if not isinstance(found, str):
                return found
            if time.monotonic() + RETRY_EVERY > deadline:
                return Outcome(target.server, "unreachable", f"{found}{f' (waited {self.wait:.0f} s)' if self.wait else ''}")
            if not told:
                self.say(f"{target.server}: not ready yet, trying every {RETRY_EVERY:.0f} s for up to {self.wait:.0f} s: {found}")
                told = True
            time.sleep(RETRY_EVERY)

    def first_login_once(self, target: Target, seed: str) -> Session | Outcome | str:
        """One try of login 1, with fresh codes (a try that got no session or met the lockdown never reached PAM).
        A string says why the server is not ready yet: no SSH session on any port, or the first-boot lockdown."""
        used: set[str] = set()  # the codes really sent: a port that does not answer uses none
        tried = []
        for server_port, port in target.ports:
            codes = self.first_codes(target, seed, used)
            try:
                attempt = sshclient.login(port, self.admin, key=self.key, code=codes, host=target.host,
                                          pinned=" ".join(target.pinned), timeout=self.timeout, keep=True)
            except sshclient.HostKeyMismatch as exc:
                return Outcome(target.server, "unreachable", f"port {server_port}: the server presented {exc.presented}, "
                               "not the pinned host key; nothing was sent")
            used |= set(codes[: sum(method == "keyboard-interactive" for method, _ in attempt.steps)])
            if attempt.steps == (("connect", "disconnected"),):
                tried.append(f"port {server_port}: {attempt.error}")
                continue
            if not attempt.accepted:
                if locked_down(attempt):
                    return (f"port {server_port}: sshd lets nobody in yet (the first-boot lockdown: the server is still "
                            "booting, or its first-boot activation failed and its console log says why)")
                hint = ""
                if attempt.refused_at == "keyboard-interactive":
                    hint = (f"; each code works once and the server takes 3 logins per 30 s per admin: if another sync or "
                            f"login as {self.admin} ran within the last minute, wait a minute and run again; if {self.admin}'s "
                            "seed was rotated since the server last synced, log in as another admin (--as) or type the code "
                            "(--prompt-code)")
                return Outcome(target.server, "unreachable", f"login as {self.admin} on port {server_port}: {attempt}{hint}")
            status = agent_command(attempt, "status")
            if status.get("result") == "failed":
                attempt.close()
                return Outcome(target.server, "refused", str(status.get("reason")))
            applied = status.get("applied")
            desired_record = st.record(target.state)
            found = planning.compute(target.server, applied, desired_record, status.get("drift") or [],
                                     agent_differs=status.get("agent") != target.state["agent"]["sha256"])
            if status.get("pending"):
                attempt.close()
                return Outcome(target.server, "refused", "another change is pending confirmation there", plan=found)
            if applied is not None and not set(applied.get("admins", {})) & set(desired_record["admins"]):
                attempt.close()
                return Outcome(target.server, "refused", "no admin exists both before and after this change, so nobody could "
                               "prove the new configuration: add the new admins first, sync, then remove the old ones",
                               plan=found)
            return Session(target, attempt, server_port, status, found, used)
        return "; ".join(tried) or "no port to try"

    # ---------------------------------------------------------------------------------------- phase 2

    def apply(self, session: Session) -> Outcome:
        target, state = session.target, dict(session.target.state)
        with session.login:
            if session.status.get("agent") != state["agent"]["sha256"]:
                if state["agent"]["sha256"] != self.agent_digest:
                    return Outcome(target.server, "refused", "the stack outputs were made by another totp-vps version (its agent "
                                   "differs from this one's): run this vpsctl's version of pulumi up first", plan=session.plan)
                state["agentFiles"] = self.agent_files
            nonce = str(session.status.get("nonce") or "")
            signature = sshsig.sign(st.signed_message(session.target.state, nonce), self.signing_key, st.SIGNATURE_NAMESPACE)
            request = json.dumps({"state": state, "signature": signature, "confirmWithin": self.confirm_within}).encode()
            answer = agent_command(session.login, "apply", stdin=request)
            if answer.get("result") == "unchanged":
                return Outcome(target.server, "in sync", plan=session.plan)
            if answer.get("result") != "pending":
                return Outcome(target.server, "refused", f"the server's agent refused the change: {answer.get('reason')}",
                               plan=session.plan)
            serial = str(answer["serial"])
            confirmed = self.confirm(session, serial)
            if isinstance(confirmed, Outcome):
                back = agent_command(session.login, "rollback")  # at once, over the first login, not only by the watchdog
                when = "rolled back now" if back.get("result") == "rolled back" else \
                    f"not confirmed: the server rolls it back by itself within {self.confirm_within} s"
                confirmed.detail = f"{confirmed.detail}; {when}"
                return confirmed
            return confirmed_outcome(target, serial, session.plan, confirmed, self.timeout)

    def confirm(self, session: Session, serial: str) -> sshclient.Login | Outcome:
        """Login 2, a NEW connection under the new configuration, and the confirmation over it."""
        target = session.target
        seed = seed_of(target.state, self.admin) or ""
        before = (session.status.get("applied") or {}).get("admins", {}).get(self.admin, {}).get("totp")
        # The same seed as login 1: another code (DISALLOW_REUSE); a rotated one: any code of the new seed.
        used = session.codes_used if before == st.record(target.state)["admins"][self.admin]["totp"] else set()
        port = dict(target.ports)[target.state["sshPort"]]
        attempt = sshclient.login(port, self.admin, key=self.key, code=self.code(target, seed, "next", used), host=target.host,
                                  pinned=" ".join(target.pinned), timeout=self.timeout, keep=True)
        if not attempt.accepted:
            return Outcome(target.server, "rolled back", f"the new configuration refused a login as {self.admin}: {attempt}",
                           plan=session.plan)
        answer = agent_command(attempt, "confirm", serial)
        if answer.get("result") != "confirmed":
            attempt.close()
            return Outcome(target.server, "rolled back", f"confirmation refused: {answer.get('reason')}", plan=session.plan)
        return attempt


def confirmed_outcome(target: Target, serial: str, found: planning.Plan, attempt: sshclient.Login, timeout: float) -> Outcome:
    with attempt:
        report = verify.Report(server=target.server, admin=attempt.user, target=f"{target.host}:{target.state['sshPort']}")
        verify.report_for(attempt, report, target.pinned, target.state["sshPort"], timeout)
    return Outcome(target.server, "confirmed", f"state {st.short(serial)}, proved by a new login", plan=found, checks=report)


# ---------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--stack", metavar="NAME", help="read `pulumi stack output --json --show-secrets --stack NAME`")
    source.add_argument("--from", dest="from_file", metavar="FILE",
                        help="read that JSON from FILE instead ('-': standard input; keep the file private)")
    parser.add_argument("--server", action="append", metavar="S", help="only this server (repeatable; default: all)")
    parser.add_argument("--dry-run", action="store_true", help="show the plan and stop: the drift report (exit 0 in sync, "
                        "3 drifted, 1 unreachable)")
    parser.add_argument("--as", dest="admin", metavar="ADMIN", help="log in as this admin (default: the stack's operator)")
    parser.add_argument("--identity", metavar="KEYFILE", help="that admin's SSH private key (default: the operator's)")
    parser.add_argument("--host", help="connect here instead of the server's address (one --server only)")
    parser.add_argument("--port", action="append", metavar="[SERVER=]LOCAL",
                        help="connect to LOCAL instead of the server's SSH port (one --server only); SERVER=LOCAL maps one "
                        "server port, e.g. through a tunnel while the port changes (repeatable)")
    parser.add_argument("--prompt-code", action="store_true",
                        help="type each login's code instead of computing it from the stack's seed")
    parser.add_argument("--confirm-within", type=int, default=CONFIRM_WITHIN, metavar="SECONDS",
                        help=f"the server rolls the change back unless confirmed in this time (default {CONFIRM_WITHIN})")
    parser.add_argument("--parallel", type=int, default=8, metavar="N", help="servers at once (default 8)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per network step (default 30)")
    parser.add_argument("--wait", type=int, default=0, metavar="SECONDS",
                        help="at the first login, keep trying for up to SECONDS while the server is not ready yet: nothing "
                        "answers, or sshd still runs the first-boot lockdown (a server that is booting; default 0: try once)")


def port_map(values: Sequence[str] | None, ports: Sequence[int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for value in values or []:
        server, _, local = value.rpartition("=")
        if not local.isdigit() or (server and not server.isdigit()) or not 0 < int(local) < 65536:
            raise CliError(f"--port: {value!r} is not LOCAL or SERVER=LOCAL (port numbers)")
        if server:
            out[int(server)] = int(local)
        else:
            out[ports[0]] = int(local)
    return out


def targets(outputs: Mapping[str, Any], names: Sequence[str] | None, host: str | None,
            ports: Sequence[str] | None) -> list[Target]:
    states = outputs.get("desiredState")
    if not isinstance(states, Mapping) or states == stackoutputs.HIDDEN:
        raise CliError("the stack outputs have no desiredState (made by totp-vps 0.1, or read without --show-secrets)")
    chosen = list(names or sorted(states))
    for name in chosen:
        if name not in states:
            raise CliError(f"--server: {name!r} is not in the stack outputs (servers: {', '.join(sorted(states))})")
    if (host or ports) and len(chosen) != 1:
        raise CliError("--host/--port: name exactly one --server to override its address")
    out = []
    for name in chosen:
        entry = outputs["servers"].get(name) or {}
        try:
            state = st.validate(states[name])
        except st.StateError as exc:
            raise CliError(f"stack outputs: desiredState.{name}: {exc}") from None
        previous = verify.as_port(entry.get("previousSshPort"))  # 22.0 in outputs that went through Pulumi
        server_ports = [state["sshPort"]] + ([previous] if previous is not None and previous != state["sshPort"] else [])
        mapped = port_map(ports, server_ports)
        address = host or next((entry[k] for k in ("ipv4", "ipv6") if isinstance(entry.get(k), str) and entry[k]), None)
        if address is None:
            raise CliError(f"stack outputs: servers.{name} has no address; pass --host")
        out.append(Target(name, state, address, [(p, mapped.get(p, p)) for p in server_ports],
                          verify.pinned_host_key(outputs, name)))
    return out


def load_outputs(args: argparse.Namespace) -> dict[str, Any]:
    if args.from_file == "-":
        try:
            outputs = json.loads(sys.stdin.read(16 << 20))
        except ValueError:
            raise CliError("--from -: standard input is not JSON") from None
        return stackoutputs.check_shape(outputs, "--from -")
    return stackoutputs.load(args)


def run(args: argparse.Namespace) -> int:
    outputs = load_outputs(args)
    chosen = targets(outputs, args.server, args.host, args.port)
    operator: Mapping[str, Any] = outputs["operator"] if isinstance(outputs.get("operator"), Mapping) else {}
    admin = args.admin or operator.get("admin")
    identity = args.identity or operator.get("identityFile")
    if not admin or not identity:
        raise CliError("--as and --identity: name the admin to log in as and their key (the stack sets no operator)")
    if not isinstance(outputs.get("sync"), Mapping) or not isinstance(outputs["sync"].get("signingKey"), str):
        raise CliError("the stack outputs have no sync.signingKey (read them with --show-secrets)")
    if not 10 <= args.confirm_within <= 900:
        raise CliError(f"--confirm-within: {args.confirm_within} is not 10-900 seconds")
    if not 1 <= args.parallel <= 64:
        raise CliError(f"--parallel: {args.parallel} is not 1-64")
    if not 0 <= args.wait <= MAX_WAIT:
        raise CliError(f"--wait: {args.wait} is not 0-{MAX_WAIT} seconds")
    if args.wait and args.prompt_code:
        raise CliError("--wait and --prompt-code: a typed code would be stale by the next try; wait without --prompt-code")
    key = verify.load_identity(Path(str(identity)).expanduser(),
                               (lambda: getpass.getpass(f"passphrase for {identity}: ")) if sys.stdin.isatty() else None)
    prompt = getpass.getpass if args.prompt_code else None

    def say(text: str) -> None:
        print(text, flush=True)

    syncer = Syncer(outputs, str(admin), key, prompt=prompt, confirm_within=args.confirm_within, timeout=args.timeout, say=say,
                    wait=args.wait)
    workers = 1 if prompt else args.parallel
    with ThreadPoolExecutor(max_workers=workers) as pool:
        first = list(pool.map(syncer.first_login, chosen))
        for item in first:  # every plan before anything changes
            say(item.plan.line() if isinstance(item, Session) else (item.plan.line() if item.plan else f"{item.server}: ?"))
        sessions = [s for s in first if isinstance(s, Session)]
        outcomes = [o for o in first if isinstance(o, Outcome)]
        if args.dry_run:
            for s in sessions:
                s.login.close()
            outcomes += [Outcome(s.target.server, "drifted" if s.plan.changes else "in sync", plan=s.plan) for s in sessions]
        else:
            for s in sessions:
                if not s.plan.changes:
                    s.login.close()
            outcomes += [Outcome(s.target.server, "in sync", plan=s.plan) for s in sessions if not s.plan.changes]
            outcomes += list(pool.map(syncer.apply, [s for s in sessions if s.plan.changes]))
    for outcome in sorted(outcomes, key=lambda o: o.server):
        if outcome.status == "in sync" and outcome.checks is None:
            continue  # its plan line said so
        say(outcome.line())
        if outcome.checks is not None and not outcome.checks.passed:
            sys.stdout.write(outcome.checks.render())
    if any(o.status in ("unreachable", "refused", "rolled back") or not o.ok and o.status != "drifted" for o in outcomes):
        return EXIT_FAIL
    return EXIT_DRIFT if any(o.status == "drifted" for o in outcomes) else 0
