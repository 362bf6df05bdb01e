"""One convention across every vpsctl command, as a user's shell sees it (a fresh interpreter each time).

Exit codes: 0 done, 1 a check failed, 2 bad input, 3 drift (sync --dry-run), 130 interrupted, 141 the reader of
the output quit.
Every error is one line on stderr, ``vpsctl <command>: error: ...``, with no traceback and no control
character from the input. Every ``--help`` is plain words (no reStructuredText), says what the command
does and what its exit codes mean, and names a README section that exists.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import configs
import pytest

from components import mockengine
from vpsctl.__main__ import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
README_SECTIONS = set(re.findall(r"^## (.+)$", (ROOT / "README.md").read_text(), re.MULTILINE))
# reStructuredText a reader would see as noise: ``literal``, :role:`x`, a "::" block marker, ".. directive".
MARKUP = re.compile(r"``|:[a-z]+:`|::$|^\s*\.\. ", re.MULTILINE)


# Exit codes beyond 0, 2, 130 and 141, per command: a check or finding (1), a drift report (3).
CAN_FAIL = {"verify": {1}, "check": {1}, "preflight": {1}, "sync": {1, 3}}


def vpsctl(*argv: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vpsctl", *argv], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=False, **kwargs)  # fmt: skip


def summary(command: str) -> str:
    """The first line of a command module's docstring: its one-line description."""
    return (__import__(COMMANDS[command], fromlist=["_"]).__doc__ or "").strip().splitlines()[0]


def words(text: str) -> str:
    return " ".join(text.split())  # argparse wraps to the terminal width


def exit_codes(help_text: str) -> dict[int, str]:
    block = help_text.split("exit codes:\n", 1)[1].split("\n\n", 1)[0]
    return {int(code): meaning for code, meaning in re.findall(r"^\s+(\d+)\s+(.+)$", block, re.MULTILINE)}


# ----------------------------------------------------------------------------------------------- help


def test_top_level_help_lists_every_command_in_plain_words() -> None:
    done = vpsctl("--help")
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert not MARKUP.search(done.stdout), f"markup in --help: {MARKUP.search(done.stdout)}"
    for command in COMMANDS:
        assert re.search(rf"^\s+{command}\s", done.stdout, re.MULTILINE), f"{command} is not listed"
        assert words(summary(command)) in words(done.stdout), f"{command}: its summary is not shown"
    codes = exit_codes(done.stdout)
    assert set(codes) == {0, 1, 2, 3, 130, 141}
    assert all(c in codes[1] for c in CAN_FAIL if 1 in CAN_FAIL[c]), f"exit 1 does not name every command using it: {codes[1]}"
    assert codes[3].startswith("sync: --dry-run"), codes[3]
    assert 'section "Operator CLI"' in done.stdout and "Operator CLI" in README_SECTIONS


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_help_says_what_it_does_its_exit_codes_and_where_to_read_more(command: str) -> None:
    done = vpsctl(command, "--help")
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    text = done.stdout
    assert not MARKUP.search(text), f"{command} --help has markup: {MARKUP.search(text)}"
    assert words(summary(command)) in words(text)
    codes = exit_codes(text)
    assert set(codes) == {0, 2, 130, 141, *CAN_FAIL.get(command, ())}, codes
    assert "bad input" in codes[2] and "Ctrl-C" in codes[130]
    section = re.search(r'README\.md, section "([^"]+)"', text)
    assert section, f"{command} --help names no README section"
    assert section.group(1) in README_SECTIONS, f"{command} --help points to a README section that does not exist"


def test_render_help_names_every_file_it_writes() -> None:
    text = words(vpsctl("render", "--help").stdout)
    for written in ("DIR/<server>/user-data", "DIR/<server>/host_ed25519.pub", "DIR/secrets.json"):
        assert written in text, written


# ------------------------------------------------------------------------------------------ bad input


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Paths the bad-input cases name: a stack outputs file, a plain file, a config with a bad setting."""
    base = tmp_path_factory.mktemp("cli")
    outputs = base / "outputs.json"
    outputs.write_text(json.dumps(mockengine.unwrap(mockengine.run(configs.example()).stack_outputs)))
    outputs.chmod(0o600)
    plain = base / "a-file"
    plain.write_text("not a folder\n")
    bad_config = base / "Pulumi.bad.yaml"
    bad_config.write_text(configs.EXAMPLE.read_text().replace("totp-vps:issuer:", "totp-vps:issuerr:"))
    return {"outputs": str(outputs), "file": str(plain), "missing": str(base / "missing"), "bad-config": str(bad_config),
            "example": str(configs.EXAMPLE), "out": str(base / "out")}  # fmt: skip


BAD_INPUT = [
    # (command, argv, part of the one error line)
    (None, [], "the following arguments are required: COMMAND"),
    (None, ["deploy"], "invalid choice: 'deploy'"),
    ("render", ["--out", "{out}"], "the following arguments are required: --config"),
    ("render", ["--config", "{missing}", "--out", "{out}"], "--config: cannot read"),
    ("render", ["--config", "{bad-config}", "--out", "{out}"], "issuerr"),
    ("render", ["--config", "{example}", "--out", "{file}/sub"], "argument --out: {file} is not a folder"),
    ("qr", ["--stack", "prod", "--from", "{outputs}"], "argument --from: not allowed with argument --stack"),
    ("qr", ["--from", "{missing}"], "--from: cannot read"),
    ("qr", ["--from", "{outputs}", "--server", "db-1", "--png", "{file}/alice.png"], "--png: cannot write {file}/alice.png"),
    ("verify", ["--from", "{outputs}", "--admin", "alice"], "the following arguments are required: --identity"),
    ("verify", ["--from", "{outputs}", "--server", "db-1", "--identity", "{missing}", "--admin", "alice"],
     "--identity: cannot read"),
    ("verify", ["--from", "{outputs}", "--admin", "alice", "--identity", "{file}", "--port", "ssh"], "invalid int value: 'ssh'"),
    ("check", [], "the following arguments are required: --config"),
    ("check", ["--config", "{bad-config}"], "issuerr"),
    ("check", ["--config", "{example}", "--policy-config", "{missing}"], "--policy-config: cannot read"),
]


@pytest.mark.parametrize(("command", "argv", "message"), BAD_INPUT, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(BAD_INPUT)])
def test_bad_input_is_one_line_with_the_prefix_and_exit_2(
    files: dict[str, str], command: str | None, argv: list[str], message: str
) -> None:
    done = vpsctl(*([command] if command else []), *(a.format(**files) for a in argv))
    prefix = f"vpsctl {command}: error: " if command else "vpsctl: error: "
    assert "Traceback" not in done.stderr, done.stderr
    assert (done.returncode, done.stdout) == (2, ""), f"exit {done.returncode}: {done.stdout}{done.stderr}"
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(prefix), done.stderr
    assert message.format(**files) in done.stderr, done.stderr
    assert not Path(files["out"]).exists(), "a refused render wrote files"


def test_control_characters_in_an_error_do_not_reach_the_terminal(files: dict[str, str], tmp_path: Path) -> None:
    """Error lines quote names from the stack outputs; a hostile name stays one visible line."""
    outputs = json.loads(Path(files["outputs"]).read_text())
    hostile = "db\x1b]0;owned\x07\nvpsctl qr: all good\r"
    outputs["enrollment"][hostile] = outputs["enrollment"].pop("db-1")
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(outputs))
    done = vpsctl("qr", "--from", str(forged), "--server", "nope")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("vpsctl qr: error: --server: 'nope' is not"), done.stderr
    assert "db\\x1b]0;owned\\x07\\nvpsctl qr: all good\\r" in done.stderr
    assert all(c.isprintable() for c in done.stderr.rstrip("\n")), repr(done.stderr)


def test_a_reader_that_quits_early_is_no_error(files: dict[str, str], tmp_path: Path) -> None:
    """`vpsctl render ... | head -0`: the pipe closes before vpsctl writes; it stops quietly, exit 141
    (128 + SIGPIPE, what the shell reports for any tool in that place), and it is not bad input."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout buffered, as for a user
    argv = [sys.executable, "-m", "vpsctl", "render", "--config", files["example"], "--out", str(tmp_path / "out")]
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    err = process.stderr.read()
    assert (process.wait(timeout=60), err) == (141, b"")


def interrupted_while_reading(argv: list[str], fifo: Path) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``argv`` sent SIGINT while it waits to read ``fifo``, a FIFO nobody
    writes to (made here)."""
    os.mkfifo(fifo)
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    writer = None
    try:
        deadline = time.monotonic() + 30
        while writer is None:  # a FIFO opens for writing (without blocking) once its reader is there
            try:
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                assert exc.errno == errno.ENXIO and time.monotonic() < deadline and process.poll() is None, exc
                time.sleep(0.05)
        time.sleep(0.2)  # from open() into read(): the command now waits for its input
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if writer is not None:
            os.close(writer)
        process.kill()
    return process.returncode, out, err


def test_ctrl_c_is_one_line_and_exit_130(files: dict[str, str], tmp_path: Path) -> None:
    """SIGINT while vpsctl waits for input (it reads --from from a FIFO nobody has written to)."""
    fifo = tmp_path / "outputs.fifo"
    done = interrupted_while_reading([sys.executable, "-m", "vpsctl", "qr", "--from", str(fifo)], fifo)
    assert done == (130, "", "vpsctl qr: error: interrupted (Ctrl-C)\n")
