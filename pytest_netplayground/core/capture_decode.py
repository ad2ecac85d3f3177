"""Captured frames cut down to what an import needs: addresses, ports, TCP flags and numbers, payload.

Frames come with the capture's link type; the link header is stepped over to
the IPv4 or IPv6 packet, whose TCP or UDP segment is read with ``struct``
(no packet objects: a capture can hold millions of frames). Anything else
(ARP, ICMP, fragments after the first, frames too short) decodes to None.
"""

from __future__ import annotations

import socket
import struct

import attrs

__all__ = ["CapturedPacket", "LINK_TYPES", "decode_frame", "TCP", "UDP"]

TCP, UDP = 6, 17

_ETHERTYPE_IPV4, _ETHERTYPE_IPV6 = 0x0800, 0x86DD
_VLAN_TAGS = (0x8100, 0x88A8, 0x9100)
_IPV6_EXTENSIONS = (0, 43, 60)  # hop-by-hop, routing, destination options
_IPV6_FRAGMENT = 44

#: Link types read, by the number pcap files give them.
LINK_TYPES = {
    0: "BSD loopback",
    1: "Ethernet",
    12: "raw IP",
    14: "raw IP",
    101: "raw IP",
    108: "OpenBSD loopback",
    113: "Linux cooked (SLL)",
    228: "raw IPv4",
    229: "raw IPv6",
    276: "Linux cooked v2 (SLL2)",
}

_BSD_AF_INET6 = (10, 24, 28, 30)  # Linux, BSDs and macOS spell AF_INET6 differently


@attrs.frozen(slots=True)
class CapturedPacket:
    """One TCP or UDP packet of a capture, as far as the import cares."""

    t: float  # capture time, seconds since the epoch
    proto: int  # TCP or UDP
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes
    flags: int = 0
    seq: int = 0
    ack: int = 0
    snapped: bool = False  # the capture kept less of the packet than was sent


def _ip_of_link(linktype: int, frame: bytes) -> bytes | None:
    """The IP packet inside a frame of ``linktype``, or None if it carries something else."""
    if linktype == 1:
        offset, ethertype = 14, None
        if len(frame) < 14:
            return None
        ethertype = int.from_bytes(frame[12:14], "big")
        while ethertype in _VLAN_TAGS and len(frame) >= offset + 4:
            ethertype = int.from_bytes(frame[offset + 2 : offset + 4], "big")
            offset += 4
        return frame[offset:] if ethertype in (_ETHERTYPE_IPV4, _ETHERTYPE_IPV6) else None
    if linktype in (12, 14, 101, 228, 229):
        return frame
    if linktype == 113:
        if len(frame) < 16:
            return None
        ethertype = int.from_bytes(frame[14:16], "big")
        return frame[16:] if ethertype in (_ETHERTYPE_IPV4, _ETHERTYPE_IPV6) else None
    if linktype == 276:
        if len(frame) < 20:
            return None
        ethertype = int.from_bytes(frame[0:2], "big")
        return frame[20:] if ethertype in (_ETHERTYPE_IPV4, _ETHERTYPE_IPV6) else None
    if linktype in (0, 108):
        if len(frame) < 4:
            return None
        family = int.from_bytes(frame[:4], "big" if linktype == 108 else "little")
        if family not in (2, *_BSD_AF_INET6):
            family = int.from_bytes(frame[:4], "little" if linktype == 108 else "big")
        return frame[4:] if family in (2, *_BSD_AF_INET6) else None
    return None


def _ipv4(packet: bytes) -> tuple[int, str, str, bytes, int] | None:
    if len(packet) < 20:
        return None
    ihl = (packet[0] & 0x0F) * 4
    # 0: a segment captured on its way to the NIC before segmentation offload split it.
    total = int.from_bytes(packet[2:4], "big") or len(packet)
    fragment = int.from_bytes(packet[6:8], "big")
    if ihl < 20 or fragment & 0x1FFF or total < ihl:
        return None  # not the first fragment: no transport header to read
    src = socket.inet_ntop(socket.AF_INET, packet[12:16])
    dst = socket.inet_ntop(socket.AF_INET, packet[16:20])
    return packet[9], src, dst, packet[ihl:total], total - min(total, len(packet))


def _ipv6(packet: bytes) -> tuple[int, str, str, bytes, int] | None:
    if len(packet) < 40:
        return None
    length = int.from_bytes(packet[4:6], "big")
    proto, offset = packet[6], 40
    while proto in _IPV6_EXTENSIONS or proto == _IPV6_FRAGMENT:
        if len(packet) < offset + 8:
            return None
        if proto == _IPV6_FRAGMENT:
            if int.from_bytes(packet[offset + 2 : offset + 4], "big") & 0xFFF8:
                return None
            proto, offset = packet[offset], offset + 8
            continue
        proto, offset = packet[offset], offset + (packet[offset + 1] + 1) * 8
    src = socket.inet_ntop(socket.AF_INET6, packet[8:24])
    dst = socket.inet_ntop(socket.AF_INET6, packet[24:40])
    end = 40 + length if length else len(packet)  # 0: offloaded segment or jumbogram
    return proto, src, dst, packet[offset:end], end - min(end, len(packet))


def decode_frame(linktype: int, frame: bytes, t: float) -> CapturedPacket | None:
    """The TCP or UDP packet a frame carries, or None."""
    packet = _ip_of_link(linktype, frame)
    if not packet:
        return None
    version = packet[0] >> 4
    parsed = _ipv4(packet) if version == 4 else _ipv6(packet) if version == 6 else None
    if parsed is None:
        return None
    proto, src, dst, segment, missing = parsed
    if proto == TCP and len(segment) >= 20:
        sport, dport, seq, ack, offset_flags = struct.unpack_from("!HHIIH", segment)
        header = (offset_flags >> 12) * 4
        if header < 20 or header > len(segment):
            return None
        return CapturedPacket(
            t, TCP, src, sport, dst, dport, bytes(segment[header:]), offset_flags & 0x3F, seq, ack, missing > 0
        )
    if proto == UDP and len(segment) >= 8:
        sport, dport, length = struct.unpack_from("!HHH", segment)
        body = bytes(segment[8 : max(length, 8)])
        return CapturedPacket(t, UDP, src, sport, dst, dport, body, snapped=missing > 0 or len(body) < length - 8)
    return None
