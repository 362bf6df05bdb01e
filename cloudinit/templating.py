"""The one jinja2 environment for every template in cloudinit/templates (YAML, shell, sshd, PAM, sudoers)."""

from __future__ import annotations

import json
from functools import cache

import jinja2


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cloudinit", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - YAML, shell and config files, not HTML; values are quoted with |q
    )
    # JSON is valid YAML flow syntax: a safe way to quote any string or list. ensure_ascii=False keeps
    # characters outside the BMP whole (JSON's surrogate-pair escapes decode to lone surrogates in YAML).
    env.filters["q"] = lambda value: json.dumps(list(value) if isinstance(value, tuple) else value, ensure_ascii=False)
    return env


@cache
def template(name: str) -> jinja2.Template:
    # Held here: jinja2's own cache stats the file on every lookup (auto_reload), half of a render.
    return _environment().get_template(name)
