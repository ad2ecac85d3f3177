"""Every connection and UDP flow of a capture, as cassette events in time order.

Packets go in in capture order; events come out with times relative to the
first packet, never going back (captures from several queues can be
slightly out of time order). Connections are numbered in the order they are
opened, as a recording numbers them; UDP flows in the order of their first
datagram, the first sender being the client.
"""

from __future__ import annotations

import attrs

from .addressing import Endpoint
from .capture_decode import TCP, UDP, CapturedPacket
from .capture_stream import ACK, RST, SYN, StreamSummary, TcpStream, server_is_first
from .events import Datagram, Direction, UdpFlow

__all__ = ["CaptureFlows", "UdpSummary"]

_Key = tuple[str, int, str, int]


@attrs.define
class UdpSummary:
    client: Endpoint
    server: Endpoint
    flow: int
    datagrams: int = 0
    sent: dict[Direction, int] = attrs.field(factory=lambda: dict.fromkeys(Direction, 0))


@attrs.define
class CaptureFlows:
    """The sans-io importer: :meth:`feed` each packet, then :meth:`finish`; both return events."""

    gap_mode: str = "cut"
    origin: float | None = None  # capture time of the first packet
    last: float = 0.0  # latest event time so far, relative to ``origin``
    streams: dict[_Key, tuple[TcpStream, Direction]] = attrs.field(factory=dict)
    summaries: list[StreamSummary] = attrs.field(factory=list)
    udp: dict[_Key, UdpSummary] = attrs.field(factory=dict)
    udp_summaries: list[UdpSummary] = attrs.field(factory=list)
    next_conn: int = 0
    packets: int = 0
    snapped: int = 0  # packets the capture kept only the start of

    def _allot(self) -> int:
        conn, self.next_conn = self.next_conn, self.next_conn + 1
        return conn

    def _time(self, t: float) -> float:
        if self.origin is None:
            self.origin = t
        self.last = max(self.last, round(t - self.origin, 6))
        return self.last

    def feed(self, packet: CapturedPacket) -> list:
        """Take the capture's next TCP or UDP packet; returns the events it completes."""
        t = self._time(packet.t)
        self.packets += 1
        self.snapped += packet.snapped
        if packet.proto == UDP:
            return self._datagram(packet, t)
        if packet.proto != TCP:
            return []
        key = (packet.src, packet.sport, packet.dst, packet.dport)
        stream, direction = self.streams.get(key, (None, Direction.C2S))
        opening = packet.flags & (SYN | ACK) == SYN
        out: list = []
        if stream is not None and opening and (stream.done or self._other_syn(stream, packet)):
            out += stream.finish(t)
            stream = None  # the ports were used again for a new connection
        if stream is None:
            if packet.flags & RST:
                return out  # a reset of a connection the capture did not see
            stream, direction = self._new_stream(packet)
        out += stream.packet(direction, packet.flags, packet.seq, packet.ack, packet.payload, t)
        return out

    @staticmethod
    def _other_syn(stream: TcpStream, packet: CapturedPacket) -> bool:
        """Whether an opening SYN belongs to a new connection rather than repeating ``stream``'s."""
        return stream.syn_seq != packet.seq and stream.conn is not None

    def _new_stream(self, packet: CapturedPacket) -> tuple[TcpStream, Direction]:
        src, dst = Endpoint(packet.src, packet.sport), Endpoint(packet.dst, packet.dport)
        flags = packet.flags
        if flags & SYN:
            client_first = not flags & ACK  # a SYN comes from the client, a SYN-ACK from the server
        else:
            client_first = not server_is_first(packet.sport, packet.dport)
        client, server = (src, dst) if client_first else (dst, src)
        stream = TcpStream(client, server, self._allot, self.gap_mode)
        forward = Direction.C2S if client_first else Direction.S2C
        self.streams[(packet.src, packet.sport, packet.dst, packet.dport)] = (stream, forward)
        self.streams[(packet.dst, packet.dport, packet.src, packet.sport)] = (stream, forward.reverse)
        self.summaries.append(stream.summary)
        return stream, forward

    def _datagram(self, packet: CapturedPacket, t: float) -> list:
        key = (packet.src, packet.sport, packet.dst, packet.dport)
        out: list = []
        flow = self.udp.get(key)
        if flow is None:
            client, server = Endpoint(packet.src, packet.sport), Endpoint(packet.dst, packet.dport)
            flow = UdpSummary(client, server, len(self.udp_summaries))
            self.udp[key] = self.udp[(packet.dst, packet.dport, packet.src, packet.sport)] = flow
            self.udp_summaries.append(flow)
            out.append(UdpFlow(t, flow.flow, client, server))
        direction = Direction.C2S if (packet.src, packet.sport) == (flow.client.host, flow.client.port) else Direction.S2C
        flow.datagrams += 1
        flow.sent[direction] += len(packet.payload)
        out.append(Datagram(t, flow.flow, direction, packet.payload))
        return out

    def finish(self) -> list:
        """The capture ended: connections still open are closed at the last packet's time."""
        out: list = []
        seen: set[int] = set()
        for stream, _ in self.streams.values():
            if id(stream) not in seen:
                seen.add(id(stream))
                out += stream.finish(self.last)
        return out
