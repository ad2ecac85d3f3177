"""The router's decisions: where each packet goes, and how it is rewritten.

Packets from a host: TCP gets ``dst := alias(dst)`` and goes to the proxy,
where a pair of sockets terminates the connection; anything else is delivered
to the host owning ``dst``, whole UDP datagrams (and ICMP unreachables about
them) by way of the session when it records or replays them (``udp_tap``).
Packets from the proxy get ``src := unalias(src)`` and are delivered by ``dst``.
IPv6 is routed the same way (see :mod:`.router6`). The only per-connection
state is the SYN gate:
a client's first SYN is held until the proxy has connected the server leg, so
a refused connection is refused (RST) rather than accepted and then closed.

The shell calls :meth:`Router.from_host` / :meth:`Router.from_proxy` with a
buffer it owns; they edit it in place and return a small verdict.
"""

from __future__ import annotations

import socket
import struct
from collections import Counter

import attrs

from .addressing import AddressPlan, FlowKey, decode_key, key_client, key_server
from .packets import (
    ICMP_HOST_UNREACHABLE,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    TCP_ACK,
    TCP_SYN,
    adjust_checksum,
    checksum_delta,
    make_icmp_unreachable,
    make_tcp_reset_reply,
)
from .packets6 import ICMP6_ADDRESS_UNREACHABLE, make_icmp6_unreachable, make_tcp6_reset_reply
from .router6 import Router6

__all__ = ["Router", "Verdict", "decode_key"]

_H = struct.Struct("!H")


class Verdict:
    """What to do with a packet (small ints: compared on the hot path)."""

    DROP = 0  # counted in Router.dropped under a reason
    DELIVER = 1  # write to the tun of host ``Router.target``
    TO_PROXY = 2  # write to the proxy tun
    NEW_CONNECTION = 3  # SYN held; open a server leg for ``Router.key``
    HELD = 4  # retransmitted SYN of a connection still being set up
    REPLY = 5  # write ``Router.reply`` back to the sending host's tun
    UDP = 6  # a whole UDP datagram, or an ICMP unreachable about one, for ``Router.target``: the session decides


@attrs.define
class Router:
    """Routing tables and SYN gate of one sandbox; see the module docstring."""

    plan: AddressPlan
    hosts: dict[bytes, int] = attrs.field(factory=dict)
    _to_alias: dict[bytes, tuple[bytes, int]] = attrs.field(factory=dict)
    _from_alias: dict[bytes, tuple[bytes, int]] = attrs.field(factory=dict)
    pending: dict[FlowKey, bytes] = attrs.field(factory=dict)
    open: set[FlowKey] = attrs.field(factory=set)
    dropped: Counter = attrs.field(factory=Counter)
    # Whether whole UDP datagrams go by way of the session (Verdict.UDP).
    udp_tap: bool = False
    # Out-values of the last call, set instead of returning tuples (hot path).
    target: int = 0
    key: FlowKey = b""
    reply: bytes = b""
    _net: int = 0
    _mask: int = 0
    _edges: set = attrs.field(factory=set)
    # IPv6 between hosts (see core.router6), when the sandbox has a prefix for it.
    six: Router6 | None = None

    def __attrs_post_init__(self) -> None:
        net = self.plan.subnet.network
        self._net = int(net.network_address)
        self._mask = int(net.netmask)
        # Network and broadcast addresses: never answered (RFC 1122 3.2.2).
        self._edges = {net.network_address.packed, net.broadcast_address.packed}

    def add_host(self, index: int, address: str) -> None:
        """Make ``address`` reachable as host ``index``; precompute its alias deltas."""
        packed = socket.inet_aton(address)
        alias = socket.inet_aton(self.plan.alias(address))
        self.hosts[packed] = index
        self._to_alias[packed] = (alias, checksum_delta(packed, alias))
        self._from_alias[alias] = (packed, checksum_delta(alias, packed))

    def _in_subnet(self, packed: bytes) -> bool:
        return (int.from_bytes(packed, "big") & self._mask) == self._net

    def from_host(self, buf: bytearray, n: int) -> int:
        """Route a packet of ``n`` bytes that a host wrote to its tun."""
        if n < 20:
            self.dropped["too short"] += 1
            return Verdict.DROP
        vihl = buf[0]
        if vihl >> 4 != 4:
            if vihl >> 4 == 6 and self.six is not None:
                return self.six.from_host(self, buf, n)
            self.dropped["ipv6" if vihl >> 4 == 6 else "not ipv4"] += 1
            return Verdict.DROP
        ihl = (vihl & 0x0F) << 2
        total = (buf[2] << 8) | buf[3]
        if ihl < 20 or total != n or ihl > n:
            self.dropped["bad ip length"] += 1
            return Verdict.DROP
        dst = bytes(buf[16:20])
        target = self.hosts.get(dst)
        proto = buf[9]
        if target is None:
            answerable = not (proto == PROTO_ICMP and n > ihl and buf[ihl] not in (0, 8)) and not (
                buf[6] & 0x1F or buf[7]  # only the first fragment is answered
            )
            if self._in_subnet(dst) and answerable and dst not in self._edges:
                # An address of the subnet no host owns: answer as a router
                # would after ARP failed, so connect() fails promptly.
                self.reply = make_icmp_unreachable(memoryview(buf)[:n], ICMP_HOST_UNREACHABLE)
                self.dropped["no such host"] += 1
                return Verdict.REPLY
            # Also reached by an ICMP error to an unowned subnet address, which is
            # never answered with another one (RFC 1122 3.2.2) but has no host either.
            self.dropped["no such host" if self._in_subnet(dst) else "outside subnet"] += 1
            return Verdict.DROP
        if proto != PROTO_TCP:
            self.target = target
            if self.udp_tap and not (buf[6] & 0x3F or buf[7]):
                if proto == PROTO_UDP and n >= ihl + 8:
                    return Verdict.UDP
                if proto == PROTO_ICMP and n >= ihl + 28 and buf[ihl] == 3 and buf[ihl + 17] == PROTO_UDP:
                    return Verdict.UDP  # an error about a datagram: its flow may be recorded or replayed
            return Verdict.DELIVER
        if buf[6] & 0x3F or buf[7]:
            # TCP fragments carry no ports to gate on; TCP sets DF, so this is hostile.
            self.dropped["tcp fragment"] += 1
            return Verdict.DROP
        if n < ihl + 20 or n < ihl + ((buf[ihl + 12] >> 4) << 2) or (buf[ihl + 12] >> 4) < 5:
            self.dropped["bad tcp header"] += 1
            return Verdict.DROP
        if buf[ihl + 13] & (TCP_SYN | TCP_ACK) == TCP_SYN:
            key = bytes(buf[12:20]) + bytes(buf[ihl : ihl + 4])
            if key not in self.open:
                return self.gate_syn(key, bytes(buf[12:16]), dst, bytes(buf[:n]), "")
        alias, delta = self._to_alias[dst]
        buf[16:20] = alias
        _H.pack_into(buf, 10, adjust_checksum((buf[10] << 8) | buf[11], delta))
        c = ihl + 16
        _H.pack_into(buf, c, adjust_checksum((buf[c] << 8) | buf[c + 1], delta))
        return Verdict.TO_PROXY

    def from_proxy(self, buf: bytearray, n: int) -> int:
        """Route a packet the proxy namespace wrote to its tun."""
        if n >= 40 and buf[0] >> 4 == 6 and self.six is not None:
            return self.six.from_proxy(self, buf, n)
        if n < 20 or buf[0] >> 4 != 4:
            self.dropped["proxy: not ipv4"] += 1
            return Verdict.DROP
        ihl = (buf[0] & 0x0F) << 2
        target = self.hosts.get(bytes(buf[16:20]))
        if target is None:
            self.dropped["proxy: no such host"] += 1
            return Verdict.DROP
        if buf[9] != PROTO_TCP:
            self.dropped["proxy: not tcp"] += 1
            return Verdict.DROP
        if ihl < 20 or n < ihl + 20 or ((buf[2] << 8) | buf[3]) != n:
            self.dropped["proxy: bad length"] += 1
            return Verdict.DROP
        entry = self._from_alias.get(bytes(buf[12:16]))
        if entry is None:
            self.dropped["proxy: source not an alias"] += 1
            return Verdict.DROP
        addr, delta = entry
        buf[12:16] = addr
        _H.pack_into(buf, 10, adjust_checksum((buf[10] << 8) | buf[11], delta))
        c = ihl + 16
        _H.pack_into(buf, c, adjust_checksum((buf[c] << 8) | buf[c + 1], delta))
        self.target = target
        return Verdict.DELIVER

    # --- the SYN gate, driven by the proxy's server legs -------------------

    def gate_syn(self, key: FlowKey, src: bytes, dst: bytes, syn: bytes, family: str) -> int:
        """A first SYN (of a connection not open yet, IPv4 or IPv6): held for a new
        connection, or its retransmission held; drops are counted under ``family``."""
        if key in self.pending:
            self.pending[key] = syn
            return Verdict.HELD
        if self.host_of(src) is None:
            self.dropped[family + "spoofed source"] += 1
            return Verdict.DROP
        if src == dst:
            # Only a raw socket sends this out of its own host; the host's
            # kernel would drop it as martian on the way back, leaving a
            # server leg to wait minutes for an answer.
            self.dropped[family + "from a host to itself"] += 1
            return Verdict.DROP
        self.pending[key] = syn
        self.key = key
        return Verdict.NEW_CONNECTION

    def release(self, key: FlowKey) -> bytes | None:
        """The server leg connected: the held SYN, rewritten for the proxy tun."""
        syn = self.pending.pop(key, None)
        if syn is None:
            return None
        self.open.add(key)
        buf = bytearray(syn)
        verdict = self.from_host(buf, len(buf))
        return bytes(buf) if verdict == Verdict.TO_PROXY else None

    def refuse(self, key: FlowKey) -> tuple[int, bytes] | None:
        """The server leg was refused: (client host, RST for the client)."""
        syn = self.pending.pop(key, None)
        if syn is None:
            return None
        if len(key) > 12:
            return self.host_of(key_client(key)), make_tcp6_reset_reply(syn)
        return self.hosts[key[0:4]], make_tcp_reset_reply(syn)

    def unreachable(self, key: FlowKey) -> tuple[int, bytes] | None:
        """The server leg got no route: (client host, ICMP host or ICMPv6 address unreachable)."""
        syn = self.pending.pop(key, None)
        if syn is None:
            return None
        if len(key) > 12:
            answer = make_icmp6_unreachable(syn, ICMP6_ADDRESS_UNREACHABLE, key_server(key))
            return self.host_of(key_client(key)), answer
        return self.hosts[key[0:4]], make_icmp_unreachable(syn, ICMP_HOST_UNREACHABLE)

    def host_of(self, packed: bytes) -> int | None:
        """The index of the host owning a packed IPv4 or IPv6 address, or None."""
        if len(packed) == 16:
            return self.six.hosts.get(packed) if self.six is not None else None
        return self.hosts.get(packed)

    def forget(self, key: FlowKey) -> None:
        """The connection is over (or never came to be): new SYNs start afresh."""
        self.pending.pop(key, None)
        self.open.discard(key)
