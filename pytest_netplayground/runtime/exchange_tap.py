"""Replay by exchanges: the proxy answers each live request with a recorded reply.

Chosen by :class:`~.replayer.Replayer` when the replay's ``match`` is
``exchange``. Every live connection of a recorded key is let through, whatever
the number of connections recorded; the client's bytes are dropped and cut
into requests by :class:`~..core.exchange.ExchangeReplay`, and each request is
answered with the reply recorded after the same request on any connection of
the key.

The cassette always answers the client. With the recorded server present, it
is sent the recorded request of each exchange given (so it sees what a
recorded client said, as in connection matching) and its own replies are
read and dropped, not compared: exchange matching checks clients only.
"""

from __future__ import annotations

import time

from ..core.addressing import ConnectionKey, Endpoint
from ..core.divergence import DivergenceReport, UnrecordedConnection
from ..core.events import ConnectionOpened, Direction, Outcome
from ..core.exchange import Answer, Ending, ExchangeReplay, build_books
from .pipes import Pipe, Tap
from .replayer import Replayer

C2S, S2C = Direction.C2S, Direction.S2C


class ExchangeTap(Tap):
    """One live connection answered exchange by exchange; waits end at the settle deadline."""

    def __init__(self, replayer: "ExchangeReplayer", replay: ExchangeReplay, server_live: bool):
        self.replayer = replayer
        self.replay = replay
        self.server_live = server_live
        self.pipe: Pipe | None = None
        self.timer_at: float | None = None
        self.ended = False  # the recorded server's side is over: nothing more goes to the client

    def attach(self, pipe, now):
        self.pipe = pipe
        self._act(self.replay.open(now))

    def data(self, pipe, direction, data, now):
        if direction is C2S:
            self._act(self.replay.client_data(bytes(data), now))
        # A live server's bytes are dropped: the cassette answers the client.

    def eof(self, pipe, direction, now):
        if direction is not C2S:
            return
        self._act(self.replay.client_end(now))
        # A server ends its side once its client has ended its own.
        pipe.shut_write(S2C)
        if self.server_live:
            pipe.shut_write(C2S)
        pipe.check_finished(now)

    def reset(self, pipe, direction, now):
        self.replay.client_end(now)
        pipe.abort()

    def _act(self, answers: list[Answer]) -> None:
        pipe = self.pipe
        for answer in answers:
            if pipe is None or pipe.finished or self.ended:
                return
            exchange = answer.exchange
            if self.server_live and exchange.request:
                pipe.write(C2S, exchange.request)
            if exchange.reply:
                pipe.write(S2C, exchange.reply)
            if exchange.ending is Ending.FIN:
                self.ended = True
                pipe.shut_write(S2C)
            elif exchange.ending is Ending.RESET:
                self.ended = True
                pipe.abort()
                return
        self._schedule()

    def _schedule(self) -> None:
        deadline = self.replay.next_deadline()
        if deadline is None or (self.timer_at is not None and self.timer_at <= deadline):
            return
        self.timer_at = deadline
        self.replayer.loop.call_at(deadline, lambda tap: tap._timer(deadline), owner=self)

    def _timer(self, deadline: float) -> None:
        if self.timer_at == deadline:
            self.timer_at = None
        if self.pipe is not None and not self.pipe.finished:
            self._act(self.replay.poll(time.monotonic()))

    def closed(self, pipe, now):
        self.replay.client_end(now)
        self.pipe = None


class ExchangeReplayer(Replayer):
    """Replay mode with exchange matching: every connection of a recorded key is answered
    from the exchanges of all the key's recordings.

    Attempts that failed when recorded (refused, timed out) fail again at the
    same rank among the attempts of their key, as in connection matching;
    every other attempt of a key with an established recording is let through.
    """

    def __init__(self, clock_origin: float, path: str, loop, config):
        super().__init__(clock_origin, path, loop, config)
        self.books = build_books(
            (entry.opened, self.cassette.iter_connection(conn))
            for conn, entry in self.index.connections.items()
        )
        self.waiting: set[tuple[Endpoint, Endpoint]] = set()

    def on_syn(self, client: Endpoint, server: Endpoint) -> Outcome:
        got = self.matcher.open(client, server)
        if isinstance(got, ConnectionOpened):
            return got.outcome  # the recorded attempt of this rank failed: so does this one
        if ConnectionKey.of(client, server) in self.books:
            self.waiting.add((client, server))
            return Outcome.ESTABLISHED
        self.found.append(UnrecordedConnection(client, server))
        return Outcome.REFUSED

    def tap_for(self, pipe: Pipe, server_live: bool) -> Tap:
        self.waiting.discard((pipe.client, pipe.server))
        book = self.books[ConnectionKey.of(pipe.client, pipe.server)]
        return ExchangeTap(self, ExchangeReplay(book, self.config.settle), server_live)

    def stand_in(self, pipe: Pipe) -> bool:
        return (pipe.client, pipe.server) in self.waiting

    def connect_failed(self, client: Endpoint, server: Endpoint, outcome: Outcome) -> None:
        self.waiting.discard((client, server))

    def finish(self, action: object) -> dict:
        # Connections are not paired one for one here: only the exchanges are judged.
        for book in self.books.values():
            self.found.extend(book.findings())
        self.cassette.close()
        return {
            "divergences": DivergenceReport(tuple(self.found)),
            "cassette": str(self.cassette.path),
            "truncated_at": self.index.truncated_at,
        }
