"""Replaying one recorded connection against a live one, without doing any I/O.

On replay the proxy reads and drops what each live side sends and writes the
recorded bytes of the other side instead. :class:`ConnectionReplay` decides
*when* each recorded step may be written and notes where the live bytes part
from the recorded ones; the I/O shell around it owns the sockets.

Time: ``now`` is a reading of whatever monotonic clock the shell uses (for
example ``time.monotonic()``), in seconds; ``start`` is that clock's reading
when the live connection opened. Recorded times are only used as differences
from the recorded opening (``step.t - opened.t``), so the cassette's clock and
the shell's never need to agree.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Callable, Iterator

import attrs

from ..errors import ConfigError
from .divergence import (
    CONTEXT_AFTER,
    CONTEXT_BEFORE,
    ByteMismatch,
    Divergence,
    ExtraBytes,
    MissingBytes,
    MissingReset,
    Stall,
    UnexpectedReset,
)
from .events import Closed, ConnectionOpened, Data, Direction, Event, HalfClosed, Reset
from .exchange import Match, match_mode

__all__ = [
    "Abort",
    "Action",
    "ConnectionReplay",
    "Finished",
    "Pacing",
    "ReplayConfig",
    "Send",
    "ShutWrite",
]


class Pacing(str, enum.Enum):
    """When a recorded step may be written to the live side."""

    #: At the recorded time since the opening, divided by the speed.
    RECORDED = "recorded"
    #: As fast as the live side takes it, in recorded order.
    FLOOD = "flood"
    #: Once the live side has done what the recorded side had done before the step.
    CAUSAL = "causal"


def _pacing(value: object) -> Pacing:
    if isinstance(value, Pacing):
        return value
    try:
        return Pacing(str(value).strip().lower())
    except ValueError:
        allowed = ", ".join(p.value for p in Pacing)
        raise ConfigError(f"unknown pacing {value!r}: choose one of {allowed}") from None


def _positive(name: str, *, infinite_ok: bool) -> Callable[[object], float]:
    def convert(value: object) -> float:
        allowed = "a number greater than 0" + (" (inf to disable)" if infinite_ok else "")
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be {allowed}, got {value!r}")
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be {allowed}, got {value!r}") from None
        if not number > 0 or (math.isinf(number) and not infinite_ok):
            raise ConfigError(f"{name} must be {allowed}, got {value!r}")
        return number

    return convert


@attrs.frozen
class ReplayConfig:
    """How a replay paces the recorded steps and when it calls a wait a stall.

    ``speed`` divides recorded delays under :attr:`Pacing.RECORDED` (2.0 plays
    twice as fast). ``stall_timeout`` is how long, in seconds, a causal step
    may wait without any live input before it is reported.
    """

    pacing: Pacing = attrs.field(default=Pacing.CAUSAL, converter=_pacing)
    speed: float = attrs.field(default=1.0, converter=_positive("speed", infinite_ok=False))
    stall_timeout: float = attrs.field(default=5.0, converter=_positive("stall_timeout", infinite_ok=True))
    #: What live traffic is paired with: recorded connections, or recorded exchanges (see :mod:`.exchange`).
    match: Match = attrs.field(default=Match.CONNECTION, converter=match_mode)
    #: Seconds of silence after which a live side's turn counts as complete.
    settle: float = attrs.field(default=0.2, converter=_positive("settle", infinite_ok=False))


@attrs.frozen
class Send:
    """Write ``data`` to the live receiver of ``direction``."""

    direction: Direction
    data: bytes


@attrs.frozen
class ShutWrite:
    """Shut down writing toward the live receiver of ``direction``: it reads end of stream."""

    direction: Direction


@attrs.frozen
class Abort:
    """Reset the leg of the live receiver of ``direction``, as the recorded sender did."""

    direction: Direction


@attrs.frozen
class Finished:
    """The script is played out: nothing more will be written on this connection."""


Action = Send | ShutWrite | Abort | Finished

_END = object()  # the script has no more steps
_UNPULLED = object()  # the next step has not been read from the script yet


def _sender(direction: Direction) -> str:
    return "client" if direction is Direction.C2S else "server"


def _describe(step: Event) -> str:
    if isinstance(step, Data):
        return f"{len(step.data)} bytes {step.direction.value}"
    if isinstance(step, HalfClosed):
        return f"the {step.direction.value} end of stream"
    if isinstance(step, Reset):
        return f"the {step.direction.value} reset"
    return "the end of the connection"


def _first_difference(a: bytes, b: bytes) -> int:
    """Index of the first byte where two equally long, unequal strings differ."""
    block = 4096
    for lo in range(0, len(a), block):
        if a[lo : lo + block] != b[lo : lo + block]:
            for i in range(lo, min(len(a), lo + block)):
                if a[i] != b[i]:
                    return i
    return len(a)


def _close_iterator(iterator: object) -> None:
    """Close a generator-like source now (a cassette reader holds its file until then)."""
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


class _RecordedStream:
    """One direction's recorded bytes, read lazily from its own steps() iterator.

    Keeps only the unconsumed part of the chunks pulled so far, so comparing a
    huge connection costs little memory.
    """

    __slots__ = ("_chunks", "_direction", "_events", "consumed", "ended", "reset")

    def __init__(self, events: Iterator[Event], direction: Direction) -> None:
        self._events = events
        self._direction = direction
        self._chunks: deque[memoryview] = deque()
        self.consumed = 0
        self.ended = False
        self.reset = False

    def close(self) -> None:
        """Let the source go: nothing more will be read."""
        _close_iterator(self._events)
        self.ended = True

    def _pull(self) -> bool:
        if self.ended:
            return False
        for event in self._events:
            if isinstance(event, Closed):
                break
            if getattr(event, "direction", None) is not self._direction:
                continue
            if isinstance(event, Data) and event.data:
                self._chunks.append(memoryview(event.data))
                return True
            if isinstance(event, Reset):
                self.reset = True
        self.ended = True
        return False

    def take(self, limit: int) -> memoryview | None:
        """Consume up to ``limit`` bytes from the current chunk; None at the recorded end."""
        if not self._chunks and not self._pull():
            return None
        chunk = self._chunks[0]
        if len(chunk) <= limit:
            self._chunks.popleft()
            piece = chunk
        else:
            piece = chunk[:limit]
            self._chunks[0] = chunk[limit:]
        self.consumed += len(piece)
        return piece

    def peek(self, limit: int) -> bytes:
        """Up to ``limit`` unconsumed bytes, without consuming them."""
        out = bytearray()
        index = 0
        while len(out) < limit:
            if index == len(self._chunks) and not self._pull():
                break
            out += self._chunks[index][: limit - len(out)]
            index += 1
        return bytes(out)

    def drain(self) -> int:
        """Consume the rest; returns the recorded length of this direction."""
        while self.take(1 << 62) is not None:
            pass
        return self.consumed


@attrs.define(eq=False)
class _Parting:
    """The first point where a live stream left its recording, still collecting live bytes."""

    extra: bool  # the recording had ended (ExtraBytes) rather than differed (ByteMismatch)
    offset: int
    before: bytes
    expected_after: bytes
    actual_after: bytearray

    def collect(self, data: bytes | memoryview) -> None:
        room = CONTEXT_AFTER - len(self.actual_after)
        if room > 0:
            self.actual_after += data[:room]


_DIRECTIONS = tuple(Direction)


def _per_direction(value: object) -> object:
    return attrs.Factory(lambda: dict.fromkeys(_DIRECTIONS, value))


@attrs.define(eq=False)
class ConnectionReplay:
    """Plays one recorded connection against one live connection.

    ``steps`` returns a fresh iterator over the recorded events that follow
    ``opened`` (Data, HalfClosed, Reset, Closed); it is called once to drive
    the sending and once per direction to compare live bytes, so the
    recording is streamed rather than held. With ``server_live`` False the
    cassette stands in for the server: client-to-server steps are passed
    over. ``start`` is the shell clock's reading when the live connection
    opened; ``ordinal`` (from :meth:`Matcher.ordinal_of`) only labels reports.

    The shell feeds live input with :meth:`live_data`, :meth:`live_eof` and
    :meth:`live_reset`, calls :meth:`poll` after each input and at
    :meth:`next_deadline`, carries out the actions, and calls :meth:`close`
    when the live connection is over; :attr:`divergences` then says what
    differed.
    """

    opened: ConnectionOpened
    steps: Callable[[], Iterator[Event]]
    config: ReplayConfig = attrs.field(factory=ReplayConfig, kw_only=True)
    server_live: bool = attrs.field(default=True, kw_only=True)
    start: float = attrs.field(kw_only=True)
    ordinal: int = attrs.field(default=1, kw_only=True)

    _script: Iterator[Event] | None = attrs.field(default=None, init=False)
    _head: object = attrs.field(default=_UNPULLED, init=False)
    _head_since: float = attrs.field(init=False)
    _stall_reported: bool = attrs.field(default=False, init=False)
    _last_input: float = attrs.field(default=-math.inf, init=False)
    _finished: bool = attrs.field(default=False, init=False)
    _closed: bool = attrs.field(default=False, init=False)
    # What the recorded sender of each direction had done before the head step.
    _rec_sent: dict[Direction, int] = attrs.field(init=False, default=_per_direction(0))
    _rec_closed: dict[Direction, bool] = attrs.field(init=False, default=_per_direction(False))
    _rec_reset: dict[Direction, bool] = attrs.field(init=False, default=_per_direction(False))
    # What the live sender of each direction has done so far.
    _live_sent: dict[Direction, int] = attrs.field(init=False, default=_per_direction(0))
    _live_eof: dict[Direction, bool] = attrs.field(init=False, default=_per_direction(False))
    _live_reset: dict[Direction, bool] = attrs.field(init=False, default=_per_direction(False))
    _streams: dict[Direction, _RecordedStream] = attrs.field(init=False, factory=dict)
    _tails: dict[Direction, bytes] = attrs.field(init=False, default=_per_direction(b""))
    _partings: dict[Direction, _Parting] = attrs.field(init=False, factory=dict)
    _found: list[Divergence | Direction] = attrs.field(init=False, factory=list)

    def __attrs_post_init__(self) -> None:
        self._head_since = self.start

    # -- live input ---------------------------------------------------------

    def live_data(self, direction: Direction, data: bytes, now: float) -> None:
        """The live sender of ``direction`` sent ``data`` (which the shell drops)."""
        direction = Direction(direction)
        if self._closed:
            return
        self._last_input = now
        if data:
            self._compare(direction, memoryview(data))
            self._live_sent[direction] += len(data)

    def live_eof(self, direction: Direction, now: float) -> None:
        """The live sender of ``direction`` shut down its sending side."""
        direction = Direction(direction)
        if not self._closed:
            self._last_input = now
            self._live_eof[direction] = True

    def live_reset(self, direction: Direction, now: float) -> None:
        """The live sender of ``direction`` reset the connection."""
        direction = Direction(direction)
        if not self._closed:
            self._last_input = now
            self._live_reset[direction] = True

    # -- output -------------------------------------------------------------

    def poll(self, now: float, limit: int | None = None) -> list[Action]:
        """The actions due at ``now``, in recorded order; notes a stall if one is due.

        With ``limit``, at most that many actions are returned, so a shell can
        stop pulling recorded bytes while the receiver is not keeping up.
        """
        actions: list[Action] = []
        if self._finished or self._closed:
            return actions
        while True:
            step = self._peek()
            if step is _END or (isinstance(step, Closed) and self._may_go(step, now)):
                self._finished = True
                actions.append(Finished())
                return actions
            if not self._may_go(step, now):
                self._watch_stall(step, now)
                return actions
            action = self._deliver(step)
            self._head = _UNPULLED
            self._stall_reported = False
            if action is not None:
                actions.append(action)
                if limit is not None and len(actions) >= limit:
                    self._head_since = now
                    return actions
                # A passed-over step takes no time, so the step after it has
                # been waiting as long as the passed-over one.
                self._head_since = now

    def next_deadline(self) -> float | None:
        """When :meth:`poll` must next be called unless live input comes first.

        A time at or before the present means a step is due now; None means
        only live input (or nothing) can move the script on.
        """
        if self._finished or self._closed:
            return None
        step = self._peek()
        if step is _END or self._unconditional(step):
            return self._head_since
        if self.config.pacing is Pacing.RECORDED:
            return self.deadline(step)
        since = max(self._head_since, self._last_input)
        if self._unmet(step) is None:
            return since
        if self._stall_reported or math.isinf(self.config.stall_timeout):
            return None
        return since + self.config.stall_timeout

    def deadline(self, step: Event) -> float:
        """The shell-clock time at which ``step`` is due under recorded pacing.

        Absolute (from ``start``) rather than relative to the previous step, so
        late polls never push later steps back.
        """
        return self.start + (step.t - self.opened.t) / self.config.speed

    @property
    def finished(self) -> bool:
        return self._finished

    # -- end ----------------------------------------------------------------

    def close(self, now: float) -> None:
        """The live connection is over: note what the live sides left out or added."""
        if self._closed:
            return
        self._closed = True
        complete = self._head is _END or isinstance(self._head, Closed)
        for direction in self._live_directions():
            stream = self._stream(direction)
            sent = self._live_sent[direction]
            if direction not in self._partings:
                # No parting yet: the stream has consumed exactly the live bytes.
                following = stream.peek(CONTEXT_AFTER)
                if following:
                    recorded = self._rec_sent[direction] if complete else stream.drain()
                    before = self._tails[direction]
                    self._found.append(
                        MissingBytes(
                            self.opened.conn,
                            self.opened.key,
                            self.ordinal,
                            direction,
                            sent=sent,
                            recorded=recorded,
                            expected=before + following,
                            actual=before,
                            snippet_offset=sent - len(before),
                        )
                    )
            if complete:
                recorded_reset = self._rec_reset[direction]
            else:
                stream.drain()
                recorded_reset = stream.reset
            args = (self.opened.conn, self.opened.key, self.ordinal, direction)
            if self._live_reset[direction] and not recorded_reset:
                self._found.append(UnexpectedReset(*args))
            elif recorded_reset and not self._live_reset[direction]:
                self._found.append(MissingReset(*args))
        # Nothing more is read: let the iterators go now (a cassette reader
        # holds the file open until its iterator ends) rather than whenever
        # this object is collected.
        _close_iterator(self._script)
        for stream in self._streams.values():
            stream.close()

    @property
    def divergences(self) -> tuple[Divergence, ...]:
        """What differed so far, in the order it was found."""
        return tuple(self._materialize(item) for item in self._found)

    # -- internals ----------------------------------------------------------

    def _live_directions(self) -> tuple[Direction, ...]:
        return (Direction.C2S, Direction.S2C) if self.server_live else (Direction.C2S,)

    def _peek(self) -> object:
        if self._head is _UNPULLED:
            if self._script is None:
                self._script = self.steps()
            self._head = _END
            for event in self._script:
                if not isinstance(event, ConnectionOpened):
                    self._head = event
                    break
        return self._head

    def _unconditional(self, step: Event) -> bool:
        """Steps that go at once whatever the pacing."""
        if self.config.pacing is Pacing.FLOOD:
            return True
        return not self.server_live and getattr(step, "direction", None) is Direction.C2S

    def _may_go(self, step: Event, now: float) -> bool:
        if self._unconditional(step):
            return True
        if self.config.pacing is Pacing.RECORDED:
            return now >= self.deadline(step)
        return self._unmet(step) is None

    def _unmet(self, step: Event) -> tuple[Direction, str] | None:
        """The first live condition a causal step waits for, or None if it may go."""
        if isinstance(step, Closed):
            waits = self._live_directions()
        else:
            waits = (step.direction.reverse,)
        for side in waits:
            recorded, live = self._rec_sent[side], self._live_sent[side]
            if live < recorded:
                return side, (
                    f"{recorded} bytes {side.value} from the {_sender(side)} "
                    f"({live} so far) before replaying {_describe(step)}"
                )
            if self._rec_closed[side] and not (self._live_eof[side] or self._live_reset[side]):
                return side, (
                    f"the {_sender(side)} to end its {side.value} stream before replaying {_describe(step)}"
                )
        return None

    def _watch_stall(self, step: Event, now: float) -> None:
        if self.config.pacing is not Pacing.CAUSAL or self._stall_reported:
            return
        unmet = self._unmet(step)
        since = max(self._head_since, self._last_input)
        if unmet is None or now - since < self.config.stall_timeout:
            return
        self._stall_reported = True
        side, waiting_for = unmet
        self._found.append(
            Stall(self.opened.conn, self.opened.key, self.ordinal, side, waiting_for, now - since)
        )

    def _deliver(self, step: Event) -> Action | None:
        """Account for ``step`` as done by the recorded side; the action writing it, if any."""
        direction = step.direction  # type: ignore[union-attr]
        skip = not self.server_live and direction is Direction.C2S
        if isinstance(step, Data):
            self._rec_sent[direction] += len(step.data)
            return None if skip else Send(direction, step.data)
        self._rec_closed[direction] = True
        if isinstance(step, Reset):
            self._rec_reset[direction] = True
            return None if skip else Abort(direction)
        return None if skip else ShutWrite(direction)

    def _stream(self, direction: Direction) -> _RecordedStream:
        stream = self._streams.get(direction)
        if stream is None:
            stream = self._streams[direction] = _RecordedStream(self.steps(), direction)
        return stream

    def _compare(self, direction: Direction, view: memoryview) -> None:
        parting = self._partings.get(direction)
        if parting is not None:
            parting.collect(view)
            return
        stream = self._stream(direction)
        base = self._live_sent[direction]
        pos = 0
        while pos < len(view):
            piece = stream.take(len(view) - pos)
            if piece is None:
                self._part(direction, True, base + pos, self._tails[direction], b"", view[pos:])
                return
            live = view[pos : pos + len(piece)].tobytes()
            recorded = piece.tobytes()
            if live != recorded:
                i = _first_difference(live, recorded)
                before = (self._tails[direction] + live[max(0, i - CONTEXT_BEFORE) : i])[-CONTEXT_BEFORE:]
                expected_after = recorded[i : i + CONTEXT_AFTER]
                if len(expected_after) < CONTEXT_AFTER:
                    expected_after += stream.peek(CONTEXT_AFTER - len(expected_after))
                self._part(direction, False, base + pos + i, before, expected_after, view[pos + i :])
                return
            self._tails[direction] = (self._tails[direction] + live[-CONTEXT_BEFORE:])[-CONTEXT_BEFORE:]
            pos += len(piece)

    def _part(
        self,
        direction: Direction,
        extra: bool,
        offset: int,
        before: bytes,
        expected_after: bytes,
        actual: memoryview,
    ) -> None:
        parting = _Parting(extra, offset, before, expected_after, bytearray())
        parting.collect(actual)
        self._partings[direction] = parting
        self._found.append(direction)

    def _materialize(self, item: Divergence | Direction) -> Divergence:
        if not isinstance(item, Direction):
            return item
        parting = self._partings[item]
        args = (self.opened.conn, self.opened.key, self.ordinal, item)
        expected = parting.before + parting.expected_after
        actual = parting.before + bytes(parting.actual_after)
        snippet_offset = parting.offset - len(parting.before)
        if parting.extra:
            return ExtraBytes(
                *args,
                offset=parting.offset,
                sent=self._live_sent[item],
                expected=expected,
                actual=actual,
                snippet_offset=snippet_offset,
            )
        return ByteMismatch(
            *args,
            offset=parting.offset,
            expected=expected,
            actual=actual,
            snippet_offset=snippet_offset,
        )
