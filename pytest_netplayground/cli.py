"""The ``netplay`` command line (and ``plg``, the original tool's spelling)."""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import sys
import time
from typing import Sequence

from . import __version__
from .core.addressing import DEFAULT_SUBNET, Subnet
from .core.coverage import udp_line
from .core.noise import check_hosts
from .errors import NetplayError

EXIT_USAGE = 2
EXIT_ERROR = 1
DEFAULT_FILE = "test.traffic"


class Colors:
    PALETTE = ["36", "33", "32", "35", "34", "96", "93", "92", "95", "94"]

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def prefix(self, index: int, text: str) -> bytes:
        if not self.enabled:
            return text.encode()
        code = self.PALETTE[index % len(self.PALETTE)]
        return f"\x1b[{code}m{text}\x1b[0m".encode()


def _add_sandbox_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-s",
        "--subnet",
        default=DEFAULT_SUBNET,
        help=f"network the hosts get addresses from (default {DEFAULT_SUBNET})",
    )
    parser.add_argument("-u", "--uid", help="run the commands as this user (name or number)")
    parser.add_argument("-g", "--gid", help="run the commands with this group (name or number)")
    parser.add_argument(
        "-k",
        "--kill",
        default="TERM",
        metavar="SIGNAL",
        help="signal that stops the commands on Ctrl-C or teardown (default TERM)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every packet the router sees")
    parser.add_argument(
        "--grace", type=float, default=5.0, help="seconds between the kill signal and SIGKILL (default 5)"
    )
    parser.add_argument(
        "commands",
        nargs="+",
        metavar="CMD",
        help="one command per host, run by /bin/sh -c (first gets .1, second .2, ...)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netplay",
        description="Run programs in a sandbox of network namespaces; record and replay their TCP traffic.",
    )
    parser.add_argument("--version", action="version", version=f"netplay {__version__}")
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    run = sub.add_parser("run", help="run commands, one host each, live")
    _add_sandbox_options(run)
    record = sub.add_parser("record", help="run commands and record their TCP traffic to a cassette")
    record.add_argument(
        "-f", "--file", default=DEFAULT_FILE, help=f"cassette to write (default {DEFAULT_FILE})"
    )
    record.add_argument(
        "--runs",
        type=_runs,
        default=1,
        metavar="N",
        help="run the commands N times and store what differed between the runs as noise (default 1)",
    )
    _add_output_options(record)
    _add_sandbox_options(record)
    replay = sub.add_parser("replay", help="run commands against the TCP traffic recorded in a cassette")
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
    return parser


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nolog", action="store_true", help="do not print the commands' output")


def _add_replay_options(parser: argparse.ArgumentParser) -> None:
    pacing = parser.add_mutually_exclusive_group()
    pacing.add_argument(
        "--speed", type=float, metavar="X", help="pace as recorded, X times as fast (--speed 1: as recorded)"
    )
    pacing.add_argument("--flood", action="store_true", help="send recorded bytes as fast as possible")
    pacing.add_argument(
        "--causal",
        action="store_true",
        help="send each recorded chunk once the live side has said what it said before it (the default)",
    )
    parser.add_argument("--strict", action="store_true", help="exit non-zero if the replay diverged")
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="a causal replay waiting longer than S seconds for a silent side reports a stall "
        "and plays the rest of the recording (default 5)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=0.2,
        metavar="S",
        help="a live side that sent less than recorded has had its turn after S seconds of quiet (default 0.2)",
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
        choices=("connection", "exchange"),
        default="connection",
        help="pair each live connection with a recorded one (connection, the default), or answer each "
        "request with the reply to the same recorded request of any connection (exchange: for pools)",
    )


def _runs(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 9:
        raise argparse.ArgumentTypeError(f"expected a number of runs from 1 to 9, got {value!r}")
    return int(value)


def _id(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.isdigit() else value


def exit_code_of(returncode: int) -> int:
    """A shell's view of a process's end: 128 + signal for a killed one."""
    return 128 - returncode if returncode < 0 else returncode


class _Stopper:
    """Turns SIGINT/SIGTERM into a flag the main loop sees (via a wakeup pipe)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old = {}

    def __enter__(self) -> "_Stopper":
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        try:
            os.write(self.w, b"x")
        except OSError:
            pass

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        os.close(self.r)
        os.close(self.w)


def run_commands(
    sandbox, commands: Sequence[str], *, uid=None, gid=None, out=None, err=None, quiet: bool = False
) -> int:
    """Run ``commands`` one per host with prefixed output; return the exit code."""
    from .runtime.sandbox import PIPE

    out = out if out is not None else sys.stdout.buffer
    err = err if err is not None else sys.stderr.buffer
    colors = Colors(hasattr(out, "isatty") and out.isatty() and "NO_COLOR" not in os.environ)
    hosts = [sandbox.add_host() for _ in commands]
    width = max(len(h.address) for h in hosts)
    processes = []
    sel = selectors.DefaultSelector()
    for index, (host, command) in enumerate(zip(hosts, commands)):
        proc = host.spawn(
            ["/bin/sh", "-c", command], stdout=PIPE, stderr=PIPE, stdin=PIPE, user=uid, group=gid
        )
        proc.stdin.close()
        prefix = colors.prefix(index, f"{host.address.ljust(width)} | ")
        processes.append(proc)
        for stream, sink in ((proc.stdout, out), (proc.stderr, err)):
            sel.register(stream, selectors.EVENT_READ, [prefix, None if quiet else sink, b""])
    stopped_by: int | None = None
    deadline = None
    with _Stopper() as stopper:
        sel.register(stopper.r, selectors.EVENT_READ, None)
        while len(sel.get_map()) > 1:
            if deadline is not None and time.monotonic() > deadline:
                break
            for key, _ in sel.select(0.5):
                if key.data is None:
                    os.read(stopper.r, 64)
                    if stopped_by is None:
                        # Stop the commands with the kill signal, keep relaying
                        # what they print on the way out, SIGKILL after grace.
                        stopped_by = stopper.signum or signal.SIGINT
                        deadline = time.monotonic() + sandbox.grace
                        for proc in processes:
                            proc.send_signal(sandbox.kill_signal, group=True)
                    continue
                prefix, sink, partial = key.data
                data = os.read(key.fd, 65536)
                if sink is None:
                    if not data:
                        sel.unregister(key.fileobj)
                        key.fileobj.close()
                    continue
                if not data:
                    if partial:
                        sink.write(prefix + partial + b"\n")
                        sink.flush()
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
                    continue
                lines = (partial + data).split(b"\n")
                key.data[2] = lines.pop()
                if lines:
                    sink.write(b"".join(prefix + line + b"\n" for line in lines))
                    sink.flush()
        sel.close()
        if stopped_by is not None:
            sandbox.interrupted = True
            return 128 + stopped_by
    # The first command (in the order given) that failed decides.
    codes = [proc.wait() for proc in processes]
    return next((exit_code_of(code) for code in codes if code != 0), 0)


def _make_sandbox(args, **mode):
    from .runtime.sandbox import Sandbox

    return Sandbox(args.subnet, kill_signal=args.kill, grace=args.grace, verbose=args.verbose, **mode)


def _check_capacity(args) -> None:
    subnet = Subnet.parse(args.subnet)
    if len(args.commands) > subnet.capacity:
        raise NetplayError(
            f"{len(args.commands)} commands but subnet {subnet} has room for {subnet.capacity} hosts: "
            "use a larger subnet (-s)"
        )


def cmd_run(args) -> int:
    _check_capacity(args)
    sandbox = _make_sandbox(args)
    try:
        sandbox.start()
        return run_commands(sandbox, args.commands, uid=_id(args.uid), gid=_id(args.gid))
    finally:
        sandbox.close()


def _pacing(args) -> dict:
    if args.flood:
        return {"pace": "flood"}
    if args.speed is not None:
        return {"pace": "recorded", "speed": args.speed}
    return {"pace": "causal"}


def _record_once(args, path: str) -> tuple[int, bool, str | None]:
    """One recording of the commands to *path*: (exit code, interrupted, where a cut-short one is)."""
    sandbox = _make_sandbox(args, mode="record", cassette=path)
    sandbox.interrupted = False
    code = EXIT_ERROR
    try:
        sandbox.start()
        code = run_commands(sandbox, args.commands, uid=_id(args.uid), gid=_id(args.gid), quiet=args.nolog)
    finally:
        interrupted = sandbox.interrupted or code == EXIT_ERROR and not sandbox.hosts
        sandbox.close("abort" if interrupted else "commit")
    if sandbox.udp:
        sys.stderr.write(f"netplay: {udp_line(sandbox.udp)}: cassettes hold TCP only\n")
    return code, interrupted, sandbox.cassette_written


def cmd_record(args) -> int:
    from .learning import commit_with_noise, run_path

    _check_capacity(args)
    runs = getattr(args, "runs", 1)
    paths = [args.file] if runs == 1 else [str(run_path(args.file, run)) for run in range(1, runs + 1)]
    codes = []
    for path in paths:
        code, interrupted, written = _record_once(args, path)
        codes.append(code)
        if interrupted:
            for done in paths[: len(codes) - 1]:
                os.unlink(done)
            sys.stderr.write(
                f"netplay: interrupted: the recording so far is in {written}; "
                f"{args.file} was left as it was\n"
            )
            return code
    if runs > 1:
        noise = commit_with_noise(paths[0], paths[1:], args.file)
        regions = sum(len(item.spans) for item in noise)
        sys.stderr.write(
            f"netplay: recorded {args.file} ({runs} runs: {regions} noise "
            f"region{'s' if regions != 1 else ''} in {len(noise)} turn{'s' if len(noise) != 1 else ''})\n"
        )
    else:
        sys.stderr.write(f"netplay: recorded {args.file}\n")
    # The first run that failed decides, as the first command that failed does within a run.
    return next((code for code in codes if code != 0), 0)


def cmd_replay(args) -> int:
    _check_capacity(args)
    sandbox = _make_sandbox(
        args,
        mode="replay",
        cassette=args.file,
        stall_timeout=args.stall_timeout,
        settle=args.settle,
        ignore=getattr(args, "ignore", ()),
        check=[host for item in getattr(args, "check", ()) for host in check_hosts(item)],
        match=args.match,
        **_pacing(args),
    )
    sandbox.interrupted = False
    try:
        sandbox.start()
        code = run_commands(sandbox, args.commands, uid=_id(args.uid), gid=_id(args.gid), quiet=args.nolog)
    finally:
        sandbox.close()
    report = sandbox.divergences
    if sandbox.truncated_at is not None:
        sys.stderr.write(
            f"netplay: {args.file} was cut short at byte {sandbox.truncated_at}: replayed what came before\n"
        )
    if not report.ok:
        sys.stderr.write(f"netplay: the replay diverged from {args.file}:\n{report.format()}\n")
        if args.strict and code == 0:
            return EXIT_ERROR
    return code


def cmd_show(args) -> int:
    from .cassette import Cassette
    from .core.render import render_conversations

    cassette = Cassette(args.cassette, tolerate_truncation=True)
    text = render_conversations(cassette.header, cassette.records(), width=args.width)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if cassette.truncated_at is not None:
        sys.stderr.write(f"netplay: {args.cassette} is cut short at byte {cassette.truncated_at}\n")
    return 0


def cmd_export(args) -> int:
    from .export_pcap import export_pcap

    count = export_pcap(args.cassette, args.output, tolerate_truncation=True)
    sys.stderr.write(f"netplay: wrote {count} packets to {args.output}\n")
    return 0


COMMANDS = {
    "run": cmd_run,
    "record": cmd_record,
    "replay": cmd_replay,
    "show": cmd_show,
    "export": cmd_export,
}


def build_legacy_parser(prog: str = "plg") -> argparse.ArgumentParser:
    """The original tool's flags: ``plg --record -s 10.0.0.0/24 -f dump.traffic exe1 exe2``."""
    parser = argparse.ArgumentParser(prog=prog, description="Run, record or replay programs in a sandbox.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--record", action="store_true", help="record the TCP traffic to --file")
    mode.add_argument("--replay", action="store_true", help="replay the TCP traffic in --file")
    parser.add_argument("-f", "--file", default=DEFAULT_FILE, help=f"cassette (default {DEFAULT_FILE})")
    pacing = parser.add_mutually_exclusive_group()
    pacing.add_argument("--speed", type=float, metavar="X", help="replay paced as recorded, X times as fast")
    pacing.add_argument("--flood", action="store_true", help="replay as fast as possible")
    parser.add_argument("--strict", action="store_true", help="exit non-zero if the replay diverged")
    parser.add_argument("--nolog", action="store_true", help="do not print the commands' output")
    _add_sandbox_options(parser)
    return parser


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
    args.stall_timeout = 5.0
    args.settle = 0.2
    args.match = "connection"
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
