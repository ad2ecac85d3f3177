"""IPv6 between hosts: TCP through the proxy, the rest delivered to its owner; unreachable inside
the prefix, dropped outside it."""

from __future__ import annotations

import ipaddress

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)

from pytest_netplayground.core.addressing import AddressPlan, invert
from pytest_netplayground.core.addressing6 import Subnet6
from pytest_netplayground.core.router import Router, Verdict
from pytest_netplayground.core.router6 import Router6, upper_layer

A, B, UNOWNED = "fd00:1::1", "fd00:1::2", "fd00:1::99"


def make_router() -> Router:
    router = Router(AddressPlan("10.0.0.0/24"), six=Router6(Subnet6.parse("fd00:1::/64")))
    for i in range(2):
        router.add_host(i, f"10.0.0.{i + 1}")
        router.six.add_host(i, f"fd00:1::{i + 1}")
    return router


def route(router: Router, packet) -> tuple[int, bytes]:
    data = bytes(packet)
    buf = bytearray(data) + bytearray(b"\x55" * 100)
    return router.from_host(buf, len(data)), bytes(buf[: len(data)])


@pytest.mark.parametrize(
    "upper", [ICMPv6EchoRequest(data=b"ping"), UDP(sport=5000, dport=53) / b"query"], ids=["echo", "udp"]
)
def test_packets_to_another_host_are_delivered_untouched(upper):
    router = make_router()
    packet = IPv6(src=A, dst=B) / upper
    verdict, out = route(router, packet)
    assert (verdict, router.target, out) == (Verdict.DELIVER, 1, bytes(packet))
    assert not router.dropped


def test_an_unowned_address_of_the_prefix_is_answered_address_unreachable():
    router = make_router()
    packet = IPv6(src=A, dst=UNOWNED) / UDP(sport=5000, dport=53) / b"query"
    assert route(router, packet)[0] == Verdict.REPLY
    reply = IPv6(router.reply)
    assert (reply.src, reply.dst) == (UNOWNED, A)
    icmp = reply[ICMPv6DestUnreach]
    assert (icmp.type, icmp.code) == (1, 3)
    # The checksum scapy computes for the same message equals the one sent.
    sent = icmp.cksum
    del icmp.cksum
    assert IPv6(bytes(reply))[ICMPv6DestUnreach].cksum == sent
    assert bytes(icmp.payload)[: len(bytes(packet))] == bytes(packet)
    assert router.dropped == {"ipv6: no such host": 1}


def test_a_large_packet_is_quoted_only_as_far_as_the_minimum_mtu():
    router = make_router()
    packet = IPv6(src=A, dst=UNOWNED) / UDP(sport=5000, dport=53) / (b"x" * 5000)
    assert route(router, packet)[0] == Verdict.REPLY
    assert len(router.reply) == 1280


@pytest.mark.parametrize(
    "dst, reason",
    [("2001:db8::1", "outside subnet"), ("ff02::1", "outside subnet"), ("::1", "outside subnet")],
)
def test_addresses_outside_the_prefix_are_dropped_and_counted(dst, reason):
    router = make_router()
    verdict, _ = route(router, IPv6(src=A, dst=dst) / UDP(sport=1, dport=2))
    assert verdict == Verdict.DROP
    assert router.dropped == {f"ipv6: {reason}": 1}


def test_an_icmp_error_to_an_unowned_address_is_not_answered():
    router = make_router()
    error = IPv6(src=A, dst=UNOWNED) / ICMPv6DestUnreach() / IPv6(src=UNOWNED, dst=A) / UDP()
    assert route(router, error)[0] == Verdict.DROP
    assert router.dropped == {"ipv6: no such host": 1}


def alias(address: str) -> str:
    return str(ipaddress.IPv6Address(invert(ipaddress.IPv6Address(address).packed)))


def checksum_ok(packet: bytes) -> bool:
    """Whether scapy, recomputing the TCP checksum, gets the one in ``packet``."""
    parsed = IPv6(packet)
    sent = parsed[TCP].chksum
    del parsed[TCP].chksum
    return IPv6(bytes(parsed))[TCP].chksum == sent


def syn(src=A, dst=B, sport=40000, extensions=()):
    packet = IPv6(src=src, dst=dst)
    for header in extensions:
        packet = packet / header
    return packet / TCP(sport=sport, dport=80, flags="S", seq=1000)


def test_a_first_syn_is_held_until_the_proxy_reaches_the_server():
    router = make_router()
    verdict, _ = route(router, syn())
    assert verdict == Verdict.NEW_CONNECTION
    assert router.key == ipaddress.IPv6Address(A).packed + ipaddress.IPv6Address(B).packed + bytes.fromhex("9c400050")
    assert router.key in router.pending
    # A retransmission while the server leg connects is held too, not a second connection.
    assert route(router, syn())[0] == Verdict.HELD


def test_the_released_syn_goes_to_the_proxy_addressed_to_the_servers_alias():
    router = make_router()
    route(router, syn())
    released = router.release(router.key)
    assert (IPv6(released).src, IPv6(released).dst) == (A, alias(B))
    assert checksum_ok(released)
    # Later segments of the connection follow the same way.
    verdict, out = route(router, IPv6(src=A, dst=B) / TCP(sport=40000, dport=80, flags="A") / b"GET /")
    assert verdict == Verdict.TO_PROXY
    assert IPv6(out).dst == alias(B) and checksum_ok(out)


def test_a_syn_behind_extension_headers_is_gated_and_rewritten_where_its_tcp_header_is():
    router = make_router()
    assert route(router, syn(extensions=[IPv6ExtHdrHopByHop()]))[0] == Verdict.NEW_CONNECTION
    released = router.release(router.key)
    assert IPv6(released).dst == alias(B) and checksum_ok(released)


def test_the_proxys_segments_reach_the_client_from_the_servers_real_address():
    router = make_router()
    data = bytes(IPv6(src=alias(B), dst=A) / TCP(sport=80, dport=40000, flags="SA"))
    buf = bytearray(data)
    assert router.from_proxy(buf, len(buf)) == Verdict.DELIVER
    assert router.target == 0
    assert IPv6(bytes(buf)).src == B and checksum_ok(bytes(buf))


@pytest.mark.parametrize(
    "src, reason", [(B, "source not an alias"), (alias("fd00:1::99"), "source not an alias")]
)
def test_the_proxy_cannot_send_from_anything_but_an_alias(src, reason):
    router = make_router()
    data = bytearray(bytes(IPv6(src=src, dst=A) / TCP(sport=80, dport=40000, flags="SA")))
    assert router.from_proxy(data, len(data)) == Verdict.DROP
    assert router.dropped == {f"proxy: {reason}": 1}


def test_a_refused_connection_is_answered_with_a_reset_the_client_accepts():
    router = make_router()
    route(router, syn())
    host, answer = router.refuse(router.key)
    reply = IPv6(answer)
    assert host == 0 and (reply.src, reply.dst) == (B, A)
    assert (reply[TCP].sport, reply[TCP].dport, str(reply[TCP].flags)) == (80, 40000, "RA")
    assert reply[TCP].ack == 1001 and checksum_ok(answer)
    assert not router.pending


def test_an_unreachable_server_is_answered_with_icmp6_address_unreachable():
    router = make_router()
    route(router, syn())
    host, answer = router.unreachable(router.key)
    icmp = IPv6(answer)[ICMPv6DestUnreach]
    assert host == 0 and (icmp.type, icmp.code) == (1, 3)
    assert IPv6(answer).src == B


@pytest.mark.parametrize(
    "packet, reason",
    [
        (syn(src="fd00:1::99"), "spoofed source"),
        (syn(src=B), "from a host to itself"),
        (syn(extensions=[IPv6ExtHdrFragment(offset=0, m=1)]), "tcp fragment"),
        (IPv6(src=A, dst=B) / TCP(dataofs=4, flags="S"), "bad tcp header"),
    ],
    ids=["spoofed", "to-itself", "fragment", "short-header"],
)
def test_tcp_the_proxy_must_not_see_is_dropped_and_counted(packet, reason):
    router = make_router()
    assert route(router, packet)[0] == Verdict.DROP
    assert router.dropped == {f"ipv6: {reason}": 1}


def test_upper_layer_walks_extension_headers():
    packet = bytes(IPv6(src=A, dst=B) / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(offset=3) / UDP())
    assert upper_layer(packet, len(packet)) == (17, 56, 2)
    assert upper_layer(packet, 44)[0] == -1


@pytest.mark.parametrize("cut", [0, 10, 39])
def test_short_or_mislabelled_packets_are_dropped(cut):
    router = make_router()
    data = bytes(IPv6(src=A, dst=B) / UDP() / b"abc")
    buf = bytearray(data)
    assert router.from_host(buf, len(data) - 1 if cut == 0 else cut) == Verdict.DROP
    assert sum(router.dropped.values()) == 1


def test_without_a_prefix_the_router_drops_ipv6_as_before():
    router = Router(AddressPlan("10.0.0.0/24"))
    data = bytearray(bytes(IPv6(src=A, dst=B) / UDP()))
    assert router.from_host(data, len(data)) == Verdict.DROP
    assert router.dropped == {"ipv6": 1}
