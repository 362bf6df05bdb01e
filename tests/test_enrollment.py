"""`vpsctl qr`: the enrollment an admin sees, from the stack outputs the real program exports.

The outputs come from the program run offline on the shipped example config (``components.mockengine``),
shaped exactly as ``pulumi stack output --json --show-secrets`` prints them. The PNG is decoded with a
real QR decoder (zbarimg) and the URI parsed by pyotp, the library the authenticator apps' format is
checked against. Assertion messages never include a secret.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import configs
import pyotp
import pytest
from conftest import require_tool

from cloudinit import enrollment
from components import mockengine
from vpsctl.__main__ import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def outputs() -> dict[str, Any]:
    """The example stack's outputs with secrets shown."""
    return mockengine.unwrap(mockengine.run(configs.example()).stack_outputs)


@pytest.fixture(scope="module")
def outputs_file(outputs: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stack") / "outputs.json"
    path.write_text(json.dumps(outputs, indent=2))
    path.chmod(0o600)
    return path


def secrets_in(outputs: dict[str, Any]) -> set[str]:
    """Every secret string of every enrollment (seed, URI, codes) to look for in output that must not hold them."""
    found: set[str] = set()
    for admins in outputs["enrollment"].values():
        for item in admins.values():
            found.add(item["otpauthUri"])
            found.add(pyotp.parse_uri(item["otpauthUri"]).secret)
            found.add(item["manualKey"])
            found.update(item["backupCodes"])
    return found


def leaked(text: str, secrets: set[str]) -> int:
    """How many secrets appear in ``text`` (a count, so a failing assertion shows no secret)."""
    return sum(1 for s in secrets if s in text)


def qr(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["qr", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --------------------------------------------------------------------------------- the URI and the QR


def test_uri_follows_the_key_uri_format(outputs: dict[str, Any]) -> None:
    item = outputs["enrollment"]["web-1"]["alice"]
    totp = pyotp.parse_uri(item["otpauthUri"])
    assert isinstance(totp, pyotp.TOTP)
    assert (totp.issuer, totp.name) == ("example-corp", "alice@web-1")
    assert (totp.digest().name, totp.digits, totp.interval) == ("sha1", 6, 30)
    uri = item["otpauthUri"]
    # Label prefix AND parameter (older apps read one, newer the other); algorithm, digits, period explicit.
    assert uri.startswith("otpauth://totp/example-corp:alice@web-1?")
    for part in ("issuer=example-corp", "algorithm=SHA1", "digits=6", "period=30"):
        assert part in uri.split("?", 1)[1].split("&"), f"URI lacks {part}"
    assert "=" not in totp.secret and len(totp.secret) * 5 >= 160, "seed: unpadded base32 of at least 160 bits"


@pytest.mark.parametrize(
    ("issuer", "admin", "server"),
    [
        ("ACME Co", "alice", "web-1"),
        ("Grüße & Söhne", "jürgen k", "büro 1"),  # non-ASCII and spaces in the account too
        ("日本 サーバ", "花子", "東京-1"),
        ("a+b=c?d#e/f%g", "x y", "z"),  # every character with a meaning in a URI
    ],
)
def test_uri_percent_encodes_spaces_and_round_trips(issuer: str, admin: str, server: str) -> None:
    """Spaces are %20 (the Key URI Format's own examples: issuer=ACME%20Co), never '+', in the label and
    in the issuer parameter; what pyotp (and so an app) reads back is exactly the issuer and account."""
    uri = enrollment.otpauth_uri("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", issuer, admin, server)
    assert uri.isascii() and uri.isprintable() and " " not in uri and "+" not in uri, uri
    label, query = uri.removeprefix("otpauth://totp/").split("?", 1)
    assert f"issuer={quote(issuer, safe='')}" in query.split("&")
    assert label == f"{quote(issuer, safe='')}:{quote(admin, safe='')}@{quote(server, safe='')}"
    totp = pyotp.parse_uri(uri)
    assert isinstance(totp, pyotp.TOTP)
    assert (totp.issuer, totp.name) == (issuer, f"{admin}@{server}")


def test_png_decodes_to_the_exact_uri(outputs_file: Path, outputs: dict[str, Any], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    zbarimg = require_tool("zbarimg")
    png = tmp_path / "out" / "alice-web-1.png"
    code, out, err = qr(capsys, "--from", str(outputs_file), "--server", "web-1", "--admin", "alice", "--png", str(png))
    assert code == 0, err
    assert stat.S_IMODE(png.stat().st_mode) == 0o600
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    decoded = subprocess.run([zbarimg, "--quiet", "--raw", str(png)], capture_output=True, text=True, timeout=30, check=False)
    assert decoded.returncode == 0, f"zbarimg found no QR code (exit {decoded.returncode})"
    expected = outputs["enrollment"]["web-1"]["alice"]["otpauthUri"]
    assert decoded.stdout.rstrip("\n") == expected, "the decoded QR is not the exact otpauth URI"
    totp = pyotp.parse_uri(decoded.stdout.rstrip("\n"))
    assert isinstance(totp, pyotp.TOTP)
    assert (totp.issuer, totp.name, totp.digest().name, totp.digits, totp.interval) == (
        "example-corp", "alice@web-1", "sha1", 6, 30,
    )  # fmt: skip
    assert "QR code written to" in out and "otpauth://" not in out


def test_every_enrollment_decodes(outputs: dict[str, Any], tmp_path: Path) -> None:
    """Not just one admin: every QR the stack holds (other servers, other ports, other admins) reads back."""
    zbarimg = require_tool("zbarimg")
    from vpsctl.qr import image_bytes

    for server, admins in outputs["enrollment"].items():
        for admin, item in admins.items():
            png = tmp_path / f"{admin}-{server}.png"
            png.write_bytes(image_bytes(item["otpauthUri"], "png"))
            decoded = subprocess.run([zbarimg, "-q", "--raw", str(png)], capture_output=True, text=True, timeout=30, check=False)
            assert decoded.stdout.rstrip("\n") == item["otpauthUri"], f"QR of {admin}@{server} does not decode to its URI"


def test_svg_is_written_owner_only(outputs_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    svg = tmp_path / "alice.svg"
    svg.write_text("stale, world-readable")
    svg.chmod(0o644)
    code, out, err = qr(capsys, "--from", str(outputs_file), "--server", "db-1", "--svg", str(svg))
    assert code == 0, err
    assert stat.S_IMODE(svg.stat().st_mode) == 0o600
    text = svg.read_text()
    assert "<svg" in text and "stale" not in text
    assert "█" not in out and "▀" not in out, "with --svg the QR goes to the file, not the terminal"


def test_terminal_shows_qr_key_and_codes_but_not_the_uri(
    outputs_file: Path, outputs: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    item = outputs["enrollment"]["web-1"]["bob"]
    code, out, err = qr(capsys, "--from", str(outputs_file), "--server", "web-1", "--admin", "bob")
    assert code == 0, err
    assert enrollment.terminal_qr(item["otpauthUri"]) in out, "terminal QR missing"
    assert item["manualKey"] in out, "manual key (in groups of four) missing"
    assert all(c in out for c in item["backupCodes"]), "a backup code is missing"
    assert "works once" in out and "offline" in out and "password manager" in out and "printed" in out
    assert "otpauth://" not in out, "the URI is shown only with --uri"
    assert item["otpauthUri"] not in out
    assert "ssh -p 22 bob@" in out
    assert err == ""


def test_uri_on_request(outputs_file: Path, outputs: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = qr(capsys, "--from", str(outputs_file), "--server", "web-1", "--admin", "alice", "--uri")
    assert code == 0
    assert outputs["enrollment"]["web-1"]["alice"]["otpauthUri"] in out


def test_manual_key_is_the_seed_in_groups(outputs: dict[str, Any]) -> None:
    item = outputs["enrollment"]["web-1"]["alice"]
    groups = item["manualKey"].split(" ")
    assert all(len(g) == 4 for g in groups[:-1]) and 0 < len(groups[-1]) <= 4
    assert "".join(groups) == pyotp.parse_uri(item["otpauthUri"]).secret


# ---------------------------------------------------------------------------------- choosing sensibly


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["--server", "db-1"], "alice@db-1"),  # one admin on that server
        (["--admin", "bob"], "bob@web-1"),  # bob is on one server only
        (["--server", "web-1", "--admin", "alice"], "alice@web-1"),
    ],
)
def test_one_match_is_shown(outputs_file: Path, capsys: pytest.CaptureFixture[str], argv: list[str], shown: str) -> None:
    code, out, err = qr(capsys, "--from", str(outputs_file), *argv)
    assert code == 0, err
    assert out.startswith(f"{shown} (example-corp)")


def test_single_enrollment_needs_no_choice(outputs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    only = {"servers": {"db-1": outputs["servers"]["db-1"]}, "enrollment": {"db-1": outputs["enrollment"]["db-1"]}}
    path = tmp_path / "one.json"
    path.write_text(json.dumps(only))
    code, out, err = qr(capsys, "--from", str(path))
    assert code == 0, err
    assert out.startswith("alice@db-1 ")


@pytest.mark.parametrize(
    ("argv", "listing", "asks"),
    [
        ([], "db-1: alice; web-1: alice, bob", "--server and --admin"),
        (["--server", "web-1"], "web-1: alice, bob", "--admin"),
        (["--admin", "alice"], "db-1: alice; web-1: alice", "--server"),
    ],
)
def test_several_matches_are_listed(
    outputs_file: Path, outputs: dict[str, Any], capsys: pytest.CaptureFixture[str], argv: list[str], listing: str, asks: str
) -> None:
    code, out, err = qr(capsys, "--from", str(outputs_file), *argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and listing in err and err.rstrip().endswith(f"choose one with {asks}")
    assert leaked(err, secrets_in(outputs)) == 0


# ---------------------------------------------------------------------------------------------- errors


def run_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real entry point in a fresh interpreter: what a user's shell sees, tracebacks included."""
    return subprocess.run(
        [sys.executable, "-m", "vpsctl", *argv], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False, env=env
    )


@pytest.fixture
def bad_files(tmp_path: Path, outputs: dict[str, Any]) -> Iterator[dict[str, Path]]:
    files = {
        "bad-json": tmp_path / "bad.json",
        "not-outputs": tmp_path / "list.json",
        "hidden": tmp_path / "hidden.json",
        "bad-uri": tmp_path / "bad-uri.json",
    }
    # A truncated outputs file: the secrets before the cut must not show up in the message.
    files["bad-json"].write_text(json.dumps(outputs)[:-40])
    files["not-outputs"].write_text("[1, 2, 3]")
    files["hidden"].write_text(json.dumps({**mockengine.redact(outputs), "enrollment": "[secret]"}))
    broken = json.loads(json.dumps(outputs))
    uri = broken["enrollment"]["db-1"]["alice"]["otpauthUri"]
    broken["enrollment"]["db-1"]["alice"]["otpauthUri"] = uri.replace("secret=", "secret=1!")
    files["bad-uri"].write_text(json.dumps(broken))
    yield files


@pytest.mark.parametrize(
    ("case", "argv", "message"),
    [
        ("unknown server", ["--from", "{outputs}", "--server", "nope"], "'nope' is not in the stack outputs (servers: db-1"),
        ("unknown admin", ["--from", "{outputs}", "--admin", "carol"], "--admin: 'carol' is not an admin in the stack outputs"),
        ("admin not on server", ["--from", "{outputs}", "--server", "db-1", "--admin", "bob"], "'bob' is not an admin of db-1"),
        ("bad JSON", ["--from", "{bad-json}"], "is not valid JSON"),
        ("missing file", ["--from", "{missing}"], "cannot read"),
        ("not outputs", ["--from", "{not-outputs}"], "not the outputs of this program"),
        ("saved without --show-secrets", ["--from", "{hidden}"], "needs `pulumi stack output --json --show-secrets`"),
        ("broken URI", ["--from", "{bad-uri}", "--server", "db-1"], "otpauthUri is not"),
    ],
)
def test_errors_are_one_line_without_traceback_or_secret(
    outputs_file: Path,
    outputs: dict[str, Any],
    bad_files: dict[str, Path],
    tmp_path: Path,
    case: str,
    argv: list[str],
    message: str,
) -> None:
    paths = {"outputs": outputs_file, "missing": tmp_path / "missing.json", **bad_files}
    done = run_cli("qr", *(a.format(**{k: str(v) for k, v in paths.items()}) for a in argv))
    # Checked first, so that every later message may quote stderr.
    assert leaked(done.stdout + done.stderr, secrets_in(outputs)) == 0, f"{case}: the output holds a secret"
    assert done.returncode == 2, f"{case}: exit {done.returncode}: {done.stderr}"
    assert done.stdout == "", f"{case}: printed to stdout"
    assert done.stderr.count("\n") == 1, f"{case}: not one line: {done.stderr}"
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("vpsctl qr: error: ") and message in done.stderr, f"{case}: {done.stderr}"


def test_missing_pulumi_cli_is_one_clear_line(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # a PATH without pulumi
    done = run_cli("qr", "--stack", "prod", env=env)
    assert done.returncode == 2
    assert done.stderr == (
        "vpsctl qr: error: the pulumi CLI is not on PATH: install it, or pass --from FILE holding "
        "`pulumi stack output --json --show-secrets`\n"
    )


def test_stack_outputs_come_from_the_pulumi_cli(outputs_file: Path, outputs: dict[str, Any], tmp_path: Path) -> None:
    """--stack runs `pulumi stack output --json --show-secrets --stack NAME` (a stand-in CLI records the call)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    fake = bin_dir / "pulumi"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{calls}"\ncat "{outputs_file}"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = run_cli("qr", "--stack", "prod", "--server", "db-1", env=env)
    assert done.returncode == 0, done.stderr
    assert calls.read_text() == "stack output --json --show-secrets --stack prod\n"
    assert outputs["enrollment"]["db-1"]["alice"]["manualKey"] in done.stdout

    fake.write_text('#!/bin/sh\necho "error: no stack named \'prod\' found" >&2\nexit 255\n')
    done = run_cli("qr", "--stack", "prod", env=env)
    assert (done.returncode, done.stderr) == (
        2, "vpsctl qr: error: --stack prod: `pulumi stack output` failed: error: no stack named 'prod' found\n",
    )  # fmt: skip


def _terminal_to_pbm(text: str, scale: int = 6) -> bytes:
    """Turn the half-block QR back into pixels (a netpbm bitmap, 1 = dark), as a camera would see it."""
    halves = {"\u2588": (0, 0), "\u2580": (0, 1), "\u2584": (1, 0), " ": (1, 1)}
    pixels: list[list[int]] = []
    for line in text.splitlines():
        pairs = [halves[ch] for ch in line]
        pixels += [[p[0] for p in pairs], [p[1] for p in pairs]]
    margin = 8  # a wide light border around the terminal's own quiet zone
    width = len(pixels[0]) + 2 * margin
    pixels = [[0] * width] * margin + [[0] * margin + row + [0] * margin for row in pixels] + [[0] * width] * margin
    body = "\n".join(" ".join(str(v) for v in row for _ in range(scale)) for row in pixels for _ in range(scale))
    return f"P1\n{width * scale} {len(pixels) * scale}\n{body}\n".encode()


def test_terminal_qr_decodes_back_to_the_exact_uri(tmp_path: Path) -> None:
    """The text QR the stack outputs and the CLI print is a real QR code: zbar reads it."""
    zbarimg = require_tool("zbarimg")
    uri = enrollment.otpauth_uri("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "example-corp", "alice", "web-1")
    image = tmp_path / "terminal.pbm"
    image.write_bytes(_terminal_to_pbm(enrollment.terminal_qr(uri)))
    decoded = subprocess.run([zbarimg, "-q", "--raw", str(image)], capture_output=True, text=True, check=False)
    assert decoded.stdout.strip() == uri
