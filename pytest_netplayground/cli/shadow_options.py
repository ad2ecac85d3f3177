"""The command line's shadows: ``--shadow 10.0.0.1:80=10.0.0.3:80``, their report and exit status.

The flags become ``sb.shadow()`` calls once the hosts exist; before the run's
other commands are stopped, the connections in flight get the shadow's
patience to end; after the sandbox closes, each shadow's report is printed and
a candidate that answered differently (or whose shadow failed) makes the
command exit non-zero.
"""

from __future__ import annotations

import argparse
import sys

from ..core.shadow import PATIENCE, parse_shadow_flag
from ..core.validation import positive_number
from ..errors import ConfigError

#: The exit status when every command succeeded but a candidate differed or its shadow failed.
EXIT_SHADOW = 1


def _flag(text: str) -> tuple[str, str]:
    try:
        return parse_shadow_flag(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _patience(text: str) -> float:
    try:
        return positive_number(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_shadow_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "shadowing (see docs/shadow.rst)",
        "mirror every connection to a primary server to a candidate server and compare their answers; "
        "the client only ever talks to the primary, the recording holds only the primary's conversation. "
        f"The command exits {EXIT_SHADOW} (when the commands succeeded) if a candidate answered differently "
        "or its shadow failed (refused, reset, stalled or fell behind)",
    )
    group.add_argument(
        "--shadow",
        action="append",
        default=[],
        type=_flag,
        metavar="PRIMARY=CANDIDATE",
        help="each HOST:PORT, host by address or name (e.g. 10.0.0.1:80=10.0.0.3:80; the candidate's port "
        "defaults to the primary's); repeatable",
    )
    group.add_argument(
        "--shadow-ignore",
        action="append",
        default=[],
        metavar="REGEX",
        help="bytes of the answers matching REGEX may differ (repeatable; scope it as PORT:REGEX or s2c:REGEX)",
    )
    group.add_argument(
        "--shadow-patience",
        type=_patience,
        default=PATIENCE,
        metavar="S",
        help=f"seconds a candidate has to accept a connection and to finish its answer after the primary "
        f"(default {PATIENCE:g})",
    )


def start_shadows(sandbox, args) -> None:
    """Start the shadows the flags ask for (the hosts exist by now)."""
    for primary, candidate in getattr(args, "shadow", ()):
        sandbox.shadow(primary, to=candidate, ignore=tuple(args.shadow_ignore), patience=args.shadow_patience)


def drain_shadows(sandbox) -> None:
    """Before the servers are stopped: let the candidates finish answering (a bounded time)."""
    from ..runtime.shadows import settle_all

    settle_all(sandbox)


def say_shadows(sandbox, code: int, out=None) -> int:
    """Print each shadow's report; the exit status, made non-zero if a candidate differed or failed."""
    out = out if out is not None else sys.stderr
    ok = True
    for shadow in sandbox.shadows:
        report = shadow.report
        out.write("netplay: " + report.format() + "\n")
        ok = ok and report.ok
    out.flush()
    return code if code != 0 or ok else EXIT_SHADOW
