"""Errors the CLI turns into one line and an exit code."""

from __future__ import annotations

EXIT_FAIL = 1  # a check ran and failed (verify, check)
EXIT_USAGE = 2  # bad input: config, arguments, files


class CliError(Exception):
    """An expected failure: shown as one line, never with a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code
