"""IPv4/TCP packet surgery on raw bytes: the router's hot path.

Everything here works on ``bytearray`` buffers in place with ``struct`` and a
few integer operations (RFC 1624 incremental checksum updates); no packet
object is ever built, because the router handles every segment of every
connection and Python object churn is what limits its throughput.
"""

from __future__ import annotations

import struct

__all__ = [
    "PROTO_ICMP",
    "PROTO_TCP",
    "PROTO_UDP",
    "TCP_FIN",
    "TCP_SYN",
    "TCP_RST",
    "TCP_PSH",
    "TCP_ACK",
    "checksum",
    "checksum_delta",
    "adjust_checksum",
    "make_tcp_reset_reply",
    "make_udp_packet",
    "make_icmp_unreachable",
    "ICMP_HOST_UNREACHABLE",
    "ICMP_PORT_UNREACHABLE",
]

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10

ICMP_DEST_UNREACH = 3
ICMP_HOST_UNREACHABLE = 1
ICMP_PORT_UNREACHABLE = 3

_H = struct.Struct("!H")
_HH = struct.Struct("!HH")
_I = struct.Struct("!I")


def checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The Internet checksum (RFC 1071) of ``data``, folded and inverted."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total = initial + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def checksum_delta(old: bytes, new: bytes) -> int:
    """One's-complement difference ``~old + new`` over 16-bit words (RFC 1624).

    Computed once per address pair, then added to every affected checksum.
    """
    total = 0
    for i in range(0, len(old), 2):
        (o,) = _H.unpack_from(old, i)
        (n,) = _H.unpack_from(new, i)
        total += (~o & 0xFFFF) + n
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def adjust_checksum(value: int, delta: int) -> int:
    """Apply a precomputed :func:`checksum_delta` to a stored checksum: HC' = ~(~HC + delta)."""
    total = (~value & 0xFFFF) + delta
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ip_header(src: bytes, dst: bytes, proto: int, payload_len: int, ident: int = 0) -> bytearray:
    header = bytearray(20)
    header[0] = 0x45
    _H.pack_into(header, 2, 20 + payload_len)
    _H.pack_into(header, 4, ident)
    _H.pack_into(header, 6, 0x4000)  # DF
    header[8] = 64
    header[9] = proto
    header[12:16] = src
    header[16:20] = dst
    _H.pack_into(header, 10, checksum(header))
    return header


def make_tcp_reset_reply(syn: bytes | bytearray) -> bytes:
    """The RST|ACK a host would send when nothing listens: the answer to ``syn``.

    ``syn`` is a whole IPv4 packet carrying a TCP segment; the reply goes from
    its destination back to its source, acknowledging its sequence space.
    """
    ihl = (syn[0] & 0x0F) * 4
    src, dst = bytes(syn[12:16]), bytes(syn[16:20])
    sport, dport = _HH.unpack_from(syn, ihl)
    (seq,) = _I.unpack_from(syn, ihl + 4)
    flags = syn[ihl + 13]
    data_offset = (syn[ihl + 12] >> 4) * 4
    total_len = _H.unpack_from(syn, 2)[0]
    payload = total_len - ihl - data_offset
    ack = (seq + payload + (1 if flags & TCP_SYN else 0) + (1 if flags & TCP_FIN else 0)) & 0xFFFFFFFF
    tcp = bytearray(20)
    _HH.pack_into(tcp, 0, dport, sport)
    _I.pack_into(tcp, 4, 0)
    _I.pack_into(tcp, 8, ack)
    tcp[12] = 5 << 4
    tcp[13] = TCP_RST | TCP_ACK
    pseudo = dst + src + struct.pack("!BBH", 0, PROTO_TCP, len(tcp))
    _H.pack_into(tcp, 16, checksum(pseudo + tcp))
    return bytes(_ip_header(dst, src, PROTO_TCP, len(tcp)) + tcp)


def make_icmp_unreachable(packet: bytes | bytearray, code: int = ICMP_HOST_UNREACHABLE) -> bytes:
    """ICMP destination-unreachable for ``packet``, sent back to its source.

    It quotes the offending IP header and 8 bytes of payload, as RFC 792 asks,
    so the sender's kernel can find the socket and fail its connect promptly.
    """
    ihl = (packet[0] & 0x0F) * 4
    quoted = bytes(packet[: ihl + 8])
    icmp = bytearray(8) + quoted
    icmp[0] = ICMP_DEST_UNREACH
    icmp[1] = code
    _H.pack_into(icmp, 2, checksum(icmp))
    src, dst = bytes(packet[12:16]), bytes(packet[16:20])
    return bytes(_ip_header(dst, src, PROTO_ICMP, len(icmp)) + icmp)


def make_udp_packet(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes, ident: int = 0) -> bytes:
    """A whole IPv4/UDP packet (checksums filled in): how a recorded datagram is sent on replay."""
    udp = bytearray(8) + payload
    _HH.pack_into(udp, 0, sport, dport)
    _H.pack_into(udp, 4, len(udp))
    pseudo = src + dst + struct.pack("!BBH", 0, PROTO_UDP, len(udp))
    _H.pack_into(udp, 6, checksum(pseudo + udp) or 0xFFFF)
    return bytes(_ip_header(src, dst, PROTO_UDP, len(udp), ident) + udp)

