"""UDP flows as the router sees them: numbered, oriented, and turned into cassette records.

A flow is (client address, client port, server address, server port), the
client being whoever sent the flow's first datagram. The router hands over
whole, unfragmented IPv4 or IPv6 UDP packets; this module cuts out the key and the
payload and says which flow and direction each datagram belongs to.
"""

from __future__ import annotations

import attrs

from .addressing import FlowKey, decode_key, reverse_key
from .events import Datagram, Direction, UdpFlow
from .packets6 import upper_layer

__all__ = ["FLOW_LIMIT", "UdpFlows", "udp_key_and_payload"]

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
