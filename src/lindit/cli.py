"""The ``lindit`` command: one entry point, one subcommand per capability.

Each subcommand lives in its own module, which defines ``add_parser(subparsers)``; the parser it adds
sets ``func`` (called with the parsed args; its return value is the exit code). Modules are imported only
when their command runs, so ``lindit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> module that defines add_parser(subparsers)
COMMANDS = {
    "convert": "lindit.convert_cli",
    "bench": "lindit.eval.bench_cli",
}


class CLIError(Exception):
    """A user error: printed as one line, exit code 2, no traceback."""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lindit", description="Linear-time diffusion transformers.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        if only is None or name == only:
            importlib.import_module(module).add_parser(sub)
        else:
            sub.add_parser(name, help=f"(see lindit {name} --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if command is None else 2
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, FileNotFoundError) as err:
        print(f"lindit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
