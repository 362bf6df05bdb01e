"""`python -m lab` and `python -m lab sync` keep vpsctl's conventions, as a user's shell sees them.

Exit codes: 0 done, 1 a check failed (or no lab VM runs), 2 bad input, 3 a dry run found a difference, 130 Ctrl-C.
Every error is one line on stderr, ``lab: error: ...``, naming the option or the setting as the user wrote it, with
no traceback, before anything is written or booted. ``--identity`` is always a private key file. Every --help is
plain words with the exit codes and a README section that exists.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_cli_conventions import MARKUP, README_SECTIONS, exit_codes, interrupted_while_reading
from test_lab_state import lab_up, values, write_config

from lab import __main__ as lab_main
from lab import sync as lab_sync

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "Pulumi.example.yaml"


def lab(*argv: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False, **kwargs)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("lab-cli")
    private = base / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "me", "-f", str(private)], check=True)
    (base / "not-a-key").write_text("hello\n")
    bad = base / "Pulumi.bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("sshPort: 22", "sshPort: 70000"))
    inherited = base / "Pulumi.inherited.yaml"
    inherited.write_text(EXAMPLE.read_text().replace("- 198.51.100.0/24", "- 198.51.100.7/24"))
    state = base / "lab-state"
    lab_up(write_config(base / "Pulumi.lab.yaml", values()), state)  # a lab's state, no VM running
    write_config(base / "Pulumi.carol.yaml", values(("carol",)))  # nobody who is there now stays
    return {"private": str(private), "public": f"{private}.pub", "not-a-key": str(base / "not-a-key"),
            "missing": str(base / "missing"), "bad": str(bad), "inherited": str(inherited), "example": str(EXAMPLE),
            "lab-config": str(base / "Pulumi.lab.yaml"), "carol": str(base / "Pulumi.carol.yaml"), "state": str(state),
            "new-state": str(base / "new-state")}


BAD_INPUT = [
    # (argv, exit code, the one error line after "lab: error: ")
    (["--config", "{missing}"], 2, "--config: cannot read {missing}: No such file or directory"),
    (["--config", "{bad}"], 2, "servers[0].sshPort: must be a TCP port 1-65535 (got 70000)"),
    (["--config", "{inherited}"], 2, "defaults.allowedCidrs[0] (inherited by web-1): is not a network address "),
    (["--server", "nope"], 2, "--server: 'nope' is not in the stack config (servers: web-1, db-1)"),
    (["--admin", "carol"], 2, "--admin: 'carol' is not an admin of web-1 (admins: alice, bob)"),
    (["--server", "db-1", "--admin", "bob"], 2, "--admin: 'bob' is not an admin of db-1 (admins: alice)"),
    (["--identity", "{public}"], 2, "--identity: {public} is a public key; give the private key file (the lab derives "
                                    "its public half)"),
    (["--identity", "{not-a-key}"], 2, "--identity: {not-a-key} is not a private key paramiko can use"),
    (["--identity", "{missing}"], 2, "--identity: cannot read {missing}: No such file or directory"),
    (["--state-dir", "{not-a-key}"], 2, "--state-dir: {not-a-key} is not a folder"),
    (["--image", "debian-11"], 2, "argument --image: invalid choice: 'debian-11'"),
    (["--check", "--nope"], 2, "unrecognized arguments: --nope"),
    (["sync", "--config", "{missing}"], 2, "--config: cannot read {missing}: No such file or directory"),
    (["sync", "--config", "{bad}"], 2, "servers[0].sshPort: must be a TCP port 1-65535 (got 70000)"),
    (["sync", "--server", "nope"], 2, "--server: 'nope' is not in the stack config (servers: web-1, db-1)"),
    (["sync", "--state-dir", "{new-state}"], 2, "no lab state in {new-state}: start the lab first"),
    (["sync", "--config", "{lab-config}", "--state-dir", "{state}", "--identity", "{public}"], 2,
     "--identity: {public} is a public key"),
    (["sync", "--config", "{lab-config}", "--state-dir", "{state}", "--port", "ssh"], 2,
     "--port: 'ssh' is not LOCAL or SERVER=LOCAL (port numbers)"),
    (["sync", "--config", "{lab-config}", "--state-dir", "{state}"], 1, "no lab VM runs from {state}: start it"),
    (["sync", "--config", "{carol}", "--state-dir", "{state}"], 1, "no admin of web-1 is there both before (alice, bob) and "
                                                                   "after (carol) this change, so nobody could prove"),
    (["sync", "--config", "{lab-config}", "--state-dir", "{state}", "--server", "db-1"], 2,
     "--server: 'db-1' is not in the stack config (servers: web-1)"),
    (["sync", "--config", "{example}", "--server", "db-1", "--state-dir", "{state}"], 2,
     "--state-dir: {state} holds the lab of server 'web-1', not 'db-1'; name another folder"),
]


@pytest.mark.parametrize(("argv", "code", "message"), BAD_INPUT, ids=[" ".join(a) for a, _, _ in BAD_INPUT])
def test_bad_input_is_one_line_naming_it(files: dict[str, str], argv: list[str], code: int, message: str) -> None:
    # Never the user's own state folder: a case that names none gets one that must stay unmade.
    own = [] if "--state-dir" in argv else ["--state-dir", files["new-state"]]
    done = lab(*(a.format(**files) for a in argv), *own)
    assert "Traceback" not in done.stderr, done.stderr
    assert (done.returncode, done.stdout) == (code, ""), f"exit {done.returncode}: {done.stdout}{done.stderr}"
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("lab: error: "), done.stderr
    assert message.format(**files) in done.stderr, done.stderr
    assert not Path(files["new-state"]).exists(), "bad input made a state folder"


@pytest.mark.parametrize("command", [[], ["sync"]], ids=["lab", "lab sync"])
def test_help_is_plain_words_with_the_exit_codes_and_a_readme_section(command: list[str]) -> None:
    done = lab(*command, "--help")
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert not MARKUP.search(done.stdout), f"markup in --help: {MARKUP.search(done.stdout)}"
    codes = exit_codes(done.stdout)
    assert set(codes) == ({0, 1, 2, 3, 130, 141} if command else {0, 1, 2, 130, 141}), codes
    assert "bad input" in codes[2] and "Ctrl-C" in codes[130]
    section = re.search(r'README\.md, section "([^"]+)"', done.stdout)
    assert section and section.group(1) in README_SECTIONS, done.stdout
    assert "docs/lab.md" in done.stdout and (ROOT / "docs" / "lab.md").exists()
    for option in ("--config", "--server", "--state-dir", "--identity", "--uri", *(["--dry-run", "--as", "--port"] if command
                                                                                  else ["--admin", "--fresh", "--check"])):
        assert option in done.stdout, option
    summary = ((lab_sync if command else lab_main).__doc__ or "").strip().splitlines()[0]
    assert summary in done.stdout


def test_ctrl_c_is_one_line_and_exit_130(tmp_path: Path) -> None:
    """SIGINT while the lab waits for its config (a FIFO nobody writes to)."""
    fifo = tmp_path / "Pulumi.fifo.yaml"
    done = interrupted_while_reading([sys.executable, "-m", "lab", "--config", str(fifo), "--state-dir",
                                      str(tmp_path / "state")], fifo)
    assert done == (130, "", "lab: error: interrupted (Ctrl-C)\n")
    assert not (tmp_path / "state").exists()
