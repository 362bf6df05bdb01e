"""File helpers shared by the subcommands: secrets are only ever written owner-only."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cloudinit import yamlload
from vpsctl.errors import CliError

# Characters a YAML file of ours may not hold anywhere, comments included: C0 and C1 controls other than
# TAB, LF and CR (YAML forbids most; the rest, NEL among them, break lines or hide text), the Unicode line
# and paragraph separators (YAML 1.1 readers break lines there, editors do not), and the bidi controls
# that make an editor show text in another order than a parser reads it ("Trojan Source").
_HIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def write_private(path: Path, data: str | bytes) -> None:
    """Create (or replace) ``path`` with mode 0600 from the first byte: never briefly world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def load_yaml(path: str, what: str) -> Any:
    """The document in ``path`` (``what``: the option or file it came from, for the message), read by the
    project's one bounded YAML reader; a file that is no plain UTF-8 text, or holds anchors, merge keys or
    a key twice, is refused with one line. Nothing of the file's content is quoted: it may hold secrets."""
    name = f"{what}: {path}"
    try:
        with open(path, "rb") as fh:
            raw = fh.read(yamlload.MAX_BYTES + 1)  # bounded: the path may be a huge file, or /dev/zero
    except OSError as exc:
        raise CliError(f"{what}: cannot read {path}: {exc.strerror}") from None
    if len(raw) > yamlload.MAX_BYTES:
        raise CliError(f"{name} is larger than {yamlload.MAX_BYTES} bytes (no stack file needs that much)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _position(raw[: exc.start].decode("utf-8", "replace"))
        raise CliError(f"{name} line {line} column {column}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                       "is it a binary or an encrypted file?") from None
    hidden = _HIDDEN.search(text)
    if hidden:
        line, column = _position(text[: hidden.start()])
        raise CliError(f"{name} line {line} column {column}: character U+{ord(hidden.group()):04X} is not allowed "
                       "in a stack file (a control, line-separator or bidi character)")
    try:
        document = yamlload.load(text, name)
    except yamlload.YamlError as exc:
        raise CliError(str(exc)) from None
    if document.merge_keys:
        raise CliError(f"{name} {document.merge_keys[0]}: merge keys (<<) are not accepted; write the settings out")
    if document.duplicate_keys:
        duplicate = document.duplicate_keys[0]
        shown = duplicate if duplicate.isprintable() and len(duplicate) <= 100 else repr(duplicate)[:100]
        raise CliError(f"{name}: a mapping lists a key twice ({shown}); only one of its values would be read")
    return document.data


def _position(before: str) -> tuple[int, int]:
    """(line, column), both from 1, of the character after ``before``."""
    return before.count("\n") + 1, len(before) - before.rfind("\n")


def load_stack_file(path: str) -> Mapping[str, Any]:
    """A ``Pulumi.<stack>.yaml`` file as a mapping (its settings sit under ``config``)."""
    document = load_yaml(path, "--config")
    if not isinstance(document, Mapping):
        raise CliError(f"--config: {path} is not a stack config (want a mapping with a 'config' key)")
    return document


def load_json(path: str, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except OSError as exc:
        raise CliError(f"{what}: cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise CliError(f"{what}: {path} line {exc.lineno} is not valid JSON") from None
