"""Comparing what one live side sends with what its recorded side sent, turn by turn.

Live bytes are counted toward a recorded turn (see :mod:`.turns`) until the
replay moves on to the next one, so a turn that came out a few bytes short or
long is reported where it happened and shifts nothing after it. Turns that a
noise rule touches are judged whole by that rule's comparator; the others are
compared as the bytes arrive, so a large transfer costs little memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator

import attrs

from .divergence import CONTEXT_AFTER, CONTEXT_BEFORE, ByteMismatch, Divergence, ExtraBytes, MissingBytes
from .events import ConnectionOpened, Data, Direction, Event, Reset
from .prefix import common_prefix

__all__ = ["Comparator", "DirectionCheck", "TurnStream"]

#: Judges one whole turn: None when the live bytes pass, else the offset in them where they part.
Comparator = Callable[[bytes, bytes], "int | None"]

#: A turn judged whole is kept up to this size; past it the rest of the turn is not compared.
WHOLE_TURN_LIMIT = 16 << 20


def close_iterator(iterator: object) -> None:
    """Close a generator-like source now (a cassette reader holds its file until then)."""
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


class TurnStream:
    """One direction's recorded bytes, read lazily turn by turn from its own iterator.

    Keeps only the unconsumed part of the chunks pulled so far, so a huge
    connection costs little memory. ``turn`` is the turn (of this direction)
    that :meth:`take` and :meth:`peek` read from.
    """

    __slots__ = ("_chunks", "_direction", "_events", "_last_direction", "_turns_seen", "consumed", "ended", "reset", "turn")

    def __init__(self, events: Iterator[Event], direction: Direction) -> None:
        self._events = events
        self._direction = direction
        self._chunks: deque[tuple[int, memoryview]] = deque()
        self._last_direction: Direction | None = None
        self._turns_seen = 0
        self.turn = 0
        self.consumed = 0
        self.ended = False
        self.reset = False

    def close(self) -> None:
        """Let the source go: nothing more will be read."""
        close_iterator(self._events)
        self.ended = True

    def _pull(self) -> bool:
        if self.ended:
            return False
        for event in self._events:
            if isinstance(event, Data) and event.data:
                mine = event.direction is self._direction
                new_turn = event.direction is not self._last_direction
                self._last_direction = event.direction
                if mine:
                    if new_turn:
                        self._turns_seen += 1
                    self._chunks.append((self._turns_seen - 1, memoryview(event.data)))
                    return True
            elif isinstance(event, Reset) and event.direction is self._direction:
                self.reset = True
        self.ended = True
        return False

    def _front(self) -> tuple[int, memoryview] | None:
        if not self._chunks and not self._pull():
            return None
        return self._chunks[0]

    def take(self, limit: int) -> memoryview | None:
        """Consume up to ``limit`` bytes of the current turn; None at its recorded end."""
        front = self._front()
        if front is None or front[0] != self.turn:
            return None
        turn, chunk = front
        if len(chunk) <= limit:
            self._chunks.popleft()
            piece = chunk
        else:
            piece = chunk[:limit]
            self._chunks[0] = (turn, chunk[limit:])
        self.consumed += len(piece)
        return piece

    def peek(self, limit: int, across_turns: bool = False) -> bytes:
        """Up to ``limit`` unconsumed bytes of the current turn (or of the rest
        of the recording), without consuming them."""
        out = bytearray()
        index = 0
        while len(out) < limit:
            if index == len(self._chunks) and not self._pull():
                break
            turn, chunk = self._chunks[index]
            if turn != self.turn and not across_turns:
                break
            out += chunk[: limit - len(out)]
            index += 1
        return bytes(out)

    def rest_of_turn(self, limit: int) -> bytes:
        """Consume the rest of the current turn; returns at most ``limit`` bytes of it."""
        out = bytearray()
        while (piece := self.take(1 << 62)) is not None:
            if len(out) < limit:
                out += piece[: limit - len(out)]
        return bytes(out)

    def goto(self, turn: int) -> None:
        """Pass over whatever is left of the turns before ``turn``."""
        while self.turn < turn:
            self.rest_of_turn(0)
            self.turn += 1

    def next_turn(self) -> int | None:
        """Move past the current turn to the next one that has recorded bytes; its number."""
        self.goto(self.turn + 1)
        front = self._front()
        if front is None:
            return None
        self.goto(front[0])
        return front[0]

    def drain(self) -> int:
        """Consume the rest of every turn; returns the recorded length of this direction."""
        while True:
            front = self._front()
            if front is None:
                return self.consumed
            self.goto(front[0])
            self.rest_of_turn(0)


class DirectionCheck:
    """The live bytes of one direction against the recording, turn by turn.

    The replay calls :meth:`feed` with live bytes, :meth:`advance` when the
    recording moves on to a later turn of this direction (the other side has
    answered), and :meth:`close` at the end. Only the first place where the
    live side parts from its recording is reported; after it, live bytes are
    only kept as context for the report.
    """

    def __init__(
        self,
        opened: ConnectionOpened,
        ordinal: int,
        direction: Direction,
        events: Callable[[], Iterator[Event]],
        comparator_for: Callable[[int], Comparator | None] | None = None,
    ) -> None:
        self.opened = opened
        self.ordinal = ordinal
        self.direction = direction
        self._events = events
        self._comparator_for = comparator_for
        self._stream: TurnStream | None = None
        self.turn = 0
        self.sent = 0
        self._turn_start = 0  # live offset where the current turn began
        self._tail = b""  # the last live bytes that agreed, for context
        self._whole: bytearray | None = None  # the live turn, when a comparator judges it whole
        self._judged = False  # whether the current turn's comparator was asked for
        self._comparator: Comparator | None = None
        self._parted = False
        # Where the live side first parted from its recording, while its bytes
        # are still collected for the report: (kind, offset, before, expected, actual).
        self._parting: tuple[type, int, bytes, bytes, bytearray] | None = None
        self.found: list[Divergence] = []

    @property
    def stream(self) -> TurnStream:
        if self._stream is None:
            self._stream = TurnStream(self._events(), self.direction)
        return self._stream

    def _args(self) -> tuple:
        return (self.opened.conn, self.opened.key, self.ordinal, self.direction)

    def feed(self, data: bytes | memoryview) -> None:
        """Live bytes of this direction, counted toward the current turn."""
        view = memoryview(data)
        base = self.sent
        self.sent += len(view)
        if self._parting is not None:
            actual = self._parting[4]
            actual += view[: max(CONTEXT_AFTER - len(actual), 0)]
            return
        if self._parted:
            return
        if not self._judged:
            self._judged = True
            if self._comparator_for is not None:
                self._comparator = self._comparator_for(self.turn)
                if self._comparator is not None:
                    self._whole = bytearray()
        if self._whole is not None:
            if len(self._whole) < WHOLE_TURN_LIMIT:
                self._whole += view[: WHOLE_TURN_LIMIT - len(self._whole)]
            return
        self._compare(view, base)

    def _compare(self, view: memoryview, base: int) -> None:
        stream = self.stream
        stream.goto(self.turn)
        pos = 0
        while pos < len(view):
            piece = stream.take(len(view) - pos)
            if piece is None and stream.next_turn() is not None:
                # The live side goes on past its recorded turn before the other
                # side answered (a pipelined request): into the next turn.
                self.turn = stream.turn
                self._turn_start = base + pos
                continue
            if piece is None:
                # The live side goes on past the end of its recording.
                self._parted = True
                self._parting = (ExtraBytes, base + pos, self._tail, b"", bytearray(view[pos : pos + CONTEXT_AFTER]))
                return
            live = view[pos : pos + len(piece)].tobytes()
            recorded = piece.tobytes()
            if live != recorded:
                i = common_prefix(live, recorded)
                before = (self._tail + live[max(0, i - CONTEXT_BEFORE) : i])[-CONTEXT_BEFORE:]
                expected = recorded[i : i + CONTEXT_AFTER]
                if len(expected) < CONTEXT_AFTER:
                    expected += stream.peek(CONTEXT_AFTER - len(expected))
                actual = view[pos + i : pos + i + CONTEXT_AFTER].tobytes()
                self._mismatch(base + pos + i, before, expected, actual)
                return
            self._tail = (self._tail + live[-CONTEXT_BEFORE:])[-CONTEXT_BEFORE:]
            pos += len(piece)

    def _mismatch(self, offset: int, before: bytes, expected: bytes, actual: bytes) -> None:
        self._parted = True
        self._parting = (ByteMismatch, offset, before, expected, bytearray(actual))

    def _missing(self, following: bytes, recorded: int) -> None:
        self._parted = True
        self.found.append(
            MissingBytes(
                *self._args(),
                sent=self.sent,
                recorded=recorded,
                expected=self._tail + following,
                actual=self._tail,
                snippet_offset=self.sent - len(self._tail),
            )
        )

    def _end_turn(self, last: bool = False) -> None:
        """The current turn is over: judge it whole, or note what it left out."""
        if self._parted:
            return
        stream = self.stream
        stream.goto(self.turn)
        if self._whole is not None:
            recorded = stream.rest_of_turn(WHOLE_TURN_LIMIT)
            live = bytes(self._whole)
            at = self._comparator(recorded, live)  # type: ignore[misc]
            if at is None:
                self._tail = (self._tail + live[-CONTEXT_BEFORE:])[-CONTEXT_BEFORE:]
                return
            before = live[max(0, at - CONTEXT_BEFORE) : at]
            self._mismatch(
                self._turn_start + at, before, recorded[at : at + CONTEXT_AFTER], live[at : at + CONTEXT_AFTER]
            )
            return
        following = stream.peek(CONTEXT_AFTER, across_turns=last)
        if following:
            # The live side moved on (or ended) having sent less than its recorded turn.
            stream.rest_of_turn(0)
            self._missing(following, stream.consumed)

    def advance(self, turn: int) -> None:
        """The recording moved on: live bytes from now on count toward ``turn``."""
        if turn <= self.turn:
            return
        self._end_turn()
        self.turn = turn
        self._turn_start = self.sent
        self._whole = None
        self._judged = False
        self._comparator = None

    def close(self) -> None:
        """The live side is done: judge its last turn and note recorded turns it never sent."""
        known = len(self.found)
        self._end_turn(last=True)
        stream = self.stream
        if not self._parted and stream.next_turn() is not None:
            following = stream.peek(CONTEXT_AFTER, across_turns=True)
            self._missing(following, stream.drain())
        stream.drain()
        if len(self.found) > known and isinstance(self.found[-1], MissingBytes):
            # Count the whole recording, turns never reached included.
            self.found[-1] = attrs.evolve(self.found[-1], recorded=stream.consumed)

    def divergences(self) -> list[Divergence]:
        """What this direction got wrong: at most one finding, the first."""
        if self._parting is None:
            return list(self.found)
        kind, offset, before, expected, actual = self._parting
        snippets = dict(expected=before + expected, actual=before + bytes(actual), snippet_offset=offset - len(before))
        if kind is ExtraBytes:
            return [ExtraBytes(*self._args(), offset=offset, sent=self.sent, **snippets)]
        return [ByteMismatch(*self._args(), offset=offset, **snippets)]
