"""``python -m vpsctl COMMAND``: one entry point, one error convention.

Every expected failure (bad config, missing file, failed check) becomes one line on stderr and a
non-zero exit; a traceback means a bug in vpsctl itself.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from vpsctl.errors import EXIT_USAGE, CliError

# Subcommand -> module with ``add_arguments(parser)``, ``run(args) -> int`` and a docstring.
COMMANDS = {
    "render": "vpsctl.render",
    "qr": "vpsctl.qr",
    "verify": "vpsctl.verify",
    "check": "vpsctl.check",
    "preflight": "vpsctl.preflight",
    "sync": "vpsctl.sync",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="vpsctl", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    # Only the command asked for is imported (the others pull in Pulumi, paramiko or hcloud: most of a
    # second before a bad config can even be reported); the full list only for help and usage errors.
    chosen = [argv[0]] if argv and argv[0] in COMMANDS else list(COMMANDS)
    for name in chosen:
        module = importlib.import_module(COMMANDS[name])
        summary = (module.__doc__ or "").strip().splitlines()[0]
        module.add_arguments(sub.add_parser(name, help=summary, description=summary))
    args = parser.parse_args(argv)
    try:
        return int(importlib.import_module(COMMANDS[args.command]).run(args))
    except CliError as exc:
        print(f"vpsctl {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValueError as exc:  # ConfigError and friends: a bad setting, already one line
        print(f"vpsctl {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
