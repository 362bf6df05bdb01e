"""Every fenced shell command of the README works as written: the ones that can run here run (with the
example stack file standing in for the reader's own), project commands are checked against their own
--help, Make targets against the Makefile, and Pulumi CLI commands against the CLI reference we keep
(tests/data/pulumi-cli.txt: the CLI cannot be installed here). Commands that cannot run here are listed
with the reason, so a new one cannot slip by unchecked.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLE = ROOT / "Pulumi.example.yaml"
PYTHON = ".venv/bin/python"
# Commands that cannot run here, and why (each must still pass its syntax check).
NOT_HERE = {
    "make lab": "boots a VM for as long as you use it; tests/test_vm.py boots the same user-data and logs in",
    "make test": "this suite is what it runs",
    "git clone": "needs the repository's address, which depends on where you got it",
    "cd": "changes the reader's shell only",
    "pulumi": "the Pulumi CLI is not installed here: checked against its reference instead",
    "vpsctl preflight": "asks the Hetzner API (tests/test_preflight.py runs it against a local stand-in)",
    "vpsctl qr": "reads a live stack's outputs through the Pulumi CLI (tests/test_enrollment.py runs it --from a file)",
    "vpsctl verify": "logs in to a live server (tests/test_verify.py runs it against a loopback server)",
    "vpsctl sync": "logs in to live servers (tests/test_day_two.py runs it against loopback servers)",
    "lab sync": "needs a running lab (tests/test_lab_cli.py and the VM tests run it)",
}
RUNNABLE = {"make venv", "vpsctl check"}


def commands() -> list[str]:
    """Each command of each ```sh block, comments dropped, continuation lines joined."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"(^|\s)#.*$", "", line).strip()
            if command:
                out.append(command)
    return out


def kind(argv: list[str]) -> str:
    if argv[:2] == [PYTHON, "-m"]:
        return f"{argv[2]} {argv[3]}" if len(argv) > 3 and not argv[3].startswith("-") else argv[2]
    if argv[0] == "make":
        return "make " + " ".join(a for a in argv[1:] if "=" not in a)
    return argv[0] if argv[0] != "git" else f"git {argv[1]}"


def test_the_readme_has_commands_and_every_one_is_classified() -> None:
    found = commands()
    assert len(found) >= 15
    for command in found:
        k = kind(shlex.split(command))
        assert k in RUNNABLE or k in NOT_HERE or k.split()[0] in NOT_HERE, f"unclassified README command: {command}"


def test_no_bare_python_in_the_readme() -> None:
    """On stock Debian there is no `python`, and a system python3 lacks the project's packages."""
    text = README.read_text()
    assert not re.findall(r"(?m)(?:^|[\s`(])python3? -m (?:vpsctl|lab|bench)", text)


def _pulumi_reference() -> dict[str, set[str]]:
    table: dict[str, set[str]] = {}
    for line in (ROOT / "tests" / "data" / "pulumi-cli.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, options = line.partition(":")
            table[name.strip()] = set(options.split())
    return table


@pytest.mark.parametrize("command", [c for c in commands() if c.startswith("pulumi ")])
def test_pulumi_commands_match_the_cli_reference(command: str) -> None:
    reference = _pulumi_reference()
    argv = shlex.split(command.split("|")[0])
    path = next((p for p in sorted(reference, key=len, reverse=True) if p != "global" and argv[: len(p.split())] == p.split()),
                None)
    assert path is not None, f"no such Pulumi command in the reference: {command}"
    for option in (a.split("=", 1)[0] for a in argv if a.startswith("-")):
        assert option in reference[path] | reference["global"], f"{path} has no option {option}"


def _help(module: str, sub: str | None) -> str:
    argv = [str(ROOT / PYTHON), "-m", module, *([sub] if sub else []), "--help"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("command", [c for c in commands() if c.startswith(f"{PYTHON} -m ")])
def test_project_commands_use_options_their_help_lists(command: str) -> None:
    argv = shlex.split(command)
    module, sub = argv[2], argv[3] if len(argv) > 3 and not argv[3].startswith("-") else None
    text = _help(module, sub)
    for option in (a.split("=", 1)[0] for a in argv[3:] if a.startswith("--")):
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text), f"{module} {sub}: --help lists no {option}"


@pytest.mark.parametrize("command", [c for c in commands() if c.startswith("make ")])
def test_make_targets_exist(command: str) -> None:
    targets = set(re.findall(r"(?m)^([\w./-]+):", (ROOT / "Makefile").read_text()))
    for target in (a for a in shlex.split(command)[1:] if "=" not in a):
        assert target in targets, f"no Makefile target {target}"


@pytest.mark.parametrize("command", [c for c in commands() if kind(shlex.split(c)) in RUNNABLE])
def test_runnable_commands_run_as_written(command: str, tmp_path: Path) -> None:
    """With the example config standing in for the reader's Pulumi.<stack>.yaml."""
    argv = [a if not re.fullmatch(r"Pulumi\.\w+\.yaml", a) or (ROOT / a).exists() else str(EXAMPLE) for a in shlex.split(command)]
    if argv[0] == PYTHON:
        argv[0] = str(ROOT / PYTHON) if (ROOT / PYTHON).exists() else sys.executable
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
