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
from .errors import NetplayError

EXIT_USAGE = 2
EXIT_ERROR = 1


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
    parser.add_argument("-s", "--subnet", default=DEFAULT_SUBNET,
                        help=f"network the hosts get addresses from (default {DEFAULT_SUBNET})")
    parser.add_argument("-u", "--uid", help="run the commands as this user (name or number)")
    parser.add_argument("-g", "--gid", help="run the commands with this group (name or number)")
    parser.add_argument("-k", "--kill", default="TERM", metavar="SIGNAL",
                        help="signal that stops the commands on Ctrl-C or teardown (default TERM)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every packet the router sees")
    parser.add_argument("--grace", type=float, default=5.0,
                        help="seconds between the kill signal and SIGKILL (default 5)")
    parser.add_argument("commands", nargs="+", metavar="CMD",
                        help="one command per host, run by /bin/sh -c (first gets .1, second .2, ...)")


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
    return parser


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


def run_commands(sandbox, commands: Sequence[str], *, uid=None, gid=None, out=None, err=None) -> int:
    """Run ``commands`` one per host with prefixed output; return the exit code."""
    from .runtime.sandbox import PIPE

    out = out if out is not None else sys.stdout.buffer
    err = err if err is not None else sys.stderr.buffer
    colors = Colors(hasattr(out, "isatty") and out.isatty() and "NO_COLOR" not in os.environ)
    hosts = [sandbox.add_host(name=command.split()[0] if command.split() else None) for command in commands]
    width = max(len(h.address) for h in hosts)
    processes = []
    sel = selectors.DefaultSelector()
    for index, (host, command) in enumerate(zip(hosts, commands)):
        proc = host.spawn(["/bin/sh", "-c", command], stdout=PIPE, stderr=PIPE, stdin=PIPE, user=uid, group=gid)
        proc.stdin.close()
        prefix = colors.prefix(index, f"{host.address.ljust(width)} | ")
        processes.append(proc)
        for stream, sink in ((proc.stdout, out), (proc.stderr, err)):
            sel.register(stream, selectors.EVENT_READ, [prefix, sink, b""])
    first_failure = 0
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
            return 128 + stopped_by
        exits: list[tuple[int, int]] = []
        for proc in processes:
            code = proc.wait()
            exits.append((code, proc.pid))
        # The first command (in the order given) that failed decides.
        for code, _ in exits:
            if code != 0:
                first_failure = exit_code_of(code)
                break
    return first_failure


def _make_sandbox(args):
    from .runtime.sandbox import Sandbox

    return Sandbox(args.subnet, kill_signal=args.kill, grace=args.grace, verbose=args.verbose)


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


COMMANDS = {"run": cmd_run}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.action](args)
    except NetplayError as exc:
        sys.stderr.write(f"netplay: error: {exc}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def plg_main(argv: Sequence[str] | None = None) -> int:
    """The original tool's command line: ``plg [--record|--replay] [-s SUBNET] [-f FILE] CMD ...``."""
    return main(["run", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
