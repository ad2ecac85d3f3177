"""IPv6 packet surgery on raw bytes: finding the upper layer, and the answers the router makes.

IPv6 has no header checksum, so a rewrite of an address only adjusts the
upper layer's (TCP's), whose pseudo-header covers both addresses.
"""

from __future__ import annotations

import struct

from .packets import (
    ICMP_PORT_UNREACHABLE,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    checksum,
    make_icmp_unreachable,
    make_udp_packet,
)

__all__ = [
    "make_icmp6_unreachable",
    "make_tcp6_reset_reply",
    "make_udp6_packet",
    "port_unreachable",
    "udp_packet",
    "upper_layer",
]

PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMP6 = 58
#: Extension headers walked to find the upper layer: hop-by-hop, routing, destination options.
_EXTENSIONS = (0, 43, 60)
FRAGMENT = 44
NO_NEXT_HEADER = 59

ICMP6_DEST_UNREACH = 1
ICMP6_ADMIN_PROHIBITED = 1
ICMP6_ADDRESS_UNREACHABLE = 3
ICMP6_PORT_UNREACHABLE = 4
#: ICMPv6 errors must fit the minimum IPv6 MTU (RFC 4443 2.4 (c)).
_MIN_MTU = 1280

_H = struct.Struct("!H")
_HH = struct.Struct("!HH")
_I = struct.Struct("!I")


def upper_layer(packet: bytes | bytearray, n: int) -> tuple[int, int, int]:
    """(protocol, its offset, fragment) after the extension headers.

    ``fragment`` is 0 without a fragment header, 1 for a first fragment and 2
    for a later one (which carries no upper-layer header). The protocol is -1
    when the headers do not fit in the packet.
    """
    proto, offset, fragment = packet[6], 40, 0
    while proto in _EXTENSIONS or proto == FRAGMENT:
        if offset + 8 > n:
            return -1, offset, fragment
        if proto == FRAGMENT:
            later = bool(_H.unpack_from(packet, offset + 2)[0] & 0xFFF8)
            fragment = max(fragment, 2 if later else 1)
            proto, offset = packet[offset], offset + 8
        else:
            proto, offset = packet[offset], offset + (packet[offset + 1] + 1) * 8
    if offset > n:
        return -1, offset, fragment
    return proto, offset, fragment


def _header(src: bytes, dst: bytes, proto: int, payload_len: int) -> bytes:
    return struct.pack("!IHBB", 6 << 28, payload_len, proto, 64) + src + dst


def _pseudo(src: bytes, dst: bytes, length: int, proto: int) -> bytes:
    return src + dst + struct.pack("!IxxxB", length, proto)


def make_icmp6_unreachable(packet: bytes | bytearray, code: int, source: bytes) -> bytes:
    """ICMPv6 destination unreachable for ``packet``, from ``source`` back to its sender.

    It quotes as much of the packet as fits in the minimum MTU, so the
    sender's kernel finds the socket and fails it.
    """
    quoted = bytes(packet[: _MIN_MTU - 48])
    icmp = bytearray(8) + quoted
    icmp[0] = ICMP6_DEST_UNREACH
    icmp[1] = code
    dst = bytes(packet[8:24])
    _H.pack_into(icmp, 2, checksum(_pseudo(source, dst, len(icmp), PROTO_ICMP6) + icmp))
    return _header(source, dst, PROTO_ICMP6, len(icmp)) + bytes(icmp)


def make_tcp6_reset_reply(syn: bytes | bytearray) -> bytes:
    """The RST|ACK a host would send when nothing listens: the answer to an IPv6 ``syn``."""
    n = len(syn)
    proto, offset, _ = upper_layer(syn, n)
    src, dst = bytes(syn[8:24]), bytes(syn[24:40])
    sport, dport = _HH.unpack_from(syn, offset)
    (seq,) = _I.unpack_from(syn, offset + 4)
    flags = syn[offset + 13]
    payload = n - offset - (syn[offset + 12] >> 4) * 4
    ack = (seq + payload + (1 if flags & TCP_SYN else 0) + (1 if flags & TCP_FIN else 0)) & 0xFFFFFFFF
    tcp = bytearray(20)
    _HH.pack_into(tcp, 0, dport, sport)
    _I.pack_into(tcp, 8, ack)
    tcp[12] = 5 << 4
    tcp[13] = TCP_RST | TCP_ACK
    _H.pack_into(tcp, 16, checksum(_pseudo(dst, src, len(tcp), PROTO_TCP) + tcp))
    return _header(dst, src, PROTO_TCP, len(tcp)) + bytes(tcp)


def make_udp6_packet(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    """A whole IPv6 UDP datagram from ``src``:``sport`` to ``dst``:``dport`` (packed addresses)."""
    udp = bytearray(8) + payload
    _HH.pack_into(udp, 0, sport, dport)
    _H.pack_into(udp, 4, len(udp))
    value = checksum(_pseudo(src, dst, len(udp), PROTO_UDP) + udp)
    _H.pack_into(udp, 6, value or 0xFFFF)  # zero means "no checksum", forbidden over IPv6
    return _header(src, dst, PROTO_UDP, len(udp)) + bytes(udp)


def udp_packet(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    """A whole UDP datagram over IPv4 or IPv6, by the length of the packed addresses."""
    if len(src) == 16:
        return make_udp6_packet(src, dst, sport, dport, payload)
    return make_udp_packet(src, dst, sport, dport, payload)


def port_unreachable(packet: bytes) -> bytes:
    """What a host whose port is closed answers a UDP ``packet`` with: ICMP or ICMPv6 port unreachable."""
    if packet[0] >> 4 == 6:
        return make_icmp6_unreachable(packet, ICMP6_PORT_UNREACHABLE, bytes(packet[24:40]))
    return make_icmp_unreachable(packet, ICMP_PORT_UNREACHABLE)
