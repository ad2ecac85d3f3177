"""Pairing live connections with recorded ones during replay.

A live connection is matched by its :class:`ConnectionKey` (client host,
server host, server port: the client's ephemeral port changes from run to run)
and, among the recordings of that key, by what its client says first.

Opening order alone is not enough: connections of one key that open within a
few microseconds of each other, or whose SYN was lost and sent again, open in
another order on replay than they did when recorded. So a connection's
*outcome* (established, refused, ...) is taken from the next recording of its
key in order of opening, as a SYN must be answered at once; but *which*
established recording it replays is settled later, from its client's first
bytes (its :func:`lead <Leads>`): the first recording, in order of opening,
whose client sent the same. A connection whose client says nothing that
decides it gets the first recording left, as by opening order alone.
Ordinals are 1-based, as a report says "2nd of that key".
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping

import attrs

from ..errors import CassetteFormatError
from .addressing import ConnectionKey, Endpoint
from .events import Closed, ConnectionOpened, Data, Direction, Event, HalfClosed, Outcome, Reset

__all__ = ["LEAD_LIMIT", "Claim", "Leads", "Matcher"]

#: How many of the client's first bytes are kept to tell recordings apart.
LEAD_LIMIT = 512


class Leads:
    """Works out each recorded connection's lead from a stream of events.

    A lead is what the client sent before the server's first byte (at most
    :data:`LEAD_LIMIT` bytes), or None when the server spoke first.

    Sans-io: feed it every event of a cassette, in file order, as an index
    pass reads them; :attr:`leads` then maps each connection to its lead.
    """

    def __init__(self) -> None:
        self.leads: dict[int, bytes | None] = {}
        self._open: dict[int, bytearray] = {}

    def feed(self, event: Event) -> None:
        if isinstance(event, ConnectionOpened):
            self._open[event.conn] = bytearray()
            self.leads[event.conn] = b""
            return
        lead = self._open.get(event.conn)
        if lead is None:
            return
        if isinstance(event, Data):
            if event.direction is Direction.S2C:
                self._settle(event.conn, None if not lead else bytes(lead))
                return
            lead += event.data[: LEAD_LIMIT - len(lead)]
            if len(lead) >= LEAD_LIMIT:
                self._settle(event.conn, bytes(lead))
            else:
                self.leads[event.conn] = bytes(lead)
        elif isinstance(event, (HalfClosed, Reset, Closed)):
            self._settle(event.conn, bytes(lead))

    def _settle(self, conn: int, lead: bytes | None) -> None:
        self.leads[conn] = lead
        del self._open[conn]


@attrs.define(eq=False)
class _Pool:
    """The established recordings of one key that no live connection has yet."""

    order: deque = attrs.field(factory=deque)  # conns, in order of opening
    by_lead: dict = attrs.field(factory=dict)  # lead -> deque of conns, in order of opening
    lengths: Counter = attrs.field(factory=Counter)  # lengths of the non-empty leads left
    lead_of: dict = attrs.field(factory=dict)  # conn -> lead

    def add(self, conn: int, lead: bytes | None) -> None:
        self.order.append(conn)
        self.lead_of[conn] = lead
        self.by_lead.setdefault(lead, deque()).append(conn)
        if lead:
            self.lengths[len(lead)] += 1


@attrs.define(eq=False)
class Claim:
    """An established connection whose recording is not chosen yet.

    Made by :meth:`Matcher.open` when a SYN is let through; :meth:`settle` is
    told the client's bytes as they arrive and chooses the recording once they
    tell recordings apart, or at once when ``final`` (the client closed, or
    waited too long).
    """

    matcher: "Matcher"
    key: ConnectionKey
    opened: ConnectionOpened | None = None

    def settle(self, live: bytes, final: bool = False) -> ConnectionOpened | None:
        """The recording this connection replays, or None while its client's bytes
        so far (``live``, from the first) do not yet decide it."""
        if self.opened is None:
            conn = self.matcher._choose(self.key, live, final)
            if conn is not None:
                self.opened = self.matcher._take(self.key, conn)
        return self.opened


class Matcher:
    """Hands out recorded connections to live ones, each recording at most once.

    :meth:`open` is called at each SYN and consumes the next recording of its
    key in order of opening, whose outcome the live attempt gets: recordings
    whose attempt failed (refused, timed out) are given out there and then. An
    established one yields a :class:`Claim` that picks among the established
    recordings of the key still unclaimed. ``leads`` (see :class:`Leads`)
    maps recordings to their clients' first bytes; without it every claim
    settles in order of opening.
    """

    def __init__(
        self, recorded: Iterable[ConnectionOpened], leads: Mapping[int, bytes | None] | None = None
    ) -> None:
        self._by_conn: dict[int, ConnectionOpened] = {}
        for opened in recorded:
            if opened.conn in self._by_conn:
                raise CassetteFormatError(f"connection number {opened.conn} is opened twice")
            self._by_conn[opened.conn] = opened
        self._by_conn = dict(sorted(self._by_conn.items()))
        self._by_key: dict[ConnectionKey, list[ConnectionOpened]] = {}
        self._ordinal: dict[int, int] = {}
        self._pools: dict[ConnectionKey, _Pool] = {}
        leads = leads or {}
        for opened in self._by_conn.values():
            queue = self._by_key.setdefault(opened.key, [])
            queue.append(opened)
            self._ordinal[opened.conn] = len(queue)
            if opened.outcome is Outcome.ESTABLISHED:
                self._pools.setdefault(opened.key, _Pool()).add(opened.conn, leads.get(opened.conn, b""))
        self._next: dict[ConnectionKey, int] = {}
        self._used: set[int] = set()

    def open(
        self, client: Endpoint | tuple[str, int], server: Endpoint | tuple[str, int]
    ) -> ConnectionOpened | Claim | None:
        """At a live SYN: the failed recording it replays, a :class:`Claim` if the
        recording was established, or None if the key has no recording left."""
        key = ConnectionKey.of(Endpoint.of(client), Endpoint.of(server))
        index = self._next.get(key, 0)
        queue = self._by_key.get(key, [])
        if index >= len(queue):
            return None
        self._next[key] = index + 1
        opened = queue[index]
        if opened.outcome is Outcome.ESTABLISHED:
            return Claim(self, key)
        self._used.add(opened.conn)
        return opened

    def match(
        self, client: Endpoint | tuple[str, int], server: Endpoint | tuple[str, int]
    ) -> ConnectionOpened | None:
        """The recording for a live connection, chosen at once by order of opening."""
        got = self.open(client, server)
        return got.settle(b"", final=True) if isinstance(got, Claim) else got

    def _first_left(self, conns: deque) -> int | None:
        while conns and conns[0] in self._used:
            conns.popleft()
        return conns[0] if conns else None

    def _choose(self, key: ConnectionKey, live: bytes, final: bool) -> int | None:
        pool = self._pools[key]
        first = self._first_left(pool.order)
        if first is None:
            return None
        if not live:
            # Nothing said yet: only a server that speaks first, or a client
            # that closes in silence, decides it.
            if final:
                silent = self._first_left(pool.by_lead.get(b"", deque()))
                return first if silent is None else silent
            return first if pool.lead_of[first] is None else None
        lengths = sorted((n for n, count in pool.lengths.items() if count > 0), reverse=True)
        for length in lengths:  # the longest lead that the live bytes start with wins
            if length <= len(live):
                conns = pool.by_lead.get(live[:length])
                conn = self._first_left(conns) if conns else None
                if conn is not None:
                    return conn
        if final or not lengths or len(live) >= lengths[0]:
            return first  # no recording's client said this: the first one left
        return None  # a longer lead may still match

    def _take(self, key: ConnectionKey, conn: int) -> ConnectionOpened:
        self._used.add(conn)
        lead = self._pools[key].lead_of[conn]
        if lead:
            self._pools[key].lengths[len(lead)] -= 1
        return self._by_conn[conn]

    def unused(self) -> list[ConnectionOpened]:
        """Recorded connections no live connection was matched to, in order of opening."""
        return [opened for conn, opened in self._by_conn.items() if conn not in self._used]

    def ordinal_of(self, conn: ConnectionOpened | int) -> int:
        """1-based position of a recorded connection among those of its key."""
        number = conn.conn if isinstance(conn, ConnectionOpened) else conn
        try:
            return self._ordinal[number]
        except KeyError:
            raise KeyError(f"connection #{number} is not in the recording") from None
