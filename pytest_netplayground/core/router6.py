"""The router's decisions for IPv6 packets: TCP to the proxy, the rest delivered.

TCP goes through the proxy exactly as over IPv4 (see :mod:`.router`): the
client's first SYN is held by the SYN gate, then segments get ``dst :=
alias(dst)`` on their way to the proxy and ``src := unalias(src)`` on their way
back; only TCP's checksum changes, IPv6 having none of its own. Anything else
to another host's address is delivered as is (ICMPv6 echo, UDP; whole UDP
datagrams by way of the session when it records them). A packet to an address
of the sandbox's prefix that no host owns is answered with ICMPv6 address
unreachable, so the sender fails at once; anything else (multicast, addresses
outside the sandbox) is dropped and counted.

A TUN has no link layer, so no neighbour discovery ever reaches the router.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import TYPE_CHECKING

import attrs

from .addressing import invert
from .addressing6 import Subnet6
from .packets import TCP_ACK, TCP_SYN, adjust_checksum, checksum_delta
from .packets6 import (
    ICMP6_ADDRESS_UNREACHABLE,
    PROTO_ICMP6,
    PROTO_TCP,
    PROTO_UDP,
    make_icmp6_unreachable,
    upper_layer,
)

if TYPE_CHECKING:
    from .router import Router

__all__ = ["Router6", "make_icmp6_unreachable", "upper_layer"]

_H = struct.Struct("!H")


@attrs.define
class Router6:
    """The hosts' IPv6 addresses, their aliases and the prefix they come from; see the module docstring.

    The SYN gate's state (``pending``, ``open``) and the out-values are the
    IPv4 router's: a flow key tells the families apart by its length.
    """

    subnet6: Subnet6
    hosts: dict[bytes, int] = attrs.field(factory=dict)
    _to_alias: dict[bytes, tuple[bytes, int]] = attrs.field(factory=dict)
    _from_alias: dict[bytes, tuple[bytes, int]] = attrs.field(factory=dict)
    _net: int = 0
    _mask: int = 0

    def __attrs_post_init__(self) -> None:
        net = self.subnet6.network
        self._net = int(net.network_address)
        self._mask = int(net.netmask)

    def add_host(self, index: int, address: str) -> None:
        """Make ``address`` reachable as host ``index``; precompute its alias's checksum deltas."""
        packed = ipaddress.IPv6Address(address).packed
        alias = invert(packed)
        self.hosts[packed] = index
        self._to_alias[packed] = (alias, checksum_delta(packed, alias))
        self._from_alias[alias] = (packed, checksum_delta(alias, packed))

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
        proto, offset, fragment = upper_layer(buf, n)
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
        if proto == PROTO_TCP:
            if fragment:
                # TCP segments fit the path; fragments carry no ports to gate on.
                dropped["ipv6: tcp fragment"] += 1
                return Verdict.DROP
            return self._tcp(router, buf, n, offset, dst)
        router.target = target
        if router.udp_tap and not fragment:
            if proto == PROTO_UDP and n >= offset + 8:
                return Verdict.UDP
            if proto == PROTO_ICMP6 and n >= offset + 52 and buf[offset] == 1 and buf[offset + 14] == PROTO_UDP:
                return Verdict.UDP  # an error about a datagram (quoted with no extension headers)
        return Verdict.DELIVER

    def _tcp(self, router: "Router", buf: bytearray, n: int, offset: int, dst: bytes) -> int:
        """A TCP segment to a host: the SYN gate, then ``dst := alias(dst)`` towards the proxy."""
        from .router import Verdict

        data_offset = buf[offset + 12] >> 4 if n >= offset + 20 else 0
        if data_offset < 5 or n < offset + (data_offset << 2):
            router.dropped["ipv6: bad tcp header"] += 1
            return Verdict.DROP
        if buf[offset + 13] & (TCP_SYN | TCP_ACK) == TCP_SYN:
            key = bytes(buf[8:40]) + bytes(buf[offset : offset + 4])
            if key not in router.open:
                return router.gate_syn(key, bytes(buf[8:24]), dst, bytes(buf[:n]), "ipv6: ")
        alias, delta = self._to_alias[dst]
        buf[24:40] = alias
        c = offset + 16
        _H.pack_into(buf, c, adjust_checksum((buf[c] << 8) | buf[c + 1], delta))
        return Verdict.TO_PROXY

    def from_proxy(self, router: "Router", buf: bytearray, n: int) -> int:
        """Route an IPv6 segment the proxy wrote: ``src := unalias(src)``, delivered by ``dst``."""
        from .router import Verdict

        dropped = router.dropped
        if n < 60 or 40 + ((buf[4] << 8) | buf[5]) != n:
            dropped["proxy: bad length"] += 1
            return Verdict.DROP
        if buf[6] != PROTO_TCP:
            dropped["proxy: not tcp"] += 1
            return Verdict.DROP
        target = self.hosts.get(bytes(buf[24:40]))
        if target is None:
            dropped["proxy: no such host"] += 1
            return Verdict.DROP
        entry = self._from_alias.get(bytes(buf[8:24]))
        if entry is None:
            dropped["proxy: source not an alias"] += 1
            return Verdict.DROP
        addr, delta = entry
        buf[8:24] = addr
        _H.pack_into(buf, 56, adjust_checksum((buf[56] << 8) | buf[57], delta))
        router.target = target
        return Verdict.DELIVER
