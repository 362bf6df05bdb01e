"""The CLI's one exit-code convention, its errors, and what makes text from outside safe to print."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAIL = 1  # a check ran and failed (verify, check)
EXIT_USAGE = 2  # bad input: config, arguments, files
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, what a shell reports for a process SIGINT ended
EXIT_BROKEN_PIPE = 141  # output piped into a reader that quit early: 128 + SIGPIPE, as for any other tool


class CliError(Exception):
    """An expected failure: shown as one line, never with a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on or hide written as an escape (``\\x1b``,
    ``\\n``, ``\\u202e``): C0/C1 controls, format characters such as bidi overrides, line separators.

    For values from outside (stack outputs, file names in error messages): a hostile value must not be
    able to move the cursor, recolour or retitle the terminal, or split one error line into several."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
