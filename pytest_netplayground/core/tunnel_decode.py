"""Opening a captured tunnel with its key: the inner IP packets of the datagrams.

A capture of the tunnel holds the control connection (TCP) and the datagrams
(UDP), both on the agent's port. The session keys come from the handshake at
the start of each control connection: its first message each way (HELLO to the
agent, AGENT_HELLO back) carry the nonces and the agent's proof, so with the
key both sides' datagram keys can be derived and the proof says whether the
key is the right one. Datagrams are then routed by the session id in their
header and opened as the receiving side would, replay window included (a
capture taken on several interfaces shows each datagram more than once; the
copies count as replayed).
"""

from __future__ import annotations

import collections

import attrs

from ..errors import TunnelError, TunnelKeyMismatch
from .capture_decode import TCP, UDP, CapturedPacket
from .tcp_reassembly import HalfStream
from .tunnel_channels import DatagramChannel, datagram_session
from .tunnel_crypto import AGENT_HELLO, HELLO, MESSAGE_SIZES, session_from_transcript

__all__ = ["TunnelDecoder"]

_SYN = 0x02
_TO_AGENT, _TO_SUPERVISOR = "to agent", "to supervisor"
_NEEDED = {_TO_AGENT: MESSAGE_SIZES[HELLO], _TO_SUPERVISOR: MESSAGE_SIZES[AGENT_HELLO]}


@attrs.define
class _Connection:
    """The first bytes each way of one control connection, reassembled."""

    halves: dict[str, HalfStream] = attrs.field(factory=dict)
    first: dict[str, bytearray] = attrs.field(factory=lambda: {_TO_AGENT: bytearray(), _TO_SUPERVISOR: bytearray()})
    from_syn: bool = False

    def add(self, direction: str, packet: CapturedPacket) -> None:
        if packet.flags & _SYN:
            self.halves[direction] = HalfStream(base=(packet.seq + 1) & 0xFFFF_FFFF)
            self.from_syn = True
            return
        half = self.halves.get(direction)
        if half is None:
            half = self.halves[direction] = HalfStream(base=packet.seq)
        got = self.first[direction]
        if len(got) < _NEEDED[direction]:
            got += half.add(packet.seq, packet.payload)

    def handshake(self) -> tuple[bytes, bytes] | None:
        hello, agent_hello = (bytes(self.first[d][: _NEEDED[d]]) for d in (_TO_AGENT, _TO_SUPERVISOR))
        if len(hello) < _NEEDED[_TO_AGENT] or len(agent_hello) < _NEEDED[_TO_SUPERVISOR]:
            return None
        return hello, agent_hello


@attrs.define
class TunnelDecoder:
    """Feed it a capture's packets twice: ``control`` for the first pass, ``open`` for the second.

    ``notes`` counts what happened to the control connections ("sessions" found,
    "wrong key", "no handshake" for a connection whose start the capture lacks);
    ``dropped`` counts datagrams not delivered, by reason, "no session" for one
    whose handshake is not in the capture.
    """

    key: bytes = attrs.field(repr=False)
    port: int
    notes: collections.Counter = attrs.field(factory=collections.Counter)
    _connections: dict[tuple, _Connection] = attrs.field(factory=dict, repr=False)
    _all_connections: list[_Connection] = attrs.field(factory=list, repr=False)
    _channels: dict[bytes, list[DatagramChannel]] = attrs.field(factory=dict, repr=False)
    _unrouted: collections.Counter = attrs.field(factory=collections.Counter, repr=False)
    _ready: bool = False

    def control(self, packet: CapturedPacket) -> None:
        """First pass: a packet of the capture (only TCP to or from the port is looked at)."""
        if packet.proto != TCP or self.port not in (packet.sport, packet.dport):
            return
        to_agent = packet.dport == self.port
        agent = (packet.dst, packet.dport) if to_agent else (packet.src, packet.sport)
        supervisor = (packet.src, packet.sport) if to_agent else (packet.dst, packet.dport)
        key = (agent, supervisor)
        connection = self._connections.get(key)
        if connection is None or (packet.flags & _SYN and not packet.flags & 0x10 and connection.first[_TO_AGENT]):
            connection = self._connections[key] = _Connection()  # a new connection on the same ports
            self._all_connections.append(connection)
        connection.add(_TO_AGENT if to_agent else _TO_SUPERVISOR, packet)

    def _derive(self) -> None:
        """The keys of every handshake seen in the first pass."""
        self._ready = True
        for connection in self._all_connections:
            transcript = connection.handshake()
            if transcript is None:
                self.notes["no handshake"] += 1
                continue
            try:
                views = [session_from_transcript(self.key, *transcript, role) for role in ("supervisor", "agent")]
            except TunnelKeyMismatch:
                self.notes["wrong key"] += 1
                continue
            except TunnelError:
                self.notes["no handshake"] += 1
                continue
            self.notes["sessions"] += 1
            if views[0].insecure_plaintext:
                self.notes["plaintext sessions"] += 1
            for view in views:
                channel = view.datagrams()
                self._channels.setdefault(channel.receive_session, []).append(channel)

    def open(self, packet: CapturedPacket) -> bytes | None:
        """Second pass: the inner IP packet of a tunnel datagram, or None (not one, or dropped and counted)."""
        if not self._ready:
            self._derive()
        if packet.proto != UDP or self.port not in (packet.sport, packet.dport):
            return None
        session = datagram_session(packet.payload)
        channels = self._channels.get(session, []) if session is not None else []
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

    @property
    def dropped(self) -> collections.Counter:
        total = collections.Counter(self._unrouted)
        for channels in self._channels.values():
            for channel in channels:
                total.update(channel.dropped)
        return total

    @property
    def delivered(self) -> int:
        return sum(channel.delivered for channels in self._channels.values() for channel in channels)
