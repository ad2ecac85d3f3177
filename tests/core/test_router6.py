"""IPv6 between hosts: delivered to the owner, unreachable inside the prefix, dropped outside it."""

from __future__ import annotations

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)

from pytest_netplayground.core.addressing import AddressPlan
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


def test_tcp_to_a_host_is_refused_at_once_administratively():
    router = make_router()
    verdict, _ = route(router, IPv6(src=A, dst=B) / TCP(sport=40000, dport=80, flags="S"))
    assert verdict == Verdict.REPLY
    icmp = IPv6(router.reply)[ICMPv6DestUnreach]
    assert (icmp.type, icmp.code) == (1, 1)
    assert router.dropped == {"ipv6: tcp": 1}


def test_tcp_behind_extension_headers_is_still_seen_as_tcp():
    router = make_router()
    packet = IPv6(src=A, dst=B) / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(offset=0, m=1) / TCP(flags="S")
    assert route(router, packet)[0] == Verdict.REPLY
    assert router.dropped == {"ipv6: tcp": 1}


def test_upper_layer_walks_extension_headers():
    packet = bytes(IPv6(src=A, dst=B) / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(offset=3) / UDP())
    assert upper_layer(packet, len(packet)) == (17, 56, True)
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
