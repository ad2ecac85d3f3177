"""UDP flows as the router sees them: numbered, oriented, and turned into cassette records.

A flow is (client address, client port, server address, server port), the
client being whoever sent the flow's first datagram. The router hands over
whole, unfragmented IPv4 or IPv6 UDP packets; this module cuts out the key and the
payload and says which flow and direction each datagram belongs to.
"""

from __future__ import annotations

import attrs

from .addressing import FlowKey, decode_key, reverse_key
from .events import Datagram, Direction, Refusal, UdpFlow
from .packets import PROTO_ICMP, PROTO_UDP
from .packets6 import PROTO_ICMP6, upper_layer

__all__ = ["FLOW_LIMIT", "UdpFlows", "is_udp", "refused_key", "udp_key_and_payload"]

_ICMP_DEST_UNREACH = 3
_ICMP_PORT_UNREACHABLE = 3
_ICMP6_DEST_UNREACH = 1
_ICMP6_PORT_UNREACHABLE = 4

#: Distinct flows numbered in one run; datagrams of flows beyond are delivered
#: but not recorded (counted in ``UdpFlows.unrecorded``), so a flood of
#: spoofed ports cannot grow the table without bound.
FLOW_LIMIT = 65536


def udp_key_and_payload(packet) -> tuple[FlowKey, bytes]:
    """The (src, dst, sport, dport) key and the payload of an unfragmented IPv4 or IPv6 UDP packet."""
    if packet[0] >> 4 == 6:
        ihl = upper_layer(packet, len(packet))[1]
        key = bytes(packet[8:40]) + bytes(packet[ihl : ihl + 4])
    else:
        ihl = (packet[0] & 0x0F) << 2
        key = bytes(packet[12:20]) + bytes(packet[ihl : ihl + 4])
    length = (packet[ihl + 4] << 8) | packet[ihl + 5]
    end = min(ihl + max(length, 8), len(packet))
    return key, bytes(packet[ihl + 8 : end])


def is_udp(packet) -> bool:
    """Whether a packet the router handed to the session is a datagram (else an ICMP error about one)."""
    if packet[0] >> 4 == 6:
        return upper_layer(packet, len(packet))[0] == PROTO_UDP
    return packet[9] == PROTO_UDP


def refused_key(packet) -> FlowKey | None:
    """The key of the UDP datagram an ICMP (or ICMPv6) port unreachable ``packet`` quotes, else None.

    The key is the refused datagram's own (its sender first), read from the
    IP header and the 8 bytes of UDP header the ICMP message carries.
    """
    n = len(packet)
    if packet[0] >> 4 == 6:
        return _refused_key6(packet, n)
    ihl = (packet[0] & 0x0F) << 2
    if n < ihl + 28 or packet[9] != PROTO_ICMP:
        return None
    if packet[ihl] != _ICMP_DEST_UNREACH or packet[ihl + 1] != _ICMP_PORT_UNREACHABLE:
        return None
    quoted = ihl + 8
    quoted_ihl = (packet[quoted] & 0x0F) << 2
    if packet[quoted] >> 4 != 4 or quoted_ihl < 20 or packet[quoted + 9] != PROTO_UDP:
        return None
    if n < quoted + quoted_ihl + 4:
        return None
    return bytes(packet[quoted + 12 : quoted + 20]) + bytes(packet[quoted + quoted_ihl : quoted + quoted_ihl + 4])


def _refused_key6(packet, n: int) -> FlowKey | None:
    """:func:`refused_key` for an ICMPv6 port unreachable quoting an IPv6 UDP datagram."""
    proto, offset, _ = upper_layer(packet, n)
    if proto != PROTO_ICMP6 or n < offset + 8 + 40 + 4:
        return None
    if packet[offset] != _ICMP6_DEST_UNREACH or packet[offset + 1] != _ICMP6_PORT_UNREACHABLE:
        return None
    quoted = offset + 8
    if packet[quoted] >> 4 != 6:
        return None
    inner_proto, inner_offset, fragment = upper_layer(packet[quoted:], n - quoted)
    start = quoted + inner_offset
    if inner_proto != PROTO_UDP or fragment == 2 or n < start + 4:
        return None
    return bytes(packet[quoted + 8 : quoted + 40]) + bytes(packet[start : start + 4])


@attrs.define
class UdpFlows:
    """Numbers the UDP flows of a run in order of their first datagram."""

    limit: int = FLOW_LIMIT
    keys: dict[FlowKey, tuple[int, Direction]] = attrs.field(factory=dict)
    flows: list[UdpFlow] = attrs.field(factory=list)
    counts: list[int] = attrs.field(factory=list)
    unrecorded: int = 0

    def see(self, packet, t: float) -> tuple[UdpFlow | None, Datagram | None]:
        """The flow ``packet`` opens (or None) and its datagram (None beyond the limit)."""
        return self.see_parsed(*udp_key_and_payload(packet), t)

    def see_parsed(self, key: FlowKey, payload: bytes, t: float) -> tuple[UdpFlow | None, Datagram | None]:
        """:meth:`see` for a datagram already taken apart by :func:`udp_key_and_payload`."""
        known = self.keys.get(key)
        opened = None
        if known is None:
            reverse = self.keys.get(reverse_key(key))
            if reverse is not None:
                known = (reverse[0], Direction.S2C)
            elif len(self.flows) >= self.limit:
                self.unrecorded += 1
                return None, None
            else:
                client, server = decode_key(key)
                opened = UdpFlow(t, len(self.flows), client, server)
                self.flows.append(opened)
                self.counts.append(0)
                known = (opened.flow, Direction.C2S)
            self.keys[key] = known
        flow, direction = known
        self.counts[flow] += 1
        return opened, Datagram(t, flow, direction, payload)

    def refused(self, key: FlowKey, t: float) -> Refusal | None:
        """The refusal of the datagram with ``key`` (from :func:`refused_key`), if its flow is numbered."""
        known = self.keys.get(key)
        return None if known is None else Refusal(t, known[0], known[1])
