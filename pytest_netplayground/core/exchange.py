"""Exchange matching: answering each live request with a recorded reply to the same request.

Clients with a pool of connections (redis-benchmark, HTTP sessions, database
pools) spread their requests over their connections differently on every run,
so replaying recorded connections one for one (connection matching) parts
from the recording at once. For request/response protocols the unit that does
repeat is the *exchange*: a request turn of the client and the reply turn the
server sent after it (see :mod:`.turns`). A server that speaks first gives an
exchange with an empty request, its banner, answered when a connection opens.

:func:`build_books` files the recorded exchanges of each connection key
(client host, server host, server port) in a :class:`ExchangeBook`, shared by
every live connection of that key; an :class:`ExchangeReplay` per live
connection cuts the client's bytes into requests and answers each from the
book. Sans-io: bytes and times in, :class:`Answer` values out.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable

import attrs

from .addressing import ConnectionKey
from .divergence import CONTEXT_AFTER, CONTEXT_BEFORE
from .events import ConnectionOpened, Data, Direction, Event, HalfClosed, Outcome, Reset
from .exchange_findings import (
    MoreMismatches,
    RequestMismatch,
    ReusedExchanges,
    UnansweredRequest,
    UnusedExchanges,
)
from .prefix import common_prefix
from .turns import split_turns
from .validation import one_of

__all__ = [
    "Answer",
    "Exchange",
    "ExchangeBook",
    "ExchangeReplay",
    "Match",
    "MoreMismatches",
    "RequestMismatch",
    "ReusedExchanges",
    "UnansweredRequest",
    "UnusedExchanges",
    "build_books",
    "match_mode",
]

#: How many recorded requests are compared with a live request that matches none exactly.
MAX_CANDIDATES = 1000
#: Findings of requests answered by their closest match kept per key; the rest are counted.
MAX_MISMATCHES = 10


class Match(str, enum.Enum):
    """What a replay pairs live traffic with."""

    #: Each live connection replays one recorded connection of its key.
    CONNECTION = "connection"
    #: Each live request gets the reply to the same recorded request of its key, from any connection.
    EXCHANGE = "exchange"


#: A match mode from its name, in any case (:class:`ConfigError` listing the modes otherwise).
match_mode = one_of(Match)


class Ending(str, enum.Enum):
    """How the recorded server ended its connection right after a reply, before its client did."""

    FIN = "fin"
    RESET = "reset"


@attrs.frozen
class Exchange:
    """A recorded request and the reply the server sent after it."""

    conn: int
    ordinal: int  # of ``conn`` among the recorded connections of its key, from 1
    number: int  # position among the exchanges of ``conn``, from 0
    request: bytes
    reply: bytes
    t: float
    ending: Ending | None = None  # the recorded server closed right after this reply


# -- the recorded side --------------------------------------------------------------------


def exchanges_of(opened: ConnectionOpened, events: Iterable[Event], ordinal: int = 1) -> list[Exchange]:
    """The exchanges of one recorded connection, in order."""
    events = list(events)
    turns = split_turns(events)
    # Where the server ended the connection, counted in turns begun before it,
    # if it did so before its client ended its side.
    ending: tuple[Ending, int] | None = None
    begun, last = 0, None
    for event in events:
        if isinstance(event, Data) and event.data:
            if event.direction is not last:
                begun, last = begun + 1, event.direction
        elif isinstance(event, (HalfClosed, Reset)):
            if event.direction is Direction.C2S:
                break
            ending = (Ending.RESET if isinstance(event, Reset) else Ending.FIN, begun)
            break
    pairs: list[tuple[bytes, bytes, float, int]] = []  # request, reply, t, index of its last turn
    i = 0
    if turns and turns[0].direction is Direction.S2C:
        pairs.append((b"", turns[0].data, turns[0].t, 0))
        i = 1
    while i < len(turns):
        reply = turns[i + 1] if i + 1 < len(turns) else None
        pairs.append((turns[i].data, reply.data if reply else b"", turns[i].t, i + (1 if reply else 0)))
        i += 2
    if ending is not None and ending[1] == 0:
        pairs.insert(0, (b"", b"", opened.t, -1))  # closed before anyone spoke
    found = []
    for number, (request, reply, t, last_turn) in enumerate(pairs):
        closes = ending is not None and last_turn == ending[1] - 1
        found.append(Exchange(opened.conn, ordinal, number, request, reply, t, ending[0] if closes else None))
    return found


def _similarity(a: bytes, b: bytes) -> tuple[int, int]:
    """Bytes two requests share at their start and end, then nearness of length: higher is closer."""
    prefix = common_prefix(a, b)
    suffix = common_prefix(a[prefix:][::-1], b[prefix:][::-1])
    return prefix + suffix, -abs(len(a) - len(b))


@attrs.define(eq=False)
class ExchangeBook:
    """The recorded exchanges of one key, and which of them live requests have used.

    Each is used once, earliest recorded first; only when none of the same
    request is left is one given again (and counted as a reuse, except a
    banner: the number of connections a pool opens may vary).
    """

    key: ConnectionKey
    exchanges: list[Exchange]
    #: Whether each established recording of the key, in order of opening, began with a banner.
    banners: list[bool] = attrs.field(factory=list)
    _opened: int = attrs.field(init=False, default=0)
    _unused: dict[bytes, deque[int]] = attrs.field(init=False, factory=dict)
    _all: dict[bytes, list[int]] = attrs.field(init=False, factory=dict)
    _lengths: set[int] = attrs.field(init=False, factory=set)
    _sorted_lengths: list[int] = attrs.field(init=False, factory=list)
    uses: list[int] = attrs.field(init=False, factory=list)
    reused: int = attrs.field(init=False, default=0)
    mismatches: list[RequestMismatch] = attrs.field(init=False, factory=list)
    more_mismatches: int = attrs.field(init=False, default=0)
    unanswered: list[bytes] = attrs.field(init=False, factory=list)

    def __attrs_post_init__(self) -> None:
        self.exchanges.sort(key=lambda e: (e.t, e.conn, e.number))
        self.uses = [0] * len(self.exchanges)
        for index, exchange in enumerate(self.exchanges):
            self._unused.setdefault(exchange.request, deque()).append(index)
            self._all.setdefault(exchange.request, []).append(index)
            if exchange.request:
                self._lengths.add(len(exchange.request))
        self._sorted_lengths = sorted(self._lengths)

    # -- looking up ----------------------------------------------------------------------

    def is_request(self, data: bytes) -> bool:
        return len(data) in self._lengths and data in self._all

    def prefix_length(self, data: bytes, after: int = 0) -> int | None:
        """The shortest recorded request longer than ``after`` bytes that ``data`` starts with."""
        for length in self._sorted_lengths:
            if length <= after:
                continue
            if length >= len(data):
                return None
            if data[:length] in self._all:
                return length
        return None

    def take(self, request: bytes) -> Exchange | None:
        """The exchange that answers ``request`` (a recorded one), marked used."""
        unused = self._unused.get(request)
        if unused:
            index = unused.popleft()
        else:
            every = self._all.get(request)
            if not every:
                return None
            index = every[0]
            if request:  # a banner again is one more connection, which pools may well open
                self.reused += 1
        self.uses[index] += 1
        return self.exchanges[index]

    def opening(self) -> Exchange | None:
        """What the server says when a connection opens: the next banner, if the key has them."""
        n, self._opened = self._opened, self._opened + 1
        # The n-th connection opens as the n-th recorded one did; past those,
        # with a banner only if every recorded one had one.
        greets = self.banners[n] if n < len(self.banners) else bool(self.banners) and all(self.banners)
        return self.take(b"") if greets else None

    def closest(self, live: bytes) -> Exchange | None:
        """Answer a request that equals no recorded one with the most alike, noting the difference."""
        candidates = [r for r, left in self._unused.items() if r and left][:MAX_CANDIDATES]
        if not candidates:
            candidates = [r for r in self._all if r][:MAX_CANDIDATES]
        if not candidates:
            self.unanswered.append(live)
            return None
        best = max(candidates, key=lambda request: _similarity(live, request))
        exchange = self.take(best)
        assert exchange is not None
        self._note_mismatch(exchange, live)
        return exchange

    def _note_mismatch(self, exchange: Exchange, live: bytes) -> None:
        if len(self.mismatches) >= MAX_MISMATCHES:
            self.more_mismatches += 1
            return
        recorded = exchange.request
        offset = common_prefix(live, recorded)
        start = max(0, offset - CONTEXT_BEFORE)
        self.mismatches.append(
            RequestMismatch(
                exchange.conn,
                self.key,
                exchange.ordinal,
                Direction.C2S,
                offset,
                recorded[start : offset + CONTEXT_AFTER],
                live[start : offset + CONTEXT_AFTER],
                start,
                exchange=exchange.number,
                live_length=len(live),
                recorded_length=len(recorded),
            )
        )

    # -- the end ---------------------------------------------------------------------------

    def findings(self) -> list:
        """What the live requests of this key did differently from the recorded ones."""
        found: list = list(self.mismatches)
        first = self.exchanges[0] if self.exchanges else None
        if first is None:
            return found
        label = (first.conn, self.key, first.ordinal)
        if self.more_mismatches:
            found.append(MoreMismatches(*label, self.more_mismatches))
        if self.unanswered:
            found.append(UnansweredRequest(*label, len(self.unanswered), self.unanswered[0][:CONTEXT_AFTER]))
        if self.reused:
            found.append(ReusedExchanges(*label, self.reused))
        unused = [e for e, n in zip(self.exchanges, self.uses) if n == 0 and (e.request or e.reply)]
        if unused:
            u = unused[0]
            found.append(
                UnusedExchanges(
                    u.conn, self.key, u.ordinal, len(unused), len(self.exchanges), u.request[:CONTEXT_AFTER]
                )
            )
        return found


def build_books(
    recordings: Iterable[tuple[ConnectionOpened, Iterable[Event]]],
) -> dict[ConnectionKey, ExchangeBook]:
    """The exchange books of a cassette's established connections, one per key.

    ``recordings`` gives each recorded connection's opening and its events,
    in order of opening (connection number); failed attempts are counted for
    ordinals but hold no exchanges.
    """
    ordinals: dict[ConnectionKey, int] = {}
    gathered: dict[ConnectionKey, list[Exchange]] = {}
    banners: dict[ConnectionKey, list[bool]] = {}
    for opened, events in sorted(recordings, key=lambda pair: pair[0].conn):
        ordinals[opened.key] = ordinal = ordinals.get(opened.key, 0) + 1
        if opened.outcome is not Outcome.ESTABLISHED:
            continue
        found = exchanges_of(opened, events, ordinal)
        gathered.setdefault(opened.key, []).extend(found)
        banners.setdefault(opened.key, []).append(bool(found) and not found[0].request)
    return {key: ExchangeBook(key, found, banners[key]) for key, found in gathered.items()}


# -- the live side ---------------------------------------------------------------------


@attrs.frozen
class Answer:
    """Give the live client ``exchange.reply`` (then end as recorded); ``request`` is what it answers."""

    exchange: Exchange
    request: bytes


@attrs.define(eq=False)
class ExchangeReplay:
    """Cuts one live connection's client bytes into requests and answers each from ``book``.

    A request is complete when the bytes so far equal a recorded request of
    the key, or start with one (several requests sent at once: the rest is
    the next request), or when the client has said nothing more for
    ``settle`` seconds or ended its side; a request completed by silence or
    end that equals none is answered as the closest recorded one and noted.
    """

    book: ExchangeBook
    settle: float
    _buffer: bytearray = attrs.field(init=False, factory=bytearray)
    _checked: int = attrs.field(init=False, default=0)  # recorded request lengths up to this were tried
    _last_input: float = attrs.field(init=False, default=0.0)
    _ended: bool = attrs.field(init=False, default=False)

    def open(self, now: float) -> list[Answer]:
        """The connection is open: the banner, if the recorded server spoke first."""
        self._last_input = now
        banner = self.book.opening()
        return [Answer(banner, b"")] if banner is not None else []

    def client_data(self, data: bytes, now: float) -> list[Answer]:
        """The client sent ``data``: the answers to the requests it completes."""
        if self._ended:
            return []
        self._last_input = now
        self._buffer += data
        return self._cut(final=False)

    def client_end(self, now: float) -> list[Answer]:
        """The client ended its side (or reset): whatever it sent is its last request."""
        if self._ended:
            return []
        answers = self._cut(final=True)
        self._ended = True
        return answers

    def poll(self, now: float) -> list[Answer]:
        """Answers due at ``now``: a request completed by the client's silence."""
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return []
        return self._cut(final=True)

    def next_deadline(self) -> float | None:
        """When :meth:`poll` must be called unless the client sends first; None if nothing waits."""
        if self._ended or not self._buffer:
            return None
        return self._last_input + self.settle

    @property
    def waiting(self) -> bytes:
        """Bytes of a request not yet complete."""
        return bytes(self._buffer)

    def _cut(self, final: bool) -> list[Answer]:
        answers: list[Answer] = []
        book = self.book
        while self._buffer:
            data = bytes(self._buffer)
            if book.is_request(data):
                length = len(data)
            else:
                length = book.prefix_length(data, self._checked)
                if length is None:
                    self._checked = len(data)  # no recorded request up to this length starts it
                    if not final:
                        break
                    exchange = book.closest(data)
                    self._consume(len(data))
                    if exchange is not None:
                        answers.append(Answer(exchange, data))
                    break
            request = data[:length]
            self._consume(length)
            exchange = book.take(request)
            assert exchange is not None
            answers.append(Answer(exchange, request))
        return answers

    def _consume(self, length: int) -> None:
        del self._buffer[:length]
        self._checked = 0
