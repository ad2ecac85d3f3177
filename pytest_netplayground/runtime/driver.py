"""Drive mode in the supervisor: the proxy plays a cassette's clients against live servers.

For each planned connection the proxy connects a socket from the client's
alias and port straight to the live server (a pipe with a server leg and no
client leg: no host sends a SYN), writes the recorded client bytes as the
client-played :class:`~..core.replay.ConnectionReplay` decides, and compares
what the server answers with what was recorded. :class:`Drive` opens the
connections at their planned times and gathers one
:class:`~..core.drive_report.ConnectionResult` each.
"""

from __future__ import annotations

import errno
import os
import select
import socket
from typing import Callable

from ..cassette import Cassette
from ..core.addressing import AddressPlan, encode_key
from ..core.divergence import Stall
from ..core.drive_plan import PlannedConnection
from ..core.drive_report import ConnectionResult, Timing, recorded_timing
from ..core.events import Data, Direction, Outcome
from ..core.replay import Abort, ConnectionReplay, Finished, Send, ShutWrite
from .loop import Loop
from .pipes import HIGH_WATER, Leg, Pipe, Tap
from .proxy import _CONNECT_FAILURES, _proxy_socket
from .replayer import DECODED_LIMIT, _DecodedOnce

C2S, S2C = Direction.C2S, Direction.S2C


def _outcome_of(err: int) -> Outcome | str:
    """How a failed connect ended: an outcome a recording can hold, else the error in words."""
    return _CONNECT_FAILURES.get(err) or f"could not connect: {os.strerror(err)}"


class DriveTap(Tap):
    """Plays one planned connection's client from the recording and watches the live server.

    Once the script is played out the connection stays open until the server
    has had its turn: it closed, or went quiet for the settle time after
    answering at least as many bytes as recorded (the stall timeout if fewer),
    so flood and recorded pacing, which do not wait for answers, still get them.
    A server that stops reading for three stall timeouts is given up (see :meth:`_watchdog`).
    """

    def __init__(self, drive: "Drive", slot: int, replay: ConnectionReplay, opened_at: float):
        self.drive = drive
        self.slot = slot
        self.replay = replay
        self.opened_at = opened_at
        self.pipe: Pipe | None = None
        self.first: float | None = None
        self.last: float | None = None
        self.live_bytes = 0
        self.server_ended = False
        self.done_at: float | None = None
        self.activity = opened_at
        self.timer_at: float | None = None
        self.failure: str | None = None
        self.backlog = 0  # bytes queued for the server at the last watchdog check
        self.answers: list[Data] | None = [] if drive.request.collect else None

    # -- what the live server does --------------------------------------------------

    def attach(self, pipe: Pipe, now: float) -> None:
        self.pipe = pipe
        self._watchdog(now)
        self.run(now)

    def data(self, pipe, direction, data, now):
        data = bytes(data)
        self.first = now - self.opened_at if self.first is None else self.first
        self.last = now - self.opened_at
        self.live_bytes += len(data)
        self.activity = now
        self._note(S2C, data, now)
        self.replay.live_data(S2C, data, now)
        self.run(now)

    def eof(self, pipe, direction, now):
        self.server_ended = True
        self.activity = now
        self.replay.live_eof(S2C, now)
        self.run(now)

    def reset(self, pipe, direction, now):
        self.server_ended = True
        self.replay.live_reset(S2C, now)
        pipe.close()

    def write_failed(self, pipe, direction, now):
        """The server went away while it was being written to: as a reset by it."""
        self.reset(pipe, direction, now)

    def drained(self, pipe, direction, now):
        self.activity = now
        self.run(now)

    def _note(self, direction: Direction, data: bytes, now: float) -> None:
        if self.answers is not None:
            self.answers.append(Data(now, self.replay.opened.conn, direction, data))

    # -- playing the client ---------------------------------------------------------

    def run(self, now: float) -> None:
        pipe = self.pipe
        if pipe is None or pipe.finished:
            return
        while self.done_at is None:
            if pipe.server_leg is not None and len(pipe.server_leg.out) >= HIGH_WATER:
                return  # backpressure: drained() comes back here
            actions = self.replay.poll(now, limit=4)
            for action in actions:
                if isinstance(action, Send):
                    self._note(C2S, action.data, now)
                    pipe.write(C2S, action.data)
                elif isinstance(action, ShutWrite):
                    pipe.shut_write(C2S)
                elif isinstance(action, Abort):
                    pipe.abort()
                elif isinstance(action, Finished):
                    self.done_at = now
                if pipe.finished:
                    return
            if len(actions) < 4:
                break
        if self.done_at is not None:
            self._linger(now)
            return
        self._wake_at(self.replay.next_deadline())

    def _linger(self, now: float) -> None:
        """After the script: close once the server has had its turn (see the class docstring)."""
        config = self.replay.config
        enough = self.live_bytes >= self.drive.recorded_answer(self.replay.opened.conn)
        quiet_since = max(self.done_at, self.activity)
        due = quiet_since + (config.settle if enough else config.stall_timeout)
        if self.server_ended or now >= due:
            self.pipe.close()
        else:
            self._wake_at(due)

    def _wake_at(self, deadline: float | None) -> None:
        if deadline is not None and (self.timer_at is None or deadline < self.timer_at):
            self.timer_at = deadline
            self.drive.loop.call_at(deadline, lambda tap: tap._timer(deadline), owner=self)

    def _timer(self, deadline: float) -> None:
        if self.timer_at == deadline:
            self.timer_at = None
        self.run(self.drive.loop.now())

    def _watchdog(self, now: float) -> None:
        """Give up a connection whose server stopped reading: requests queued for it and
        none of them taken, nor anything answered, for three stall timeouts. (Every
        other wait of a drive has a deadline of its own; this one stops pulling.)"""
        pipe = self.pipe
        if pipe is None or pipe.finished:
            return
        limit = 3 * self.replay.config.stall_timeout
        backlog = len(pipe.server_leg.out) if pipe.server_leg is not None else 0
        before, self.backlog = self.backlog, backlog
        if before and backlog >= before and self.activity <= now - limit:
            self.failure = f"no progress for {limit:g} s: the server read none of {backlog} bytes queued"
            pipe.abort()
            return
        self.drive.loop.call_at(now + limit, lambda tap: tap._watchdog(tap.drive.loop.now()), owner=self)

    def closed(self, pipe, now):
        self.replay.close(now)
        found = self.replay.divergences
        stalls = [item for item in found if isinstance(item, Stall)]
        failure = f"stalled: {stalls[0].summary}" if stalls else self.failure
        others = tuple(item for item in found if not isinstance(item, Stall))
        self.drive.finished(self.slot, Timing(self.first, self.last), others, failure, self.answers)
        self.pipe = None


class Drive:
    """One drive request: opens its connections on time, reports when the last one ends."""

    def __init__(
        self, loop: Loop, plan: AddressPlan, request, read_buffer: bytearray, done: Callable[[dict], None]
    ):
        self.loop = loop
        self.addresses = plan
        self.request = request
        self.read_buffer = read_buffer
        self.done = done
        self.cassette = Cassette(request.cassette, tolerate_truncation=True)
        self.index = self.cassette.index()
        self.results: list[ConnectionResult | None] = [None] * len(request.plan)
        self.answers: dict[int, list[Data]] = {}
        self.remaining = len(request.plan)
        self._sources: dict[int, object] = {}
        self._answer_sizes: dict[int, int] = {}
        self.pending: dict[int, tuple[int, socket.socket]] = {}
        self.opened_at: dict[int, float] = {}
        self.t0 = start = loop.now()
        for slot, planned in enumerate(request.plan):
            loop.call_at(start + planned.start, lambda slot=slot: self._guarded(self._open, slot))
        if not request.plan:
            self._report()

    # -- the recording ------------------------------------------------------------

    def steps(self, conn: int):
        """Fresh iterators over one recorded connection (decoded once while small)."""
        source = self._sources.get(conn)
        if source is None:
            if sum(self.index.connections[conn].lengths) > DECODED_LIMIT:
                source = lambda: self.cassette.iter_connection(conn)  # noqa: E731
            else:
                source = _DecodedOnce(lambda: self.cassette.iter_connection(conn))
            self._sources[conn] = source
        return source

    def recorded_answer(self, conn: int) -> int:
        """How many bytes the recorded server sent in connection ``conn``."""
        size = self._answer_sizes.get(conn)
        if size is None:
            size = sum(len(e.data) for e in self.steps(conn)() if isinstance(e, Data) and e.direction is S2C)
            self._answer_sizes[conn] = size
        return size

    # -- opening ---------------------------------------------------------------------

    def _guarded(self, step: Callable[[int], None], slot: int) -> None:
        """Run ``step``; a failure it did not foresee fails its connection, not the sandbox."""
        try:
            step(slot)
        except Exception as exc:  # noqa: BLE001 - reported in the connection's result
            self._failed(slot, f"the drive failed to open it: {exc!r}", self.loop.now())

    def _open(self, slot: int) -> None:
        planned: PlannedConnection = self.request.plan[slot]
        try:
            sock = _proxy_socket(planned.client.host)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            self._failed(slot, f"no socket for the client: {exc.strerror}", self.loop.now())
            return
        opened_at = self.opened_at[slot] = self.loop.now()
        try:
            sock.bind((self.addresses.alias(planned.client.host), planned.client.port))
        except OSError as exc:
            sock.close()
            self._failed(
                slot, f"could not take the client's address {planned.client}: {exc.strerror}", opened_at
            )
            return
        err = sock.connect_ex((planned.server.host, planned.server.port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self._connect_ended(slot, _outcome_of(err), opened_at)
            return
        self.pending[sock.fileno()] = (slot, sock)
        self.loop.watch(
            sock.fileno(), select.EPOLLOUT, lambda ev, s=sock: self._connected(slot, s, opened_at)
        )
        deadline = opened_at + self.request.config.stall_timeout
        self.loop.call_at(deadline, lambda s=sock: self._connect_timed_out(slot, s, opened_at))

    def _connect_timed_out(self, slot: int, sock: socket.socket, opened_at: float) -> None:
        if self.pending.get(sock.fileno(), (None, None))[1] is not sock:
            return
        self._forget(sock)
        sock.close()
        self._connect_ended(slot, Outcome.TIMED_OUT, opened_at)

    def _forget(self, sock: socket.socket) -> None:
        self.pending.pop(sock.fileno(), None)
        self.loop.unwatch(sock.fileno())

    def _connected(self, slot: int, sock: socket.socket, opened_at: float) -> None:
        if self.pending.get(sock.fileno(), (None, None))[1] is not sock:
            return
        self._forget(sock)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        planned = self.request.plan[slot]
        if err:
            sock.close()
            self._connect_ended(slot, _outcome_of(err), opened_at)
            return
        if planned.opened.outcome is not Outcome.ESTABLISHED:
            sock.close()
            self._connect_ended(slot, Outcome.ESTABLISHED, opened_at)
            return
        opened = planned.opened
        config = self.request.config
        noise = config.noise
        replay = ConnectionReplay(
            opened,
            self.steps(opened.conn),
            config=config,
            client_live=False,
            start=opened_at,
            ordinal=planned.copy + 1,
            checked=[S2C] if noise.is_checked(opened, S2C) else [],
            comparator_for=lambda direction, turn: noise.comparator(opened, direction, turn),
        )
        tap = DriveTap(self, slot, replay, opened_at)
        pipe = Pipe(
            self.loop,
            encode_key(planned.client, planned.server),
            planned.client,
            planned.server,
            tap,
            self.read_buffer,
        )
        pipe.server_leg = Leg(sock)
        pipe.start(self.loop.now())

    def _connect_ended(self, slot: int, outcome: Outcome | str, opened_at: float) -> None:
        """A connection that ended at its opening: as recorded (refused, say) or a failure."""
        recorded = self.request.plan[slot].opened.outcome
        if isinstance(outcome, Outcome):
            failure = None if outcome is recorded else f"{outcome.value} (recorded: {recorded.value})"
        else:
            failure = f"{outcome} (recorded: {recorded.value})"
        self._result(slot, Timing(), (), failure, None)

    def _failed(self, slot: int, why: str, now: float) -> None:
        self._result(slot, Timing(), (), why, None)

    # -- results -----------------------------------------------------------------------

    def finished(self, slot: int, live: Timing, divergences, failure: str | None, answers) -> None:
        self._result(slot, live, divergences, failure, answers)

    def _result(self, slot: int, live: Timing, divergences, failure, answers) -> None:
        if self.results[slot] is not None:
            return
        planned = self.request.plan[slot]
        recorded = recorded_timing(planned.opened, self.steps(planned.opened.conn)())
        opened_at = self.opened_at.get(slot)
        started = None if opened_at is None else round(opened_at - self.t0, 6)
        self.results[slot] = ConnectionResult(planned, live, recorded, divergences, failure, started)
        if answers is not None and planned.copy == 0:
            self.answers[planned.opened.conn] = answers
        self.remaining -= 1
        if self.remaining == 0:
            self._report()

    def _report(self) -> None:
        self.cassette.close()
        self.done({"results": tuple(self.results), "answers": self.answers if self.request.collect else None})
