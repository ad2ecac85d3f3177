"""Pairing live connections with recorded ones during replay.

A live connection is matched by its :class:`ConnectionKey` (client host,
server host, server port: the client's ephemeral port changes from run to run)
and by its ordinal: the *n*-th live connection of a key gets the *n*-th
recorded connection of that key, in order of opening. Ordinals are 1-based,
as a report says "2nd of that key".
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import CassetteFormatError
from .addressing import ConnectionKey, Endpoint
from .events import ConnectionOpened

__all__ = ["Matcher"]


class Matcher:
    """Hands out recorded connections to live ones, each recording at most once.

    Every call to :meth:`match` consumes the next ordinal of its key, so two
    live connections of one key open at the same time get two different
    recordings, in the order they opened. Recordings whose attempt failed
    (refused, timed out) take part like any other: the caller replays the
    recorded outcome.
    """

    def __init__(self, recorded: Iterable[ConnectionOpened]) -> None:
        self._by_conn: dict[int, ConnectionOpened] = {}
        for opened in recorded:
            if opened.conn in self._by_conn:
                raise CassetteFormatError(f"connection number {opened.conn} is opened twice")
            self._by_conn[opened.conn] = opened
        self._by_conn = dict(sorted(self._by_conn.items()))
        self._by_key: dict[ConnectionKey, list[ConnectionOpened]] = {}
        self._ordinal: dict[int, int] = {}
        for opened in self._by_conn.values():
            queue = self._by_key.setdefault(opened.key, [])
            queue.append(opened)
            self._ordinal[opened.conn] = len(queue)
        self._next: dict[ConnectionKey, int] = {}
        self._used: set[int] = set()

    def match(
        self, client: Endpoint | tuple[str, int], server: Endpoint | tuple[str, int]
    ) -> ConnectionOpened | None:
        """The recording for a live connection that has just opened, or None if none is left."""
        key = ConnectionKey.of(Endpoint.of(client), Endpoint.of(server))
        index = self._next.get(key, 0)
        self._next[key] = index + 1
        queue = self._by_key.get(key, [])
        if index >= len(queue):
            return None
        opened = queue[index]
        self._used.add(opened.conn)
        return opened

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
