"""Check a stack config against the policy pack offline: no cloud account, no Pulumi CLI.

Runs the real program (__main__.py) under Pulumi's mock engine, then hands every resource it registers
and the stack outputs to the policy pack through the analyzer the Pulumi engine talks to: the same
Analyze and AnalyzeStack calls "pulumi preview --policy-pack policy" makes. Prints the violations per
resource, mandatory ones first, and a summary line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from cloudinit import stackconfig
from vpsctl.errors import EXIT_FAIL, EXIT_OK, CliError
from vpsctl.files import load_json, load_stack_file

EXITS = {EXIT_OK: "no mandatory violation (advisory findings may be listed)", EXIT_FAIL: "a mandatory policy is violated"}
README_SECTION = "Policies"

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", required=True, help="stack config file (Pulumi.<stack>.yaml)")
    parser.add_argument(
        "--policy-config",
        metavar="FILE",
        help='policy pack config, JSON as for "pulumi preview --policy-pack-config": policy id -> level, '
        'or -> {"enforcementLevel": level}',
    )


def load(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(plain, secret) config values of our namespace; validated like `pulumi up` validates them."""
    plain, secure = stackconfig.from_stack_file(load_stack_file(path))
    stackconfig.parse(plain)  # a bad value fails here with the setting's name (ConfigError: exit 2)
    if secure:
        # Encrypted values need the Pulumi CLI to decrypt; seed overrides change no policy-relevant shape.
        print(f"vpsctl check: note: {', '.join(sorted(secure))} encrypted; checked without it", file=sys.stderr)
    return plain, {}


def run(args: argparse.Namespace) -> int:
    plain, secret = load(args.config)
    policy_config = load_json(args.policy_config, "--policy-config") if args.policy_config else None
    if policy_config is not None and not isinstance(policy_config, Mapping):
        raise CliError(f"--policy-config: {args.policy_config} must hold an object keyed by policy id")
    # Imported only now: the Pulumi and policy SDKs take most of a second to load, and a bad file is
    # reported without them.
    import pulumi

    from components import mockengine
    from policy import offline

    try:
        program_run = mockengine.run(plain, secret)
    except mockengine.ProgramFailed as exc:
        if isinstance(exc.__cause__, pulumi.RunError):  # the program's one-line config error ("totp-vps config: ...")
            raise CliError(str(exc)) from None
        raise
    try:
        servicer_config = dict(policy_config) if policy_config else None
        findings = offline.check(program_run, servicer_config)
    except ValueError as exc:
        raise CliError(f"--policy-config: {exc}") from None

    names = {r.urn: (r.name, r.type) for r in program_run.registrations}
    names[offline.stack_urn()] = ("(stack outputs)", "pulumi:pulumi:Stack")
    by_resource: dict[str, list[offline.Finding]] = {}
    for f in findings:
        by_resource.setdefault(f.urn, []).append(f)
    for urn, rows in by_resource.items():
        name, type_ = names.get(urn, (urn or "(stack)", ""))
        print(f"{name}  {type_}")
        width = max(len(r.policy) for r in rows)
        for r in sorted(rows, key=lambda r: (r.level != "mandatory", r.policy)):
            print(f"  {r.policy:<{width}}  {r.level:<9}  {r.message}")
    mandatory = sum(f.level == "mandatory" for f in findings)
    advisory = len(findings) - mandatory
    checked = len(program_run.registrations) + 1
    if not findings:
        print(f"no violations: {checked} resources (stack outputs included) checked against policy pack {offline.PACK_NAME}")
    else:
        print(f"{mandatory} mandatory, {advisory} advisory finding(s) on {len(by_resource)} of {checked} resources")
    return EXIT_FAIL if mandatory else EXIT_OK
