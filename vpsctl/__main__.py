"""The operator tool for totp-vps stacks: render user-data, enroll phones, check configs, verify servers.

Run "python -m vpsctl COMMAND --help" for what a command does and its options.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from types import ModuleType
from typing import NoReturn

from vpsctl.errors import EXIT_BROKEN_PIPE, EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CliError, printable

# Subcommand -> module with ``add_arguments(parser)``, ``run(args) -> int``, a docstring that is its help
# (first line: the summary), ``EXITS`` (what exit 0, and every other code it ends with but 2, mean) and ``README_SECTION``.
COMMANDS = {
    "render": "vpsctl.render",
    "qr": "vpsctl.qr",
    "verify": "vpsctl.verify",
    "check": "vpsctl.check",
    "preflight": "vpsctl.preflight",
    "sync": "vpsctl.sync",
}
README = "README.md"
BAD_INPUT = "bad input (an argument, a file, a setting): one line on stderr naming it"
INTERRUPTED = "interrupted (Ctrl-C)"
BROKEN_PIPE = "the program reading the output quit early (as with | head)"


class Parser(argparse.ArgumentParser):
    """argparse with the one error convention: a bad argument is one line, ``vpsctl CMD: error: ...``,
    exit 2 (argparse's own prints the usage first, which buries the line that matters)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {printable(message)} (see --help)\n")


def exit_codes(exits: dict[int, str]) -> str:
    """The help's exit-code block: the command's own codes and the ones every command shares."""
    every = {**exits, EXIT_USAGE: BAD_INPUT, EXIT_INTERRUPTED: INTERRUPTED, EXIT_BROKEN_PIPE: BROKEN_PIPE}
    return "exit codes:\n" + "".join(f"  {code:<4} {meaning}\n" for code, meaning in sorted(every.items()))


def _every_exit(modules: dict[str, ModuleType]) -> dict[int, str]:
    """The top-level help's exit codes: each one the commands use, with the commands that use it (taken from
    their EXITS, so a command that learns a new way to fail cannot be left out)."""
    users: dict[int, list[str]] = {}
    for name, module in modules.items():
        for code in module.EXITS:
            users.setdefault(code, []).append(name)
    exits = {EXIT_OK: "done"}
    for code, names in sorted(users.items()):
        if code == EXIT_FAIL:
            exits[code] = f"a check failed or a change did not go through ({', '.join(names)})"
        elif code != EXIT_OK:
            exits[code] = "; ".join(f"{name}: {modules[name].EXITS[code]}" for name in names)
    return exits


def parser(argv: list[str] | None = None) -> Parser:
    """The CLI's parser. Only the command ``argv`` names is imported (the others pull in Pulumi, paramiko
    or hcloud: most of a second before a bad config can even be reported); every one for help and usage
    errors."""
    chosen = [argv[0]] if argv and argv[0] in COMMANDS else list(COMMANDS)
    modules = {name: importlib.import_module(COMMANDS[name]) for name in chosen}
    top = Parser(
        prog="vpsctl",
        description=__doc__,
        epilog=exit_codes(_every_exit(modules)) + f'\nMore: {README}, section "Operator CLI".',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands", help="one of:")
    for name, module in modules.items():
        doc = (module.__doc__ or "").strip()
        sub_parser = sub.add_parser(
            name,
            help=doc.splitlines()[0],
            description=doc,
            epilog=exit_codes(module.EXITS) + f'\nMore: {README}, section "{module.README_SECTION}".',
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub_parser)
    return top


def main(argv: list[str] | None = None) -> int:
    command = "vpsctl"
    try:
        argv = sys.argv[1:] if argv is None else argv
        args = parser(argv).parse_args(argv)  # a bad argument ends here: Parser.error, exit 2
        command = f"vpsctl {args.command}"
        code = int(importlib.import_module(COMMANDS[args.command]).run(args))
        sys.stdout.flush()  # a closed pipe shows here, in the handlers below, not in the flush at exit
        return code
    except CliError as exc:
        return _error(command, str(exc), exc.exit_code)
    except ValueError as exc:  # ConfigError and friends: a bad setting, already one line
        return _error(command, str(exc), EXIT_USAGE)
    except BrokenPipeError:  # the reader went away (`| head`): nothing is wrong, and nobody reads more
        # Python's own recipe: stdout to /dev/null, so the flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as exc:  # a file or folder given on the command line cannot be used
        return _error(command, f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        return _error(command, INTERRUPTED, EXIT_INTERRUPTED)


def _error(command: str, message: str, code: int) -> int:
    print(f"{command}: error: {printable(message)}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
