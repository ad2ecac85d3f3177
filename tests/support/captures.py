"""Packet captures written with scapy for import tests: a TCP conversation as segments, then frames."""

from __future__ import annotations

import attrs

CLIENT = ("192.0.2.5", 40000)
SERVER = ("192.0.2.7", 80)
CLIENT6 = ("2001:db8::5", 40000)
SERVER6 = ("2001:db8::7", 80)

REQUEST = b"GET /index.html HTTP/1.1\r\nHost: example.test\r\nUser-Agent: test\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n" + bytes(range(256)) + b"x" * 44


@attrs.frozen
class Segment:
    t: float
    src: tuple[str, int]
    dst: tuple[str, int]
    flags: str
    seq: int
    ack: int
    payload: bytes = b""


def conversation(
    turns,
    client=CLIENT,
    server=SERVER,
    mss: int = 50,
    handshake: bool = True,
    end: str | None = "fin",
    t0: float = 1_700_000_000.0,
    isn=(0xFFFF_FF00, 7000),
) -> list[Segment]:
    """The segments of a connection saying ``turns`` [(\"c2s\"|\"s2c\", bytes)], each turn cut at ``mss``.

    The client's initial sequence number is near 2**32 by default, so the
    stream wraps around.
    """
    seq = {"c2s": isn[0], "s2c": isn[1]}
    ends = {"c2s": (client, server), "s2c": (server, client)}
    other = {"c2s": "s2c", "s2c": "c2s"}
    out: list[Segment] = []
    t = t0

    def send(direction, flags, payload=b"", advance=None):
        nonlocal t
        t += 0.001
        src, dst = ends[direction]
        ack = seq[other[direction]] if "A" in flags else 0
        out.append(Segment(round(t, 6), src, dst, flags, seq[direction], ack, payload))
        step = len(payload) + ("S" in flags) + ("F" in flags) if advance is None else advance
        seq[direction] = (seq[direction] + step) & 0xFFFF_FFFF

    if handshake:
        send("c2s", "S")
        send("s2c", "SA")
        send("c2s", "A")
    else:
        seq["c2s"] = (seq["c2s"] + 1) & 0xFFFF_FFFF
        seq["s2c"] = (seq["s2c"] + 1) & 0xFFFF_FFFF
    for direction, data in turns:
        for start in range(0, len(data), mss):
            send(direction, "PA", data[start : start + mss])
        send(other[direction], "A")
    if end == "fin":
        send("c2s", "FA")
        send("s2c", "FA")
        send("c2s", "A")
    elif end == "rst":
        send("s2c", "RA")
    return out


def ip_packet(segment: Segment):
    """The scapy IPv4 or IPv6 packet of a segment."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6

    net = IPv6 if ":" in segment.src[0] else IP
    packet = net(src=segment.src[0], dst=segment.dst[0]) / TCP(
        sport=segment.src[1], dport=segment.dst[1], flags=segment.flags, seq=segment.seq, ack=segment.ack
    )
    return packet / segment.payload if segment.payload else packet


def udp_packet(t: float, src, dst, payload: bytes):
    from scapy.layers.inet import IP, UDP

    return t, IP(src=src[0], dst=dst[0]) / UDP(sport=src[1], dport=dst[1]) / payload


def frames(segments, link: str = "ether"):
    """(time, scapy frame) for each segment, on link type ``ether``, ``raw``, ``sll``, ``sll2`` or ``loop``."""
    from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Ether
    from scapy.packet import Raw

    out = []
    for segment in segments:
        packet = ip_packet(segment)
        v6 = ":" in segment.src[0]
        if link == "ether":
            packet = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / packet
        elif link == "sll":
            packet = CookedLinux(proto=0x86DD if v6 else 0x0800) / packet
        elif link == "sll2":
            packet = CookedLinuxV2(proto=0x86DD if v6 else 0x0800) / packet
        elif link == "loop":
            packet = Raw((24 if v6 else 2).to_bytes(4, "big")) / packet  # OpenBSD loopback: family first
        out.append((segment.t, packet))
    return out


LINKTYPES = {"ether": 1, "raw": 101, "sll": 113, "sll2": 276, "loop": 108}


def write_pcap(path, timed_frames, link: str = "ether", ng: bool = False) -> None:
    """Write (time, scapy packet) pairs as pcap (or pcapng) of link type ``link``."""
    from scapy.utils import PcapNgWriter, PcapWriter

    if ng:
        writer = PcapNgWriter(str(path))
        for t, packet in timed_frames:
            packet.time = t
            writer.write(packet)
        writer.close()
        return
    writer = PcapWriter(str(path), linktype=LINKTYPES[link], sync=False)
    writer.write_header(None)
    for t, packet in timed_frames:
        whole = round(t * 1_000_000)
        writer.write_packet(bytes(packet), sec=whole // 1_000_000, usec=whole % 1_000_000)
    writer.close()


def per_direction(events, conn: int = 0) -> dict[str, bytes]:
    """Each direction's bytes of connection ``conn`` in a list of cassette events."""
    from pytest_netplayground.core.events import Data

    out = {"c2s": b"", "s2c": b""}
    for event in events:
        if isinstance(event, Data) and event.conn == conn:
            out[event.direction.value] += event.data
    return out
