"""File helpers shared by the subcommands: secrets are only ever written owner-only."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from vpsctl.errors import CliError


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
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except OSError as exc:
        raise CliError(f"{what}: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise CliError(f"{what}: {path}{where} is not valid YAML") from None


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
