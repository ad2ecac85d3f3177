"""Export a cassette as a pcap file, for Wireshark, tshark and friends.

A cassette stores what each side sent, not packets, so the export
synthesizes a plausible TCP exchange (handshake, data segments, ACKs, FIN and
RST) with consistent sequence numbers: every tool that reassembles TCP
streams then shows exactly the bytes the cassette holds. UDP datagrams
become one UDP packet each. Events are streamed from the file, so only
per-connection sequence state is kept in memory.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from .cassette import Cassette
from .core.addressing import Endpoint
from .core.events import (
    Closed,
    ConnectionOpened,
    Data,
    Datagram,
    Direction,
    HalfClosed,
    Outcome,
    Reset,
    UdpFlow,
)
from .errors import CassetteError

__all__ = ["MAX_SEGMENT", "export_pcap"]

#: Largest TCP payload put in one synthesized segment.
MAX_SEGMENT = 32768

_LINKTYPE_RAW = 101  # raw IPv4 or IPv6 packets, no link-layer header
_WINDOW = 65535


def _isn(conn: int, direction: Direction) -> int:
    """A fixed, well-spread initial sequence number, so exports are reproducible."""
    salt = 0x1000 if direction is Direction.C2S else 0x7FFF_0000
    return (conn * 2654435761 + salt) & 0xFFFF_FFFF


@attrs.define
class _Stream:
    client: Endpoint
    server: Endpoint
    next_seq: dict[Direction, int]
    fin: set[Direction] = attrs.field(factory=set)
    dead: bool = False


class _PacketSink:
    """Builds IPv4 or IPv6 TCP and UDP packets and writes them with the cassette's timestamps."""

    def __init__(self, out_path: Path, started: float):
        from scapy.layers.inet import IP, TCP, UDP
        from scapy.layers.inet6 import IPv6
        from scapy.utils import PcapWriter

        self._ip, self._ip6, self._tcp, self._udp = IP, IPv6, TCP, UDP
        self._started_us = round(started * 1_000_000)
        self._ip_id = 0
        self.count = 0
        self._writer = PcapWriter(str(out_path), linktype=_LINKTYPE_RAW, snaplen=65535, sync=False)
        self._writer.write_header(None)

    def send(self, stream: _Stream, direction: Direction, flags: str, t: float, payload: bytes = b"") -> None:
        src, dst = (
            (stream.client, stream.server) if direction is Direction.C2S else (stream.server, stream.client)
        )
        seq = stream.next_seq[direction]
        ack = stream.next_seq[direction.reverse] if "A" in flags else 0
        packet = self._network(src, dst) / self._tcp(
            sport=src.port, dport=dst.port, flags=flags, seq=seq, ack=ack, window=_WINDOW
        )
        if payload:
            packet = packet / payload
        advance = len(payload) + ("S" in flags) + ("F" in flags)
        stream.next_seq[direction] = (seq + advance) & 0xFFFF_FFFF
        self._write(packet, t)

    def send_udp(self, flow: UdpFlow, datagram: Datagram) -> None:
        c2s = datagram.direction is Direction.C2S
        src, dst = (flow.client, flow.server) if c2s else (flow.server, flow.client)
        packet = self._network(src, dst) / self._udp(sport=src.port, dport=dst.port)
        self._write(packet / datagram.data, datagram.t)

    def _network(self, src: Endpoint, dst: Endpoint):
        """The IPv4 or IPv6 header from ``src`` to ``dst``."""
        if ":" in src.host:
            return self._ip6(src=src.host, dst=dst.host, hlim=64)
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        return self._ip(src=src.host, dst=dst.host, ttl=64, id=self._ip_id)

    def _write(self, packet, t: float) -> None:
        when = self._started_us + round(t * 1_000_000)
        self._writer.write_packet(bytes(packet), sec=when // 1_000_000, usec=when % 1_000_000)
        self.count += 1

    def close(self) -> None:
        self._writer.close()


def _open(sink: _PacketSink, event: ConnectionOpened) -> _Stream:
    c2s, s2c = Direction.C2S, Direction.S2C
    stream = _Stream(event.client, event.server, {c2s: _isn(event.conn, c2s), s2c: _isn(event.conn, s2c)})
    sink.send(stream, c2s, "S", event.t)
    if event.outcome is Outcome.ESTABLISHED:
        sink.send(stream, s2c, "SA", event.t)
        sink.send(stream, c2s, "A", event.t)
    elif event.outcome is Outcome.REFUSED:
        sink.send(stream, s2c, "RA", event.t)
        stream.dead = True
    else:
        # Timed out or unreachable: the SYN went unanswered.
        stream.dead = True
    return stream


def _data(sink: _PacketSink, stream: _Stream, event: Data) -> None:
    data = event.data
    for start in range(0, len(data), MAX_SEGMENT):
        sink.send(stream, event.direction, "PA", event.t, data[start : start + MAX_SEGMENT])
    if data:
        sink.send(stream, event.direction.reverse, "A", event.t)


def _fin(sink: _PacketSink, stream: _Stream, direction: Direction, t: float) -> None:
    if direction in stream.fin:
        return
    stream.fin.add(direction)
    sink.send(stream, direction, "FA", t)
    sink.send(stream, direction.reverse, "A", t)


def export_pcap(
    cassette_path: str | os.PathLike, out_path: str | os.PathLike, *, tolerate_truncation: bool = False
) -> int:
    """Write *cassette_path*'s connections to *out_path* as pcap; returns the packet count.

    With *tolerate_truncation*, a recording cut short (say a ``.partial``
    file) is exported up to its last complete record. Raises
    :class:`CassetteError` (or a subclass) if the cassette cannot be read or
    the pcap file cannot be written; a half-written pcap is removed.
    """
    out = Path(out_path)
    cassette = Cassette(cassette_path, tolerate_truncation=tolerate_truncation)
    try:
        sink = _PacketSink(out, cassette.header.started)
    except OSError as exc:
        raise CassetteError(
            f"cannot write pcap file {out}: {exc.strerror or exc}; check that its directory exists and is writable"
        ) from exc
    streams: dict[int, _Stream] = {}
    flows: dict[int, UdpFlow] = {}
    try:
        for event in cassette.records():
            if isinstance(event, UdpFlow):
                flows[event.flow] = event
                continue
            if isinstance(event, Datagram):
                sink.send_udp(flows[event.flow], event)
                continue
            if not isinstance(event, (ConnectionOpened, Data, HalfClosed, Reset, Closed)):
                continue
            if isinstance(event, ConnectionOpened):
                streams[event.conn] = _open(sink, event)
                continue
            stream = streams.get(event.conn)
            if stream is None:
                continue
            if isinstance(event, Closed):
                del streams[event.conn]
                if not stream.dead:
                    _fin(sink, stream, Direction.C2S, event.t)
                    _fin(sink, stream, Direction.S2C, event.t)
            elif stream.dead:
                continue
            elif isinstance(event, Data):
                _data(sink, stream, event)
            elif isinstance(event, HalfClosed):
                _fin(sink, stream, event.direction, event.t)
            elif isinstance(event, Reset):
                sink.send(stream, event.direction, "RA", event.t)
                stream.dead = True
        sink.close()
    except BaseException as exc:
        try:
            sink.close()
        except OSError:
            pass
        out.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CassetteError(
                f"cannot write pcap file {out}: {exc.strerror or exc}; check free space and permissions"
            ) from exc
        raise
    return sink.count
