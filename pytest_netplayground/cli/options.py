"""The argument parsers of ``netplay`` and of ``plg``, the original tool's flags."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .. import __version__
from ..core import defaults
from ..core.addressing import DEFAULT_SUBNET
from ..core.exchange import Match
from ..core.validation import TLS_MODES, non_negative_number, positive_number, record_runs
from ..errors import ConfigError
from .fault_options import add_fault_options
from .remote import add_agent_command, add_remote_options
from .shadow_options import add_shadow_options

DEFAULT_FILE = "test.traffic"
#: A command given as this makes its host but runs nothing in it.
NO_COMMAND = "-"


def _checked(convert: Callable[[str], object], name: str) -> Callable[[str], object]:
    """An argparse type from a shared validator: a bad value is a usage error naming the flag."""

    def parse(text: str) -> object:
        try:
            return convert(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = name  # argparse names the type in some of its messages
    return parse


_POSITIVE = _checked(positive_number, "positive number")
_NON_NEGATIVE = _checked(non_negative_number, "non-negative number")


def _add_sandbox_options(parser: argparse.ArgumentParser) -> None:
    add_remote_options(parser)
    parser.add_argument(
        "-s",
        "--subnet",
        default=DEFAULT_SUBNET,
        help=f"network the hosts get addresses from (default {DEFAULT_SUBNET})",
    )
    parser.add_argument(
        "--subnet6",
        metavar="PREFIX",
        help="IPv6 prefix the hosts get addresses from (default: a unique local /64 derived from the subnet)",
    )
    parser.add_argument("-u", "--uid", help="run the commands as this user (name or number)")
    parser.add_argument("-g", "--gid", help="run the commands with this group (name or number)")
    parser.add_argument(
        "-k",
        "--kill",
        default="TERM",
        metavar="SIGNAL",
        help="signal that stops the commands at the end of the run or on Ctrl-C (default TERM)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every packet the router sees")
    parser.add_argument(
        "--tls",
        choices=TLS_MODES,
        default="off",
        help="off (default): TLS is relayed and recorded as ciphertext; intercept: the proxy terminates it "
        "with the sandbox CA, which every host trusts, and records the plaintext (a replay of a cassette "
        "recorded so intercepts anyway)",
    )
    parser.add_argument(
        "--tls-ca-dir",
        metavar="DIR",
        help="directory of the sandbox CA (default: $NETPLAY_CA_DIR, else ~/.local/share/netplayground/ca)",
    )
    parser.add_argument(
        "--grace",
        type=_NON_NEGATIVE,
        default=defaults.GRACE,
        help=f"seconds between the kill signal and SIGKILL (default {defaults.GRACE:g})",
    )
    parser.add_argument(
        "--names",
        metavar="NAME,NAME,...",
        help="names of the hosts, in command order (DNS labels, unique; default h1, h2, ...)",
    )
    end = parser.add_mutually_exclusive_group()
    end.add_argument(
        "--exit-code-from",
        metavar="HOST",
        help="end the run when this host's command exits, with its exit status; "
        "HOST is a command's number (1 = first), its address or its name",
    )
    end.add_argument(
        "--abort-on-exit",
        action="store_true",
        help="end the run when any command exits, with that command's exit status",
    )
    parser.add_argument(
        "commands",
        nargs="+",
        metavar="CMD",
        help="one command per host, run by /bin/sh -c (first gets .1, second .2, ...); "
        f"'{NO_COMMAND}' makes the host but runs nothing in it",
    )
    add_fault_options(parser)
    add_shadow_options(parser)


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nolog", action="store_true", help="do not print the commands' output")


def _add_keep_going(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="write the cassette even if the run failed (default: keep the old one, "
        "leave the new recording beside it as NAME.failed.SUFFIX)",
    )


def _add_strict(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strict",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="exit non-zero if the replay diverged (the default); --no-strict only reports it",
    )


def _add_replay_options(parser: argparse.ArgumentParser) -> None:
    pacing = parser.add_mutually_exclusive_group()
    pacing.add_argument(
        "--speed", type=_POSITIVE, metavar="X", help="pace as recorded, X times as fast (--speed 1: as recorded)"
    )
    pacing.add_argument("--flood", action="store_true", help="send recorded bytes as fast as possible")
    pacing.add_argument(
        "--causal",
        action="store_true",
        help="send each recorded chunk once the live side has said what it said before it (the default)",
    )
    _add_strict(parser)
    parser.add_argument(
        "--stall-timeout",
        type=_POSITIVE,
        default=defaults.STALL_TIMEOUT,
        metavar="S",
        help="a causal replay waiting longer than S seconds for a silent side reports a stall "
        f"and plays the rest of the recording (default {defaults.STALL_TIMEOUT:g})",
    )
    parser.add_argument(
        "--settle",
        type=_POSITIVE,
        default=defaults.SETTLE,
        metavar="S",
        help="a live side that sent less than recorded has had its turn after S seconds of quiet "
        f"(default {defaults.SETTLE:g})",
    )
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="REGEX",
        help="bytes matching REGEX may differ (repeatable); "
        "scope it as PORT:REGEX, s2c:REGEX or PORT:c2s:REGEX",
    )
    parser.add_argument(
        "--check",
        action="append",
        default=[],
        metavar="HOSTS",
        help="compare only what these hosts send (names or addresses, comma-separated, repeatable; "
        "default all); the others' differences are reported as information",
    )
    parser.add_argument(
        "--match",
        choices=[match.value for match in Match],
        default=defaults.MATCH,
        help="pair each live connection with a recorded one (connection, the default), or answer each "
        "request with the reply to the same recorded request of any connection (exchange: for pools)",
    )


def _add_runs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs",
        type=_checked(record_runs, "number of runs"),
        default=1,
        metavar="N",
        help="run the commands N times and store what differed between the runs as noise (default 1); "
        "a failed run stops there, as one recording would",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netplay",
        description="Run programs in a sandbox of network namespaces; record and replay their TCP and UDP traffic.",
    )
    parser.add_argument("--version", action="version", version=f"netplay {__version__}")
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    run = sub.add_parser("run", help="run commands, one host each, live")
    _add_sandbox_options(run)
    record = sub.add_parser("record", help="run commands and record their TCP and UDP traffic to a cassette")
    record.add_argument(
        "-f", "--file", default=DEFAULT_FILE, help=f"cassette to write (default {DEFAULT_FILE})"
    )
    _add_runs(record)
    _add_keep_going(record)
    _add_output_options(record)
    _add_sandbox_options(record)
    replay = sub.add_parser("replay", help="run commands against the traffic recorded in a cassette")
    replay.add_argument(
        "-f", "--file", default=DEFAULT_FILE, help=f"cassette to replay (default {DEFAULT_FILE})"
    )
    _add_replay_options(replay)
    _add_output_options(replay)
    _add_sandbox_options(replay)
    show = sub.add_parser("show", help="print each recorded connection's conversation, with timings")
    show.add_argument("cassette")
    show.add_argument("--width", type=int, default=80, help="line width of hex dumps (default 80)")
    export = sub.add_parser("export", help="write a cassette's connections as a pcap file")
    export.add_argument("cassette")
    export.add_argument("-o", "--output", required=True, help="pcap file to write")
    from .tunnel_decode import add_tunnel_decode_command

    add_tunnel_decode_command(sub)
    _add_import(sub)
    from .drive import add_drive_parser

    add_drive_parser(sub)
    add_agent_command(sub)
    return parser


def _add_import(sub) -> None:
    parser = sub.add_parser(
        "import", help="reassemble the TCP streams and UDP flows of a pcap or pcapng capture into a cassette"
    )
    parser.add_argument("capture", help="pcap or pcapng file (tcpdump -w, Wireshark)")
    parser.add_argument("-o", "--output", required=True, help="cassette to write")
    parser.add_argument(
        "--filter", metavar="EXPR", help="import only packets matching EXPR, e.g. 'tcp port 80 and host 192.0.2.7'"
    )
    parser.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="give the capture's address OLD the sandbox address NEW (repeatable); "
        "other addresses get free hosts in order, servers first",
    )
    parser.add_argument(
        "--gaps",
        choices=["cut", "keep"],
        default="cut",
        help="at bytes the capture lacks, end the connection there (cut, the default) or go on without them",
    )
    parser.add_argument(
        "--truncated",
        action="store_true",
        help="import a capture cut short mid-record up to the cut (default: refuse it)",
    )
    parser.add_argument(
        "-s", "--subnet", default=DEFAULT_SUBNET, help=f"the replay sandbox's subnet (default {DEFAULT_SUBNET})"
    )
    parser.add_argument(
        "--subnet6", metavar="PREFIX", help="the replay sandbox's IPv6 prefix (default: derived from the subnet)"
    )


def build_legacy_parser(prog: str = "plg") -> argparse.ArgumentParser:
    """The original tool's flags: ``plg --record -s 10.0.0.0/24 -f dump.traffic exe1 exe2``."""
    parser = argparse.ArgumentParser(prog=prog, description="Run, record or replay programs in a sandbox.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--record", action="store_true", help="record the traffic to --file")
    mode.add_argument("--replay", action="store_true", help="replay the traffic in --file")
    parser.add_argument("-f", "--file", default=DEFAULT_FILE, help=f"cassette (default {DEFAULT_FILE})")
    pacing = parser.add_mutually_exclusive_group()
    pacing.add_argument("--speed", type=_POSITIVE, metavar="X", help="replay paced as recorded, X times as fast")
    pacing.add_argument("--flood", action="store_true", help="replay as fast as possible")
    _add_strict(parser)
    _add_keep_going(parser)
    parser.add_argument("--nolog", action="store_true", help="do not print the commands' output")
    _add_sandbox_options(parser)
    return parser
