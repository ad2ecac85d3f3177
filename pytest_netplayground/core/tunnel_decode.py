"""Opening a captured tunnel with its key: the inner IP packets of the datagrams, the control messages.

A capture of the tunnel holds the control connection (TCP) and the datagrams
(UDP), both on the agent's port. The session keys come from the handshake at
the start of each control connection: its first message each way (HELLO to the
agent, AGENT_HELLO back) carry the nonces and the agent's proof, so with the
key both sides' keys can be derived, and the proof says whether the key is the
right one. The control frames after the handshake are opened in stream order;
datagrams are routed by the session id in their header and opened as the
receiving side would, replay window included (a capture taken on several
interfaces shows each datagram more than once; the copies count as replayed).
A capture taken on the sending machine may show a run of datagrams the sender
handed to the kernel in one call (UDP segmentation offload) as one UDP packet,
before the device cut it: :func:`split_run` cuts it back into the datagrams.
"""

from __future__ import annotations

import collections

import attrs

from ..errors import TunnelAuthError, TunnelError, TunnelKeyMismatch
from .capture_decode import TCP, UDP, CapturedPacket
from .tcp_reassembly import HalfStream
from .tunnel_channels import HEADER_SIZE, TAG_SIZE, ControlChannel, DatagramChannel, datagram_session
from .tunnel_crypto import AGENT_HELLO, HELLO, MESSAGE_SIZES, OK, PROOF, SessionKeys, session_from_transcript

__all__ = ["TO_AGENT", "TO_SUPERVISOR", "TunnelDecoder", "split_run"]

_SYN, _ACK = 0x02, 0x10
TO_AGENT, TO_SUPERVISOR = "to agent", "to supervisor"
#: Bytes of handshake each way: the first message (read for the keys), then the one to skip.
_FIRST = {TO_AGENT: MESSAGE_SIZES[HELLO], TO_SUPERVISOR: MESSAGE_SIZES[AGENT_HELLO]}
_HANDSHAKE = {
    TO_AGENT: _FIRST[TO_AGENT] + MESSAGE_SIZES[PROOF],
    TO_SUPERVISOR: _FIRST[TO_SUPERVISOR] + MESSAGE_SIZES[OK],
}


def _counter(datagram: bytes) -> int:
    return int.from_bytes(datagram[16:24], "big")


def split_run(payload: bytes) -> list[bytes]:
    """The tunnel datagrams in one captured UDP payload: itself, or the run it holds.

    A run is datagrams of one session and payload kind (the same first 16 bytes), of
    one size but the last (which may be shorter), with rising counters; anything
    else is one datagram, to be opened (or dropped) as it is.
    """
    smallest = HEADER_SIZE + TAG_SIZE
    if len(payload) < 2 * smallest or datagram_session(payload) is None:
        return [payload]
    head = bytes(payload[:16])
    size = payload.find(head, smallest)
    if size < smallest:
        return [payload]
    pieces = [payload[start : start + size] for start in range(0, len(payload), size)]
    counters = [_counter(piece) for piece in pieces]
    if any(piece[:16] != head or len(piece) < smallest for piece in pieces) or any(
        later <= earlier for earlier, later in zip(counters, counters[1:])
    ):
        return [payload]
    return pieces


@attrs.define
class _Connection:
    """One control connection: each direction reassembled, then its handshake and frames read."""

    notes: collections.Counter
    key: bytes = attrs.field(repr=False)
    halves: dict[str, HalfStream] = attrs.field(factory=dict)
    read: dict[str, bytearray] = attrs.field(factory=lambda: {TO_AGENT: bytearray(), TO_SUPERVISOR: bytearray()})
    views: tuple[SessionKeys, SessionKeys] | None = None  # the supervisor's and the agent's
    readers: dict[str, ControlChannel] = attrs.field(factory=dict)
    failed: bool = False  # no keys: the handshake is not there or not with this key
    broken: set[str] = attrs.field(factory=set)  # directions whose frames stopped authenticating

    def add(self, direction: str, packet: CapturedPacket) -> list[tuple[str, bytes]]:
        """A segment of ``direction``; the control messages it completed (either way, once the keys are known)."""
        if packet.flags & _SYN:
            self.halves[direction] = HalfStream(base=(packet.seq + 1) & 0xFFFF_FFFF)
            return []
        half = self.halves.get(direction)
        if half is None:
            half = self.halves[direction] = HalfStream(base=packet.seq)
        self.read[direction] += half.add(packet.seq, packet.payload)
        directions = [direction]
        if self.views is None and not self.failed:
            self._derive()
            directions = [TO_AGENT, TO_SUPERVISOR]  # frames may have waited for the keys
        if self.views is None or self.failed:
            return []
        return [(way, message) for way in directions for message in self._messages(way)]

    def _derive(self) -> None:
        first = {d: bytes(self.read[d][: _FIRST[d]]) for d in self.read}
        if any(len(first[d]) < _FIRST[d] for d in first):
            return
        try:
            self.views = tuple(
                session_from_transcript(self.key, first[TO_AGENT], first[TO_SUPERVISOR], role)
                for role in ("supervisor", "agent")
            )
        except TunnelKeyMismatch:
            self.notes["wrong key"] += 1
            self.failed = True
            return
        except TunnelError:
            self.notes["no handshake"] += 1
            self.failed = True
            return
        self.notes["sessions"] += 1
        if self.views[0].insecure_plaintext:
            self.notes["plaintext sessions"] += 1
        # frames to the agent are opened as the agent opens them, and the other way round
        self.readers = {TO_AGENT: self.views[1].control(), TO_SUPERVISOR: self.views[0].control()}

    def _messages(self, direction: str) -> list[bytes]:
        data = self.read[direction]
        if len(data) <= _HANDSHAKE[direction] or direction in self.broken:
            return []
        frames = bytes(data[_HANDSHAKE[direction] :])
        del data[_HANDSHAKE[direction] :]
        try:
            return self.readers[direction].feed(frames)
        except TunnelAuthError:
            self.notes["control streams that fail authentication"] += 1
            self.broken.add(direction)
            return []

    def started(self) -> bool:
        return any(self.read.values())


@attrs.define
class TunnelDecoder:
    """Feed it a capture's packets twice: ``control`` in the first pass, ``open`` in the second.

    ``notes`` counts what happened to the control connections ("sessions" found,
    "wrong key", "no handshake" for a connection whose start the capture lacks);
    ``dropped`` counts datagrams not delivered, by reason, "no session" for one
    whose handshake is not in the capture.
    """

    key: bytes = attrs.field(repr=False)
    port: int
    notes: collections.Counter = attrs.field(factory=collections.Counter)
    control_messages: collections.Counter = attrs.field(factory=collections.Counter)
    _connections: dict[tuple, _Connection] = attrs.field(factory=dict, repr=False)
    _all: list[_Connection] = attrs.field(factory=list, repr=False)
    _unrouted: collections.Counter = attrs.field(factory=collections.Counter, repr=False)
    _routes: dict[bytes, list[DatagramChannel]] | None = attrs.field(default=None, repr=False)

    def control(self, packet: CapturedPacket) -> list[tuple[str, bytes]]:
        """First pass: a packet of the capture; the control messages it completed, with their direction."""
        if packet.proto != TCP or self.port not in (packet.sport, packet.dport):
            return []
        to_agent = packet.dport == self.port
        agent = (packet.dst, packet.dport) if to_agent else (packet.src, packet.sport)
        supervisor = (packet.src, packet.sport) if to_agent else (packet.dst, packet.dport)
        connection = self._connections.get((agent, supervisor))
        fresh_syn = packet.flags & _SYN and not packet.flags & _ACK
        if connection is None or (fresh_syn and connection.started()):  # a new connection on the same ports
            connection = self._connections[(agent, supervisor)] = _Connection(self.notes, self.key)
            self._all.append(connection)
        messages = connection.add(TO_AGENT if to_agent else TO_SUPERVISOR, packet)
        for direction, _ in messages:
            self.control_messages[direction] += 1
        return messages

    def open(self, packet: CapturedPacket) -> bytes | None:
        """Second pass: the inner IP packet of a tunnel datagram, or None (not one, or dropped and counted)."""
        if packet.proto != UDP or self.port not in (packet.sport, packet.dport):
            return None
        session = datagram_session(packet.payload)
        if self._routes is None:
            self.finish()
        if packet.snapped:  # the capture kept part of it (snaplen), or it is an IP fragment
            self._unrouted["cut short in the capture"] += 1
            return None
        channels = self._routes.get(session, []) if session is not None else []
        if not channels:
            self._unrouted["malformed" if session is None else "no session"] += 1
            return None
        for channel in channels[:-1]:  # a session id shared by two sessions: try each key
            before = channel.dropped["auth"]
            inner = channel.open(packet.payload)
            if inner is not None:
                return inner
            if channel.dropped["auth"] > before:
                channel.dropped["auth"] -= 1  # not this session's: the last one decides
        return channels[-1].open(packet.payload)

    def open_all(self, packet: CapturedPacket) -> list[bytes]:
        """Second pass: the inner IP packets of a captured UDP packet (one datagram or a run of them)."""
        if packet.proto != UDP or self.port not in (packet.sport, packet.dport):
            return []
        pieces = split_run(packet.payload) if not packet.snapped else [packet.payload]
        if len(pieces) > 1:
            packets = (attrs.evolve(packet, payload=piece) for piece in pieces)
        else:
            packets = iter((packet,))
        return [inner for one in packets if (inner := self.open(one)) is not None]

    def finish(self) -> None:
        """After the first pass: count the connections whose handshake never completed, route the sessions."""
        if self._routes is not None:
            return
        self._routes = {}
        for connection in self._all:
            if connection.views is None and not connection.failed:
                self.notes["no handshake"] += 1
                connection.failed = True
            for view in connection.views or ():
                channel = view.datagrams()
                self._routes.setdefault(channel.receive_session, []).append(channel)

    def _channels(self) -> list[DatagramChannel]:
        return [channel for channels in (self._routes or {}).values() for channel in channels]

    @property
    def dropped(self) -> collections.Counter:
        total = collections.Counter(self._unrouted)
        for channel in self._channels():
            total.update(channel.dropped)
        return total

    @property
    def delivered(self) -> int:
        return sum(channel.delivered for channel in self._channels())
