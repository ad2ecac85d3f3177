"""Runs one command per host, relays their output line by line, and decides when the run ends.

The ending follows ``docker compose up``: by default when every command has
exited; with a chosen host, when its command exits; with ``abort_on_exit``,
when any command exits. The others then get the kill signal, and SIGKILL
after the grace period.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from typing import Callable, Sequence

import attrs

from .options import NO_COMMAND

# How often the loop looks for exited commands while nothing is printed.
POLL_INTERVAL = 0.1
# After SIGKILL, how long the output of the killed is still relayed.
DRAIN_AFTER_KILL = 1.0


class Colors:
    PALETTE = ["36", "33", "32", "35", "34", "96", "93", "92", "95", "94"]

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def prefix(self, index: int, text: str) -> bytes:
        if not self.enabled:
            return text.encode()
        code = self.PALETTE[index % len(self.PALETTE)]
        return f"\x1b[{code}m{text}\x1b[0m".encode()


def exit_code_of(returncode: int) -> int:
    """A shell's view of a process's end: 128 + signal for a killed one."""
    return 128 - returncode if returncode < 0 else returncode


@attrs.frozen
class Lifecycle:
    """When a run ends: ``target`` (a host index) exits, any command exits, or (default) all have."""

    target: int | None = None
    abort_on_exit: bool = False
    # Called once before the commands still running are stopped at the run's end (not on Ctrl-C).
    before_stop: Callable[[], None] | None = None


@attrs.frozen
class RunOutcome:
    """How a run ended.

    ``code`` is the run's exit status; ``decided_by`` the index of the command
    whose status it is (None when every command succeeded or a signal ended
    the run); ``signal`` the signal that interrupted the run, if one did.
    """

    code: int
    statuses: tuple[int | None, ...]
    decided_by: int | None = None
    signal: int | None = None

    @property
    def interrupted(self) -> bool:
        return self.signal is not None

    @property
    def failed(self) -> bool:
        return self.signal is None and self.code != 0


class _Stopper:
    """Turns SIGINT/SIGTERM/SIGHUP into a flag the main loop sees (via a wakeup pipe)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old: dict = {}

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


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _exited(process) -> bool:
    """Whether ``process`` has exited; a sandbox gone meanwhile raises :class:`SandboxClosed`."""
    try:
        process.wait(0)
    except subprocess.TimeoutExpired:
        return False
    return True


@attrs.define
class _Run:
    """The state of one run: the processes, their output streams, and how far the ending has got."""

    sandbox: object
    hosts: list
    processes: list
    lifecycle: Lifecycle
    err: object
    sel: selectors.BaseSelector = attrs.field(factory=selectors.DefaultSelector)
    running: set = attrs.field(factory=set)
    exited: list = attrs.field(factory=list)
    trigger: int | None = None
    signum: int | None = None
    stopping: bool = False
    kill_at: float | None = None
    give_up_at: float | None = None

    def note_exits(self) -> None:
        for index in sorted(self.running):
            if _exited(self.processes[index]):
                self.running.discard(index)
                self.exited.append(index)

    def ending_now(self) -> int | None:
        """The command whose exit ends the run, once it has exited (lifecycle flags only)."""
        if self.lifecycle.target is not None:
            return self.lifecycle.target if self.lifecycle.target in self.exited else None
        if self.lifecycle.abort_on_exit and self.exited:
            return self.exited[0]
        return None

    def stop_others(self, why: str, again: bool = False) -> None:
        """Send the kill signal to every command still running; SIGKILL follows after the grace period."""
        self.stopping = True
        if self.lifecycle.before_stop is not None and not again and self.running:
            self.lifecycle.before_stop()
        self.kill_at = time.monotonic() + self.sandbox.grace
        if self.running:
            sig = _signal_name(self.sandbox.kill_signal)
            whom = "the commands" if again else "the other commands"
            hint = "; Ctrl-C again to kill them at once" if again else ""
            self.err.write(
                f"netplay: {why}: stopping {whom} ({sig}, SIGKILL after {self.sandbox.grace:g} s{hint})\n".encode()
            )
            self.err.flush()
        for index in sorted(self.running):
            self.processes[index].send_signal(self.sandbox.kill_signal, group=True)

    def kill_rest(self) -> None:
        for index in sorted(self.running):
            self.processes[index].send_signal(signal.SIGKILL, group=True)
        self.kill_at = None
        self.give_up_at = time.monotonic() + DRAIN_AFTER_KILL

    def done(self) -> bool:
        streams_open = len(self.sel.get_map()) > 1
        if not self.running and not streams_open:
            return True
        return self.give_up_at is not None and time.monotonic() > self.give_up_at

    def outcome(self) -> RunOutcome:
        statuses = tuple(
            None
            if p is None
            else exit_code_of(p.returncode)
            if p.returncode is not None
            else 128 + signal.SIGKILL
            for p in self.processes
        )
        if self.signum is not None:
            return RunOutcome(128 + self.signum, statuses, None, self.signum)
        if self.trigger is not None:
            return RunOutcome(statuses[self.trigger], statuses, self.trigger)
        for index, status in enumerate(statuses):
            if status:
                return RunOutcome(status, statuses, index)
        return RunOutcome(0, statuses)


def _relay(key, data: bytes) -> None:
    """Write the complete lines of ``data`` with the host's prefix; keep the rest for later."""
    prefix, sink, partial = key.data
    if sink is None:
        return
    if not data:
        if partial:
            sink.write(prefix + partial + b"\n")
            sink.flush()
        return
    lines = (partial + data).split(b"\n")
    key.data[2] = lines.pop()
    if lines:
        sink.write(b"".join(prefix + line + b"\n" for line in lines))
        sink.flush()


def run_commands(
    sandbox,
    hosts: Sequence,
    commands: Sequence[str],
    lifecycle: Lifecycle = Lifecycle(),
    *,
    uid=None,
    gid=None,
    out=None,
    err=None,
    quiet: bool = False,
) -> RunOutcome:
    """Run ``commands[i]`` in ``hosts[i]`` (none for ``-``) with prefixed output, until the run ends."""
    from ..runtime.sandbox import PIPE

    out = out if out is not None else sys.stdout.buffer
    err = err if err is not None else sys.stderr.buffer
    colors = Colors(hasattr(out, "isatty") and out.isatty() and "NO_COLOR" not in os.environ)
    width = max((len(h.address) for h in hosts), default=0)
    run = _Run(sandbox, list(hosts), [], lifecycle, err)
    # Signals are caught from before the first command starts: a Ctrl-C
    # while they start still stops them all the orderly way.
    with _Stopper() as stopper:
        run.sel.register(stopper.r, selectors.EVENT_READ, None)
        try:
            for index, (host, command) in enumerate(zip(hosts, commands)):
                if command == NO_COMMAND:
                    run.processes.append(None)
                    continue
                proc = host.spawn(
                    ["/bin/sh", "-c", command], stdout=PIPE, stderr=PIPE, stdin=PIPE, user=uid, group=gid
                )
                proc.stdin.close()
                run.processes.append(proc)
                run.running.add(index)
                prefix = colors.prefix(index, f"{host.address.ljust(width)} | ")
                for stream, sink in ((proc.stdout, out), (proc.stderr, err)):
                    run.sel.register(stream, selectors.EVENT_READ, [prefix, None if quiet else sink, b""])
            _loop(run, stopper)
        finally:
            run.sel.close()
    return run.outcome()


def _loop(run: _Run, stopper: _Stopper) -> None:
    while not run.done():
        for key, _ in run.sel.select(POLL_INTERVAL):
            if key.data is None:
                for _ in os.read(stopper.r, 64):  # one byte per signal
                    if run.signum is None:
                        run.signum = stopper.signum or signal.SIGINT
                    if run.stopping:
                        run.kill_rest()  # asked again while stopping: hurry
                    else:
                        run.stop_others(f"interrupted by {_signal_name(run.signum)}", again=True)
                continue
            data = os.read(key.fd, 65536)
            _relay(key, data)
            if not data:
                run.sel.unregister(key.fileobj)
                key.fileobj.close()
        run.note_exits()
        if not run.stopping:
            trigger = run.ending_now()
            if trigger is not None:
                run.trigger = trigger
                host = run.hosts[trigger]
                status = exit_code_of(run.processes[trigger].returncode)
                run.stop_others(f"command {trigger + 1} ({host.address}) exited with status {status}")
        if run.kill_at is not None and time.monotonic() > run.kill_at:
            run.kill_rest()
