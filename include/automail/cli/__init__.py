"""The `automail` command: home of every non-UI action.

Each module in this package that defines `register(subparsers)` adds its own
subcommands, so features add commands without editing a central list.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="automail", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from automail.db import StoreConnectionError, StoreNotMigrated

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    from automail.sending.smtp import _logs_off_stdout

    _logs_off_stdout()  # stdout carries the command's output only
    try:
        result = args.func(args)
    except (CliError, ValueError, LookupError, StoreNotMigrated, StoreConnectionError) as exc:
        print(f"automail: error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
