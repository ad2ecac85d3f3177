"""One-line human summaries of raw packets, for ``-v`` logs (tcpdump-like)."""

from __future__ import annotations

import socket
import struct

_FLAGS = [(0x02, "S"), (0x01, "F"), (0x04, "R"), (0x08, "P"), (0x10, ".")]


def describe_packet(packet: bytes) -> str:
    if len(packet) < 20:
        return f"runt packet ({len(packet)} bytes)"
    version = packet[0] >> 4
    if version != 4:
        return f"IPv{version} packet ({len(packet)} bytes)"
    ihl = (packet[0] & 0x0F) * 4
    src, dst = socket.inet_ntoa(packet[12:16]), socket.inet_ntoa(packet[16:20])
    proto = packet[9]
    body = packet[ihl:]
    if proto == 6 and len(body) >= 20:
        sport, dport, seq, ack = struct.unpack_from("!HHII", body)
        flags = "".join(ch for bit, ch in _FLAGS if body[13] & bit)
        payload = len(body) - (body[12] >> 4) * 4
        return f"{src}:{sport} > {dst}:{dport} TCP [{flags}] seq {seq} ack {ack} len {payload}"
    if proto == 17 and len(body) >= 8:
        sport, dport, length = struct.unpack_from("!HHH", body)
        return f"{src}:{sport} > {dst}:{dport} UDP len {length - 8}"
    if proto == 1 and len(body) >= 2:
        return f"{src} > {dst} ICMP type {body[0]} code {body[1]}"
    return f"{src} > {dst} proto {proto} len {len(packet)}"
