"""One-line human summaries of raw packets, for ``-v`` logs (tcpdump-like)."""

from __future__ import annotations

import socket
import struct

from .packets import PROTO_ICMP, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN

_FLAGS = [(TCP_SYN, "S"), (TCP_FIN, "F"), (TCP_RST, "R"), (TCP_PSH, "P"), (TCP_ACK, ".")]


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
    if proto == PROTO_TCP and len(body) >= 20:
        sport, dport, seq, ack = struct.unpack_from("!HHII", body)
        flags = "".join(ch for bit, ch in _FLAGS if body[13] & bit)
        payload = len(body) - (body[12] >> 4) * 4
        return f"{src}:{sport} > {dst}:{dport} TCP [{flags}] seq {seq} ack {ack} len {payload}"
    if proto == PROTO_UDP and len(body) >= 8:
        sport, dport, length = struct.unpack_from("!HHH", body)
        return f"{src}:{sport} > {dst}:{dport} UDP len {length - 8}"
    if proto == PROTO_ICMP and len(body) >= 2:
        return f"{src} > {dst} ICMP type {body[0]} code {body[1]}"
    return f"{src} > {dst} proto {proto} len {len(packet)}"
