"""One captured TCP connection turned into cassette events.

The handshake decides who the client is and where each side's bytes start;
a connection the capture joined mid-way is taken up from the first segment
seen, its client guessed from the ports. Each segment's payload goes through
its direction's :class:`HalfStream`; an acknowledgement for bytes the capture
never showed, or the end of the connection with bytes still waiting behind a
hole, is a gap, which either cuts the connection there or is skipped over.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from .addressing import Endpoint
from .events import Closed, ConnectionOpened, Data, Direction, HalfClosed, Outcome, Reset
from .tcp_reassembly import Gap, HalfStream

__all__ = ["FIN", "SYN", "RST", "ACK", "GAP_MODES", "StreamSummary", "TcpStream", "server_is_first"]

FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10

#: What a gap does: ``cut`` ends the connection at the first missing byte,
#: ``keep`` goes on after it (the conversation then lacks those bytes).
GAP_MODES = ("cut", "keep")


def server_is_first(first_port: int, second_port: int) -> bool:
    """Whether the first of two endpoints is the server of a connection whose handshake was not captured.

    A port below 1024 facing one above is the server's; otherwise the lower
    port is (clients get ephemeral, high ports); equal ports say nothing and
    the caller keeps the side that sent first as the client.
    """
    if (first_port < 1024) != (second_port < 1024):
        return first_port < 1024
    return first_port < second_port


@attrs.define
class StreamSummary:
    """What importing one connection found, for the report."""

    client: Endpoint
    server: Endpoint
    conn: int | None = None
    handshake: bool = True
    ending: str = "truncated"  # closed, reset, truncated, cut, refused, timed out
    sent: dict[Direction, int] = attrs.field(factory=lambda: dict.fromkeys(Direction, 0))
    retransmitted: int = 0
    duplicate_bytes: int = 0
    placed: int = 0
    gaps: list[tuple[Direction, Gap]] = attrs.field(factory=list)
    conflicts: list[tuple[Direction, int]] = attrs.field(factory=list)


@attrs.define
class TcpStream:
    """The state of one connection of the capture, from its first segment to its end."""

    client: Endpoint
    server: Endpoint
    allot: Callable[[], int]  # gives the next connection number
    gap_mode: str = "cut"
    halves: dict[Direction, HalfStream] = attrs.field(factory=dict)
    syn_seq: int | None = None  # the client's SYN, while no answer came
    conn: int | None = None
    done: bool = False
    half_closed: set[Direction] = attrs.field(factory=set)
    summary: StreamSummary = attrs.field(default=None)

    def __attrs_post_init__(self) -> None:
        self.summary = StreamSummary(self.client, self.server)

    def packet(self, direction: Direction, flags: int, seq: int, ack: int, payload: bytes, t: float) -> list:
        """Take one segment; returns the events it causes."""
        if self.done:
            return []
        out: list = []
        if flags & RST:
            self._reset(direction, t, out)
            return out
        if flags & SYN and not flags & ACK:
            if self.conn is None and direction is Direction.C2S:
                self.syn_seq = seq
                self.halves.setdefault(Direction.C2S, HalfStream(base=(seq + 1) & 0xFFFF_FFFF))
            return out  # a repeated SYN says nothing new
        if flags & SYN:
            self.halves.setdefault(Direction.S2C, HalfStream(base=(seq + 1) & 0xFFFF_FFFF))
            if flags & ACK:
                self.halves.setdefault(Direction.C2S, HalfStream(base=ack))
            seq = (seq + 1) & 0xFFFF_FFFF
        if self.conn is None:
            self._open(t, out, handshake=self.syn_seq is not None or bool(flags & SYN))
        half = self.halves.get(direction)
        if half is None:
            half = self.halves[direction] = HalfStream(base=seq)
        other = self.halves.get(direction.reverse)
        if flags & ACK:
            if other is None:
                self.halves[direction.reverse] = HalfStream(base=ack)
            elif payload or flags & FIN:
                # Saying something after bytes of the peer's it acknowledges: those bytes come
                # first. A bare ACK decides nothing, so a capture slightly out of order does not
                # make a gap of bytes that show up just after it.
                self._check_ack(direction.reverse, other, ack, t, out)
        if self.done:
            return out
        self._data(direction, half.add(seq, payload), t, out)
        if flags & FIN and half.fin is None:
            half.fin = half.offset_of(seq) + len(payload)
        if half.overfull:
            self._gap(direction, half.missing_before(half.next), t, out)
        self._check_finished(t, out)
        return out

    def _open(self, t: float, out: list, handshake: bool, outcome: Outcome = Outcome.ESTABLISHED) -> None:
        self.conn = self.allot()
        self.summary.conn = self.conn
        self.summary.handshake = handshake
        out.append(ConnectionOpened(t, self.conn, self.client, self.server, outcome))

    def _data(self, direction: Direction, data: bytes, t: float, out: list) -> None:
        if data:
            self.summary.sent[direction] += len(data)
            out.append(Data(t, self.conn, direction, data))

    def _check_ack(self, direction: Direction, half: HalfStream, ack: int, t: float, out: list) -> None:
        """The peer acknowledged bytes of ``direction`` up to ``ack``: any of them not captured is a gap."""
        target = half.offset_of(ack)
        if half.fin is not None:
            target = min(target, half.fin)
        # One unseen byte with nothing waiting is most likely a FIN the capture lacks.
        if target > half.next + 1 or (target > half.next and half.hole):
            self._gap(direction, half.missing_before(target), t, out)

    def _gap(self, direction: Direction, gap: Gap | None, t: float, out: list) -> None:
        if gap is None or self.done:
            return
        half = self.halves[direction]
        self.summary.gaps.append((direction, gap))
        if self.gap_mode == "keep":
            self._data(direction, half.skip(gap), t, out)
            return
        half.cut(gap)
        self._end("cut", t, out)

    def _check_finished(self, t: float, out: list) -> None:
        for direction, half in self.halves.items():
            if half.finished and direction not in self.half_closed:
                self.half_closed.add(direction)
                out.append(HalfClosed(t, self.conn, direction))
        if len(self.half_closed) == 2:
            self._end("closed", t, out)

    def _flush(self, t: float, out: list) -> None:
        """The connection ends: bytes still waiting behind a hole are a gap."""
        for direction in Direction:
            half = self.halves.get(direction)
            while half is not None and half.hole and not self.done:
                self._gap(direction, half.missing_before(half.next), t, out)
        if not self.done:
            self._check_finished(t, out)

    def _reset(self, direction: Direction, t: float, out: list) -> None:
        if self.conn is None:
            if self.syn_seq is None:
                return  # a reset for a connection the capture knows nothing of
            refused = direction is Direction.S2C
            self._open(t, out, True, Outcome.REFUSED if refused else Outcome.TIMED_OUT)
            self._finish("refused" if refused else "timed out")
            return
        self._flush(t, out)
        if self.done:
            return
        out.append(Reset(t, self.conn, direction))
        self._end("reset", t, out)

    def finish(self, t: float) -> list:
        """The capture ended at ``t``: a connection still open is closed there."""
        out: list = []
        if self.done:
            return out
        if self.conn is None:
            if self.syn_seq is not None:
                self._open(t, out, True, Outcome.TIMED_OUT)
                self._finish("timed out")
            return out
        self._flush(t, out)
        if not self.done:
            self._end("truncated", t, out)
        return out

    def _end(self, ending: str, t: float, out: list) -> None:
        out.append(Closed(t, self.conn))
        self._finish(ending)

    def _finish(self, ending: str) -> None:
        self.done = True
        self.summary.ending = ending
        for direction, half in self.halves.items():
            self.summary.retransmitted += half.retransmitted
            self.summary.duplicate_bytes += half.duplicate_bytes
            self.summary.placed += half.placed
            self.summary.conflicts.extend((direction, c.offset) for c in half.conflicts)
        self.halves.clear()
