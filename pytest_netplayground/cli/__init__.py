"""The ``netplay`` command line (and ``plg``, the original tool's spelling)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..core import defaults
from ..errors import NetplayError
from .commands import COMMANDS, EXIT_ERROR, cmd_record, cmd_replay, cmd_run
from .options import DEFAULT_FILE, build_legacy_parser, build_parser
from .runner import exit_code_of, run_commands

EXIT_USAGE = 2

__all__ = [
    "DEFAULT_FILE",
    "EXIT_ERROR",
    "EXIT_USAGE",
    "build_legacy_parser",
    "build_parser",
    "exit_code_of",
    "legacy_main",
    "main",
    "plg_main",
    "run_commands",
]


def _legacy_command(args: argparse.Namespace) -> int:
    if args.record:
        return cmd_record(args)
    if args.replay:
        return cmd_replay(args)
    if args.speed is not None or args.flood:
        raise NetplayError("--speed and --flood go with --replay")
    return cmd_run(args)


def _run_command(prog: str, command, args: argparse.Namespace) -> int:
    """Run a command, turning our errors into a message and an exit status."""
    try:
        return command(args)
    except NetplayError as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def legacy_main(argv: Sequence[str], prog: str = "plg") -> int:
    args = build_legacy_parser(prog).parse_args(argv)
    args.causal = False
    # Replay settings the original tool's flags cannot set.
    args.stall_timeout = defaults.STALL_TIMEOUT
    args.settle = defaults.SETTLE
    args.match = defaults.MATCH
    args.ignore = []
    args.check = []
    args.runs = 1
    return _run_command(prog, _legacy_command, args)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        return legacy_main(argv, prog="netplay")
    args = build_parser().parse_args(argv)
    return _run_command("netplay", COMMANDS[args.action], args)


def plg_main(argv: Sequence[str] | None = None) -> int:
    """The original tool's command line: ``plg [--record|--replay] [-s SUBNET] [-f FILE] CMD ...``."""
    return legacy_main(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
