"""``netplay drive``: play a cassette's clients against live servers and report how they answered."""

from __future__ import annotations

import json
import os
import sys
import threading

from ..core import defaults
from ..core.addressing import DEFAULT_SUBNET
from ..core.drive_plan import DriveOptions, noise_run_count
from ..errors import CassetteMissing, ConfigError
from .options import _NON_NEGATIVE, _POSITIVE, NO_COMMAND, _checked

EXIT_DIFFERS = 1
EXIT_USAGE = 2


def add_drive_parser(sub) -> None:
    parser = sub.add_parser(
        "drive",
        help="play a cassette's clients against live servers and compare their answers with the recorded ones",
    )
    parser.add_argument("-f", "--file", required=True, help="cassette whose clients are played")
    pacing = parser.add_mutually_exclusive_group()
    pacing.add_argument(
        "--speed",
        type=_POSITIVE,
        metavar="X",
        help="open connections and send requests at the recorded times, X times as fast",
    )
    pacing.add_argument(
        "--flood", action="store_true", help="open every connection at once and send without waiting"
    )
    parser.add_argument(
        "--rate", type=_POSITIVE, metavar="N", help="open N connections a second, in recorded order"
    )
    parser.add_argument(
        "--multiply",
        type=int,
        default=1,
        metavar="K",
        help="play each connection K times at once, from distinct ports",
    )
    parser.add_argument(
        "--sample",
        type=_POSITIVE,
        default=1.0,
        metavar="P",
        help="play a share P (0 < P <= 1) of the connections, the same on every run",
    )
    parser.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="run the recorded server OLD at address NEW (repeatable)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="SERVER",
        help="play only the connections to this recorded server: ADDR:PORT, ADDR or PORT (repeatable)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the report as JSON to FILE")
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="REGEX",
        help="answer bytes matching REGEX may differ (repeatable; scope as PORT:REGEX)",
    )
    parser.add_argument(
        "--noise-runs",
        type=_checked(noise_run_count, "number of runs"),
        default=0,
        metavar="N",
        help="first play every connection N more times and ignore what differs between those answers",
    )
    parser.add_argument(
        "--stall-timeout",
        type=_POSITIVE,
        default=defaults.STALL_TIMEOUT,
        metavar="S",
        help=f"a server silent for S seconds when an answer is due has stalled (default {defaults.STALL_TIMEOUT:g})",
    )
    parser.add_argument(
        "--settle",
        type=_POSITIVE,
        default=defaults.SETTLE,
        metavar="S",
        help=f"a server that answered has had its turn after S seconds of quiet (default {defaults.SETTLE:g})",
    )
    parser.add_argument(
        "--listen-timeout",
        type=_NON_NEGATIVE,
        default=5.0,
        metavar="S",
        help="wait up to S seconds for the servers to listen before driving (default 5)",
    )
    parser.add_argument(
        "-s", "--subnet", help=f"the sandbox's subnet (default: the cassette's, else {DEFAULT_SUBNET})"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show every connection's timings")
    parser.add_argument("--nolog", action="store_true", help="do not print the servers' output")
    parser.add_argument(
        "commands",
        nargs="+",
        metavar="SERVER_CMD",
        help="one command per recorded server, in address order, run by /bin/sh -c in the host of "
        f"its recorded (or mapped) address; '{NO_COMMAND}' runs nothing there",
    )


def _options(args) -> DriveOptions:
    pacing = "flood" if args.flood else "recorded" if args.speed is not None else "causal"
    return DriveOptions(
        pacing=pacing,
        speed=args.speed or 1.0,
        rate=args.rate,
        multiply=args.multiply,
        sample=args.sample,
        mapping=list(args.map),
        only=list(args.only),
    )


def _relay(stream, prefix: bytes, sink) -> None:
    """Copy a server's output to ``sink`` line by line, each line prefixed with its host."""
    for line in iter(stream.readline, b""):
        if sink is not None:
            sink.write(prefix + line if line.endswith(b"\n") else prefix + line + b"\n")
            sink.flush()
    stream.close()


def _spawn(sandbox, hosts: dict, servers: list, commands: list, quiet: bool) -> list:
    from ..runtime.sandbox import PIPE

    threads = []
    width = max(len(address) for address in servers)
    for address, command in zip(servers, commands):
        if command == NO_COMMAND:
            continue
        process = hosts[address].spawn(["/bin/sh", "-c", command], stdout=PIPE, stderr=PIPE, stdin=PIPE)
        process.stdin.close()
        prefix = f"{address.ljust(width)} | ".encode()
        for stream in (process.stdout, process.stderr):
            thread = threading.Thread(
                target=_relay, args=(stream, prefix, None if quiet else sys.stderr.buffer), daemon=True
            )
            thread.start()
            threads.append(thread)
    return threads


def cmd_drive(args) -> int:
    """Exit status: 0 when every connection was answered as recorded, 1 otherwise, 2 on usage errors."""
    try:
        report = _drive(args)
    except (ConfigError, CassetteMissing) as exc:
        sys.stderr.write(f"netplay drive: error: {exc}\n")
        return EXIT_USAGE
    sys.stdout.write(report.format(verbose=args.verbose) + "\n")
    achieved = report.achieved_rate()
    if args.rate is not None and achieved is not None:
        copies = f" x --multiply {args.multiply}" if args.multiply > 1 else ""
        sys.stdout.write(f"opened {achieved:.1f} connections a second (--rate {args.rate:g}{copies})\n")
    sys.stdout.flush()
    if args.json:
        with open(os.fspath(args.json), "w") as out:
            json.dump(report.to_json(), out, indent=2)
            out.write("\n")
    return 0 if report.ok else EXIT_DIFFERS


def _subnets(args) -> dict:
    """The subnet asked for, else the cassette's (its IPv6 prefix too), as recorded."""
    from ..cassette import Cassette

    cassette = Cassette(args.file, tolerate_truncation=True)
    cassette.close()
    header = cassette.header
    if args.subnet is not None:
        return {"subnet": args.subnet}
    return {"subnet": header.subnet or DEFAULT_SUBNET, "subnet6": header.subnet6 or None}


def _drive(args):
    from ..runtime.drive import drive, drive_hosts, recorded_servers
    from ..runtime.sandbox import Sandbox

    options = _options(args)
    servers = recorded_servers(args.file, options)
    if len(args.commands) > len(servers):
        raise ConfigError(
            f"{len(args.commands)} commands for the {len(servers)} servers of {args.file} "
            f"({', '.join(servers)}): give one per server, in address order"
        )
    sandbox = Sandbox(**_subnets(args))
    threads: list = []
    try:
        sandbox.start()
        hosts = drive_hosts(sandbox, args.file, options)
        threads = _spawn(sandbox, hosts, servers, args.commands, args.nolog)
        return drive(
            sandbox,
            args.file,
            options,
            ignore=tuple(args.ignore),
            noise_runs=args.noise_runs,
            stall_timeout=args.stall_timeout,
            settle=args.settle,
            listen_timeout=args.listen_timeout,
        )
    finally:
        sandbox.close()
        for thread in threads:
            thread.join(1.0)


__all__ = ["add_drive_parser", "cmd_drive"]
