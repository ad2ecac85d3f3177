"""Replay mode: each connection matched to a recorded one and played back.

:class:`Replayer` is the session; each connection's :class:`ReplayTap` drops
the live bytes and writes the recorded ones, as the replay core decides, and
hands its divergences to the replayer.
"""

from __future__ import annotations

import time

import attrs

from ..cassette import Cassette
from ..core.addressing import Endpoint
from ..core.coverage import starts_tls_record
from ..core.divergence import (
    ByteMismatch,
    DivergenceReport,
    ExtraBytes,
    MissingBytes,
    UnrecordedConnection,
    UnusedRecording,
)
from ..core.events import ConnectionOpened, Data, Direction, Outcome
from ..core.matching import LEAD_LIMIT, Claim, Matcher
from ..core.noise import Noise, resolve_check
from ..core.replay import Abort, ConnectionReplay, Finished, ReplayConfig, Send, ShutWrite
from ..core.standin import stand_in_deadline
from .pipes import HIGH_WATER, Pipe, Tap
from .session import Session
from .udp_tap import UdpReplayer

# How long a replayed connection waits for its client's first bytes to tell
# which recording it is before it takes the first one left of its key.
BIND_PATIENCE = 0.5
# A replayed connection whose records take at most this many bytes in the
# cassette is decoded once, not once per pass over it, and kept while it
# plays: small enough that thousands at once stay well within memory.
DECODED_LIMIT = 64 * 1024


class ReplayTap(Tap):
    """Drops the live bytes and writes the recorded ones, as the replay core decides.

    Until its :class:`~.core.matching.Claim` settles which recording this
    connection replays, the live events are kept and the client's first bytes
    are shown to the claim; then they are given to the replay in order.
    """

    def __init__(self, replayer: "Replayer", claim: Claim, server_live: bool, start: float):
        self.replayer = replayer
        self.claim = claim
        self.server_live = server_live
        self.start = start
        self.replay: ConnectionReplay | None = None
        self.lead = bytearray()
        self.held: list[tuple] = []
        self.pipe: Pipe | None = None
        self.timer_at: float | None = None
        self.done = False

    def attach(self, pipe, now):
        self.pipe = pipe
        if not self._settle(now, final=False):
            self.replayer.loop.call_at(
                now + BIND_PATIENCE, lambda tap: tap._settle(time.monotonic(), True), owner=self
            )

    def _settle(self, now: float, final: bool) -> bool:
        """Choose the recording if the client's bytes so far decide it; True once chosen."""
        if self.replay is not None:
            return True
        opened = self.claim.settle(bytes(self.lead), final)
        if opened is None:
            return False
        config = self.replayer.config
        noise = config.noise
        self.replay = ConnectionReplay(
            opened,
            self.replayer.steps(opened.conn),
            config=config,
            server_live=self.server_live,
            start=self.start,
            ordinal=self.replayer.matcher.ordinal_of(opened),
            checked=[direction for direction in Direction if noise.is_checked(opened, direction)],
            comparator_for=lambda direction, turn: noise.comparator(opened, direction, turn),
        )
        held, self.held, self.lead = self.held, [], bytearray()
        for event in held:
            self._give(*event)
        self.run(now)
        return True

    def data(self, pipe, direction, data, now):
        self._live("data", direction, now, bytes(data))

    def eof(self, pipe, direction, now):
        self._live("eof", direction, now)

    def reset(self, pipe, direction, now):
        self._live("reset", direction, now)

    def write_failed(self, pipe, direction, now):
        """The live receiver of ``direction`` went away (say a server that closed early): only its
        leg closes, the other side goes on with the recording, and the replay hears of it as that
        side's reset (a divergence where the recording had none)."""
        pipe.drop_leg(direction)
        self._live("reset", direction.reverse, now)

    def _live(self, kind: str, direction: Direction, now: float, data: bytes = b"") -> None:
        """One live event: to the replay, or held (and shown to the claim) until it settles."""
        if self.replay is None:
            self.held.append((kind, direction, now, data))
            if kind != "data":
                # The client closing (or either side resetting) is the last word on it.
                self._settle(now, final=kind == "reset" or direction is Direction.C2S)
            elif direction is Direction.C2S and len(self.lead) < LEAD_LIMIT:
                self.lead += data[: LEAD_LIMIT - len(self.lead)]
                self._settle(now, final=False)
            return
        self._give(kind, direction, now, data)
        self.run(now)

    def _give(self, kind: str, direction: Direction, now: float, data: bytes) -> None:
        if kind == "data":
            self.replay.live_data(direction, data, now)
        elif kind == "eof":
            self.replay.live_eof(direction, now)
        else:
            self.replay.live_reset(direction, now)

    def drained(self, pipe, direction, now):
        self.run(now)

    def run(self, now: float) -> None:
        pipe = self.pipe
        if pipe is None or pipe.finished or self.replay is None:
            return
        while True:
            # Backpressure: stop pulling recorded bytes while a leg's queue is full.
            if any(
                leg is not None and len(leg.out) >= HIGH_WATER for leg in (pipe.client_leg, pipe.server_leg)
            ):
                return
            actions = self.replay.poll(now, limit=4)
            for action in actions:
                if isinstance(action, Send):
                    pipe.write(action.direction, action.data)
                elif isinstance(action, ShutWrite):
                    pipe.shut_write(action.direction)
                elif isinstance(action, Abort):
                    pipe.abort()
                    return
                elif isinstance(action, Finished):
                    self.done = True
                if pipe.finished:
                    return
            if len(actions) < 4:
                break
        if self.done:
            pipe.check_finished(now)
            return
        deadline = self.replay.next_deadline()
        if deadline is not None and (self.timer_at is None or deadline < self.timer_at):
            self.timer_at = deadline
            self.replayer.loop.call_at(deadline, lambda tap: tap._timer(deadline), owner=self)

    def _timer(self, deadline: float) -> None:
        if self.timer_at == deadline:
            self.timer_at = None
        self.run(time.monotonic())

    def closed(self, pipe, now):
        self._settle(now, final=True)
        if self.replay is not None:
            self.replay.close(now)
            self.replayer.collect(self.replay.divergences)
        self.pipe = None


class _DecodedOnce:
    """Fresh iterators over one source, which is read once and remembered."""

    def __init__(self, source):
        self.make_source = source
        self.source = None
        self.events: list = []

    def __call__(self):
        return self._walk()

    def _walk(self):
        position = 0
        while True:
            if position == len(self.events):
                if self.source is None:
                    self.source = self.make_source()
                event = next(self.source, None)
                if event is None:
                    return
                self.events.append(event)
            yield self.events[position]
            position += 1


class Replayer(UdpReplayer, Session):
    """Replay mode: match each connection to a recorded one and play it back."""

    mode = "replay"
    udp_tap = True

    def __init__(self, clock_origin: float, path: str, loop, config: ReplayConfig):
        super().__init__(clock_origin)
        self.cassette = Cassette(path, tolerate_truncation=True)
        self.index = self.cassette.index()
        self.loop = loop
        self.base_config = config
        self._config: tuple[int, ReplayConfig] | None = None
        self.matcher = Matcher((entry.opened for entry in self.index.connections.values()), self.index.leads)
        self.pending: dict[tuple[Endpoint, Endpoint], Claim] = {}
        self.found: list = []
        notes = self.index.notes
        self.start_udp(notes, config)
        # (client address, server) of the connections recorded inside TLS, with their ALPN.
        self.tls_keys: dict[tuple[str, Endpoint], str | None] = {}
        for conn, note in notes.tls.items():
            opened = self.index.connections[conn].opened
            self.tls_keys.setdefault((opened.client.host, opened.server), note.alpn)

    @property
    def config(self) -> ReplayConfig:
        """The replay settings with the noise of this cassette: the user's ignore rules, the
        learned noise, and the checked hosts (names looked up among the hosts made so far,
        then the recorded ones)."""
        if self._config is None or self._config[0] != len(self.hosts):
            base = self.base_config
            noise = Noise(
                ignore=base.ignore + base.noise.ignore,
                learned=base.noise.learned + self.index.noise,
                checked=resolve_check(base.check, (*self.hosts, *self.index.header.hosts))
                if base.check
                else base.noise.checked,
            )
            self._config = (len(self.hosts), attrs.evolve(base, noise=noise))
        return self._config[1]

    def on_syn(self, client: Endpoint, server: Endpoint) -> Outcome:
        got = self.matcher.open(client, server)
        if got is None:
            self.found.append(UnrecordedConnection(client, server))
            return Outcome.REFUSED
        if isinstance(got, ConnectionOpened):
            return got.outcome
        self.pending[(client, server)] = got
        return Outcome.ESTABLISHED

    def steps(self, conn: int):
        """What a replay reads its connection from: each call a fresh iterator.

        A replay walks its connection up to three times (the script, and the
        bytes of each direction). A small connection is decoded once, as far as
        the furthest pass has got, and kept while it plays; a large one is
        streamed from the file by each pass.
        """
        if sum(self.index.connections[conn].lengths) > DECODED_LIMIT:
            return lambda: self.cassette.iter_connection(conn)
        return _DecodedOnce(lambda: self.cassette.iter_connection(conn))

    def tap_for(self, pipe: Pipe, server_live: bool) -> Tap:
        claim = self.pending.pop((pipe.client, pipe.server))
        return ReplayTap(self, claim, server_live, time.monotonic())

    def stand_in(self, pipe: Pipe) -> bool:
        return (pipe.client, pipe.server) in self.pending

    def expects_tls(self, client: Endpoint, server: Endpoint) -> bool:
        return (client.host, server) in self.tls_keys

    def recorded_alpn(self, client: Endpoint, server: Endpoint) -> str | None:
        return self.tls_keys.get((client.host, server))

    def connect_failed(self, client: Endpoint, server: Endpoint, outcome: Outcome) -> None:
        claim = self.pending.pop((client, server), None)
        if claim is not None:
            claim.settle(b"", final=True)  # the attempt was made: its recording is not unused

    def collect(self, divergences) -> None:
        self.found.extend(divergences)

    def stand_in_deadline(self, server: Endpoint, host_since: float, now: float) -> float:
        return stand_in_deadline(self.index.notes.listen_delays, server, host_since, now)

    def _tls_streams(self, limit: int = 64) -> frozenset:
        """The diverging (conn, direction) streams whose recorded bytes start with a TLS record."""
        byte_kinds = (ByteMismatch, ExtraBytes, MissingBytes)
        wanted = {(item.conn, item.direction) for item in self.found if isinstance(item, byte_kinds)}
        found = set()
        for conn, direction in sorted(wanted)[:limit]:
            first = next(
                (e for e in self.steps(conn)() if isinstance(e, Data) and e.direction is direction), None
            )
            if first is not None and starts_tls_record(first.data):
                found.add((conn, direction))
        return frozenset(found)

    def finish(self, action: object) -> dict:
        for opened in self.matcher.unused():
            self.found.append(UnusedRecording(opened.conn, opened.key, self.matcher.ordinal_of(opened)))
        self.found.extend(self.finish_udp())
        tls = self._tls_streams()
        self.cassette.close()
        return {
            "divergences": DivergenceReport(tuple(self.found), tls=tls),
            "cassette": str(self.cassette.path),
            "truncated_at": self.index.truncated_at,
        }
