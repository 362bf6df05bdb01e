"""`vpsctl qr`: the enrollment an admin sees, from the stack outputs the real program exports.

The outputs come from the program run offline on the shipped example config (``components.mockengine``),
shaped exactly as ``pulumi stack output --json --show-secrets`` prints them. The PNG is decoded with a
real QR decoder (zbarimg) and the URI parsed by pyotp, the library the authenticator apps' format is
checked against. Assertion messages never include a secret.
"""

from __future__ import annotations

import json
import os
import re
import stat
import struct
import subprocess
import sys
import unicodedata
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
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
    uri = enrollment.otpauth_uri("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", issuer, enrollment.account(admin, server))
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


def test_names_from_the_outputs_cannot_drive_the_terminal(outputs: dict[str, Any], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A hostile stack output (issuer, account, server and admin names, ssh command holding escapes) is
    printed with its control characters written out; the only escapes on the screen are the QR's own."""
    hostile_issuer = "corp\x1b]0;owned\x07\x9b2J\u202e"
    server, admin = "web\x1b[8m-1", "al\rice"
    item = dict(outputs["enrollment"]["web-1"]["alice"])
    seed = pyotp.parse_uri(item["otpauthUri"]).secret
    item["otpauthUri"] = enrollment.otpauth_uri(seed, hostile_issuer, enrollment.account(admin, server))
    forged = {
        "servers": {server: {**outputs["servers"]["web-1"], "sshCommands": {admin: "ssh \x1b[1A\x1b[2K web-1"}}},
        "enrollment": {server: {admin: item}},
    }
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(forged))
    code, out, err = qr(capsys, "--from", str(path), "--uri")
    assert code == 0, err
    qr_text = enrollment.terminal_qr(item["otpauthUri"])
    rest = out.replace(qr_text, "")
    assert all(c.isprintable() or c == "\n" for c in rest), [c for c in rest if not (c.isprintable() or c == "\n")]
    header = out.splitlines()[0]
    assert header == ("al\\rice@web\\x1b[8m-1 (corp\\x1b]0;owned\\x07\\x9b2J\\u202e): "
                      "TOTP enrollment for al\\rice on web\\x1b[8m-1")  # fmt: skip
    assert "Log in with `ssh \\x1b[1A\\x1b[2K web-1`" in rest
    assert f"    {item['otpauthUri']}\n" in rest, "a well-formed URI is printed unchanged"
    paint(out, LIGHT)  # the emulator refuses any escape but the QR's colours, any other control character


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


# ------------------------------------------------------------------------ the terminal QR on a screen
#
# A small terminal emulator for what the CLI prints: SGR colour escapes, the half blocks, text, newlines.
# It paints the screen a user sees, cell = 1 module wide and 2 modules tall, in a light and a dark
# theme, as PNG files a real decoder (zbarimg) has to read as they are: no inversion, no clean-up.

RGB = tuple[int, int, int]
XTERM = (  # xterm's 16 colours: SGR 30-37 / 40-47 are the first eight, 90-97 / 100-107 the bright ones
    (0, 0, 0), (205, 0, 0), (0, 205, 0), (205, 205, 0), (0, 0, 238), (205, 0, 205), (0, 205, 205), (229, 229, 229),
    (127, 127, 127), (255, 0, 0), (0, 255, 0), (255, 255, 0), (92, 92, 255), (255, 0, 255), (0, 255, 255), (255, 255, 255),
)  # fmt: skip
HALVES = {" ": (False, False), "\u2580": (True, False), "\u2584": (False, True), "\u2588": (True, True)}  # (top, bottom) inked
SGR = re.compile(r"\x1b\[([0-9;]*)m")


@dataclass(frozen=True)
class Theme:
    name: str
    fg: RGB
    """The terminal's default foreground."""
    bg: RGB
    """The terminal's default background."""


LIGHT = Theme("light", fg=(0, 0, 0), bg=(255, 255, 255))
DARK = Theme("dark", fg=(204, 204, 204), bg=(0, 0, 0))


@dataclass
class Screen:
    pixels: list[list[RGB]]
    """Rows of pixels, one per module: a text line is two rows, a cell one column."""
    line_ends: list[tuple[RGB | None, RGB | None]]
    """(foreground, background) set by SGR when each newline is printed; None = the theme's default."""


def paint(text: str, theme: Theme, border: int = 2) -> Screen:
    """The screen ``text`` leaves on a terminal with ``theme``, with ``border`` blank cells around it (the
    rest of the window). Letters are painted as whole cells of ink, darker than any real font: text next
    to the QR disturbs the decoder at least as much as on a real screen. Anything this emulator does not
    know (another escape, a control character, a wide character) fails the test instead of being skipped."""
    fg: RGB | None = None
    bg: RGB | None = None
    lines: list[list[tuple[bool, bool, RGB, RGB]]] = [[]]
    line_ends = []
    at = 0
    while at < len(text):
        char = text[at]
        if char == "\x1b":
            match = SGR.match(text, at)
            assert match, f"escape the emulator does not know: {text[at:at + 12]!r}"
            for param in [int(p) if p else 0 for p in match.group(1).split(";")]:
                if param == 0:
                    fg = bg = None
                elif 30 <= param <= 37 or 90 <= param <= 97:
                    fg = XTERM[param % 10 + (8 if param >= 90 else 0)]
                elif 40 <= param <= 47 or 100 <= param <= 107:
                    bg = XTERM[param % 10 + (8 if param >= 100 else 0)]
                elif param == 39:
                    fg = None
                elif param == 49:
                    bg = None
                else:
                    raise AssertionError(f"SGR {param} is not emulated")
            at = match.end()
            continue
        if char == "\n":
            line_ends.append((fg, bg))
            lines.append([])
        else:
            assert char.isprintable(), f"control character {char!r} reaches the terminal"
            assert unicodedata.east_asian_width(char) not in "WF", f"wide character {char!r} is not emulated"
            top, bottom = HALVES.get(char, (True, True))
            lines[-1].append((top, bottom, fg or theme.fg, bg or theme.bg))
        at += 1
    width = max(len(line) for line in lines) + 2 * border
    blank = [theme.bg] * width
    pixels = [blank] * (2 * border)
    for line in lines:
        cells = [(False, False, theme.fg, theme.bg)] * border + line
        cells += [(False, False, theme.fg, theme.bg)] * (width - len(cells))
        pixels.append([ink if top else paper for top, _bottom, ink, paper in cells])
        pixels.append([ink if bottom else paper for _top, bottom, ink, paper in cells])
    pixels += [blank] * (2 * border)
    return Screen(pixels, line_ends)


def png(pixels: list[list[RGB]], scale: int = 4) -> bytes:
    """An RGB PNG of ``pixels``, each one ``scale`` x ``scale`` (zlib and struct: no imaging library)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = [b"\x00" + bytes(channel for pixel in row for _ in range(scale) for channel in pixel) for row in pixels]
    raw = b"".join(row for row in rows for _ in range(scale))
    header = struct.pack(">IIBBBBB", len(pixels[0]) * scale, len(pixels) * scale, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def zbar(image: Path) -> subprocess.CompletedProcess[str]:
    """zbarimg with its defaults: it reads dark modules on light, and does not try the inverse."""
    return subprocess.run([require_tool("zbarimg"), "--quiet", "--raw", str(image)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def light_on_dark(uri: str) -> str:
    """The drawing this project printed before: blocks in the terminal's default colours for the LIGHT
    modules (right only where the default is light on dark), no colours set, a 2-module quiet zone."""
    rows = enrollment.modules(uri)
    size = len(rows) + 4
    padded = [bytes(size)] * 2 + [b"\x00\x00" + row + b"\x00\x00" for row in rows] + [bytes(size)] * (2 + len(rows) % 2)
    glyph = {(0, 0): "\u2588", (0, 1): "\u2580", (1, 0): "\u2584", (1, 1): " "}
    return "".join("".join(glyph[pair] for pair in zip(top, bottom, strict=True)) + "\n"
                   for top, bottom in zip(padded[::2], padded[1::2], strict=True))  # fmt: skip


@pytest.mark.parametrize("theme", [LIGHT, DARK], ids=lambda t: t.name)
def test_terminal_qr_scans_on_light_and_dark_terminals(
    outputs_file: Path, outputs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], theme: Theme
) -> None:
    """What `vpsctl qr` prints, exactly as captured, painted the way a terminal with ``theme`` shows it,
    decodes to the exact otpauth URI; no colour is left set at any line end."""
    uri = outputs["enrollment"]["web-1"]["alice"]["otpauthUri"]
    code, out, err = qr(capsys, "--from", str(outputs_file), "--server", "web-1", "--admin", "alice")
    assert code == 0, err
    assert enrollment.terminal_qr(uri) in out
    screen = paint(out, theme)
    assert set(screen.line_ends) == {(None, None)}, "a colour is still set at a line end: it bleeds into what follows"
    image = tmp_path / f"qr-{theme.name}.png"
    image.write_bytes(png(screen.pixels))
    decoded = zbar(image)
    assert decoded.returncode == 0, f"{theme.name} theme: zbarimg found no QR code (exit {decoded.returncode})"
    assert decoded.stdout == uri + "\n", f"{theme.name} theme: the decoded QR is not the exact otpauth URI"


def test_terminal_qr_has_a_four_module_quiet_zone() -> None:
    """On a terminal whose background is neither black nor white, the QR is a solid black-and-white block
    with 4 light modules on every side of the symbol."""
    uri = enrollment.otpauth_uri("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "example-corp", "alice@web-1")
    navy = Theme("navy", fg=(204, 204, 204), bg=(0, 0, 128))
    pixels = paint(enrollment.terminal_qr(uri), navy).pixels
    white, black = (255, 255, 255), (0, 0, 0)

    def box(colours: set[RGB]) -> tuple[int, int, int, int]:
        where = [(y, x) for y, row in enumerate(pixels) for x, p in enumerate(row) if p in colours]
        return min(y for y, _ in where), min(x for _, x in where), max(y for y, _ in where), max(x for _, x in where)

    top, left, bottom, right = box({white, black})
    assert {p for row in pixels[top : bottom + 1] for p in row[left : right + 1]} == {white, black}, "not one solid block"
    dark_top, dark_left, dark_bottom, dark_right = box({black})
    size = len(enrollment.modules(uri))
    assert (dark_bottom - dark_top + 1, dark_right - dark_left + 1) == (size, size)
    margins = (dark_top - top, dark_left - left, right - dark_right, bottom - dark_bottom)
    # An odd number of module rows leaves the last half-block row light: 5 at the bottom.
    assert margins[:3] == (4, 4, 4) and margins[3] in (4, 5), margins


def test_the_old_light_on_dark_drawing_does_not_scan_on_a_light_terminal(tmp_path: Path) -> None:
    """The guard: the emulator and zbarimg can tell a drawing that only works on dark themes. The old
    drawing decodes on the dark terminal (so the emulator paints it right) and not on the light one."""
    uri = enrollment.otpauth_uri("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "example-corp", "alice@web-1")
    results = {}
    for theme in (LIGHT, DARK):
        image = tmp_path / f"old-{theme.name}.png"
        image.write_bytes(png(paint(light_on_dark(uri), theme).pixels))
        results[theme.name] = zbar(image).stdout
    assert results == {"light": "", "dark": uri + "\n"}, {k: bool(v) for k, v in results.items()}


def test_qr_sudo_shows_the_sudo_seed_of_a_sudo_totp_admin(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = configs.example()
    config["admins"][1]["sudo"] = "totp"
    outputs = mockengine.unwrap(mockengine.run(config).stack_outputs)
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    sudo_seed = pyotp.parse_uri(outputs["enrollment"]["web-1"]["bob"]["sudo"]["otpauthUri"]).secret
    login_seed = pyotp.parse_uri(outputs["enrollment"]["web-1"]["bob"]["otpauthUri"]).secret
    code, out, err = qr(capsys, "--from", str(path), "--server", "web-1", "--admin", "bob", "--sudo")
    assert code == 0, err
    assert "bob@web-1 sudo" in out and "sudo's code for bob on web-1" in out
    assert enrollment.manual_key(sudo_seed) in out and enrollment.manual_key(login_seed) not in out
    assert "Log in with" not in out  # the login command belongs to the login seed
    code, _out, err = qr(capsys, "--from", str(path), "--server", "web-1", "--admin", "alice", "--sudo")
    assert code == 2 and "alice has no sudo code on web-1" in err and len(err.splitlines()) == 1
