"""The router's decisions for IPv6 packets from the hosts.

A packet to another host's IPv6 address is delivered to that host as is
(ICMPv6 echo, UDP, anything but TCP); one to an address of the sandbox's
prefix that no host owns is answered with ICMPv6 address unreachable, so the
sender fails at once; anything else (multicast, addresses outside the
sandbox) is dropped and counted. TCP is answered with ICMPv6 administratively
prohibited: the proxy terminates IPv4 TCP only, and a client that resolved a
name to both addresses then falls back to IPv4 at once instead of waiting.

A TUN has no link layer, so no neighbour discovery ever reaches the router.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import attrs

from .addressing6 import Subnet6
from .packets import checksum

if TYPE_CHECKING:
    from .router import Router

__all__ = ["Router6", "make_icmp6_unreachable", "upper_layer"]

PROTO_TCP = 6
PROTO_ICMP6 = 58
#: Extension headers walked to find the upper layer: hop-by-hop, routing, destination options.
_EXTENSIONS = (0, 43, 60)
_FRAGMENT = 44
NO_NEXT_HEADER = 59

ICMP6_DEST_UNREACH = 1
ICMP6_ADMIN_PROHIBITED = 1
ICMP6_ADDRESS_UNREACHABLE = 3
#: ICMPv6 errors must fit the minimum IPv6 MTU (RFC 4443 2.4 (c)).
_MIN_MTU = 1280

_H = struct.Struct("!H")


def upper_layer(packet: bytes | bytearray, n: int) -> tuple[int, int, bool]:
    """(protocol, its offset, whether it is a non-first fragment) after the extension headers.

    The protocol is -1 when the headers do not fit in the packet.
    """
    proto, offset, later_fragment = packet[6], 40, False
    while proto in _EXTENSIONS or proto == _FRAGMENT:
        if offset + 8 > n:
            return -1, offset, later_fragment
        if proto == _FRAGMENT:
            later_fragment = later_fragment or bool(_H.unpack_from(packet, offset + 2)[0] & 0xFFF8)
            proto, offset = packet[offset], offset + 8
        else:
            proto, offset = packet[offset], offset + (packet[offset + 1] + 1) * 8
    if offset > n:
        return -1, offset, later_fragment
    return proto, offset, later_fragment


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
    pseudo = source + dst + struct.pack("!IxxxB", len(icmp), PROTO_ICMP6)
    _H.pack_into(icmp, 2, checksum(pseudo + icmp))
    header = struct.pack("!IHBB", 6 << 28, len(icmp), PROTO_ICMP6, 64) + source + dst
    return header + bytes(icmp)


@attrs.define
class Router6:
    """The hosts' IPv6 addresses and the prefix they come from; see the module docstring."""

    subnet6: Subnet6
    hosts: dict[bytes, int] = attrs.field(factory=dict)
    _net: int = 0
    _mask: int = 0

    def __attrs_post_init__(self) -> None:
        net = self.subnet6.network
        self._net = int(net.network_address)
        self._mask = int(net.netmask)

    def add_host(self, index: int, address: str) -> None:
        import ipaddress

        self.hosts[ipaddress.IPv6Address(address).packed] = index

    def _in_subnet(self, packed: bytes) -> bool:
        return (int.from_bytes(packed, "big") & self._mask) == self._net

    def from_host(self, router: "Router", buf: bytearray, n: int) -> int:
        """Route an IPv6 packet of ``n`` bytes a host wrote; out-values go on ``router``."""
        from .router import Verdict

        dropped = router.dropped
        if n < 40:
            dropped["ipv6: too short"] += 1
            return Verdict.DROP
        if 40 + ((buf[4] << 8) | buf[5]) != n:
            dropped["ipv6: bad length"] += 1
            return Verdict.DROP
        dst = bytes(buf[24:40])
        target = self.hosts.get(dst)
        proto, offset, later_fragment = upper_layer(buf, n)
        if target is None:
            if not self._in_subnet(dst):
                dropped["ipv6: outside subnet"] += 1
                return Verdict.DROP
            # Never answer an ICMPv6 error with another (RFC 4443 2.4 (e)), nor
            # a packet whose headers could not be read.
            is_error = proto == PROTO_ICMP6 and (offset >= n or buf[offset] < 128)
            dropped["ipv6: no such host"] += 1
            if proto < 0 or is_error or dst == self.subnet6.network.network_address.packed:
                return Verdict.DROP
            router.reply = make_icmp6_unreachable(memoryview(buf)[:n], ICMP6_ADDRESS_UNREACHABLE, dst)
            return Verdict.REPLY
        if proto < 0:
            dropped["ipv6: bad extension headers"] += 1
            return Verdict.DROP
        if proto == PROTO_TCP and not later_fragment:
            dropped["ipv6: tcp"] += 1
            router.reply = make_icmp6_unreachable(memoryview(buf)[:n], ICMP6_ADMIN_PROHIBITED, dst)
            return Verdict.REPLY
        router.target = target
        return Verdict.DELIVER
