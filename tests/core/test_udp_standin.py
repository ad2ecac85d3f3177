"""The cassette standing in for an absent UDP server: answers, divergences, the packets it sends."""

from __future__ import annotations

from scapy.layers.inet import IP, UDP

from pytest_netplayground.core.addressing import Endpoint
from pytest_netplayground.core.divergence import DivergenceReport, UdpDiverged
from pytest_netplayground.core.events import Datagram, Direction, UdpFlow
from pytest_netplayground.core.packets import make_udp_packet
from pytest_netplayground.core.udp_standin import UdpStandIn

DNS = Endpoint("10.0.0.1", 53)
RECORDED = Endpoint("10.0.0.2", 40000)
LIVE = Endpoint("10.0.0.2", 51000)  # the client's port changes from run to run
C2S, S2C = Direction.C2S, Direction.S2C


def stand_in() -> UdpStandIn:
    flows = {0: UdpFlow(0.0, 0, RECORDED, DNS), 1: UdpFlow(0.5, 1, Endpoint("10.0.0.2", 40001), DNS)}
    datagrams = [
        Datagram(0.1, 0, C2S, b"q1"),
        Datagram(0.2, 0, S2C, b"a1"),
        Datagram(0.2, 0, S2C, b"a1 trailer"),
        Datagram(0.3, 0, C2S, b"q2"),
        Datagram(0.4, 0, S2C, b"a2"),
        Datagram(0.6, 1, C2S, b"other"),
        Datagram(0.7, 1, S2C, b"other answer"),
    ]
    return UdpStandIn.of(flows, datagrams)


def test_each_request_gets_the_replies_that_followed_it_one_for_one():
    s = stand_in()
    assert s.knows("10.0.0.2", DNS) and not s.knows("10.0.0.3", DNS)
    assert s.ask(LIVE, DNS, b"q1") == [b"a1", b"a1 trailer"]
    assert s.ask(LIVE, DNS, b"q2") == [b"a2"]
    # A second live flow whose first request matches the second recording is bound to it.
    assert s.ask(Endpoint("10.0.0.2", 52000), DNS, b"other") == [b"other answer"]
    assert s.finish() == []


def test_a_changed_request_is_answered_by_order_and_reported():
    s = stand_in()
    assert s.ask(LIVE, DNS, b"q1") == [b"a1", b"a1 trailer"]
    assert s.ask(LIVE, DNS, b"qX") == [b"a2"]
    found = s.finish()
    assert UdpDiverged("10.0.0.2", DNS, 0, "differs", 1, 1, b"q2", b"qX") in found
    assert UdpDiverged("10.0.0.2", DNS, 1, "unused") in found
    text = DivergenceReport(tuple(found)).format()
    assert text.splitlines()[0] == "2 divergences in 0 connections and 1 UDP flow"
    assert "UDP 10.0.0.2 -> 10.0.0.1:53, recorded flow 0, client datagram 1: differs at byte 1" in text


def test_extra_and_missing_datagrams_and_unknown_flows():
    s = stand_in()
    assert s.ask(LIVE, DNS, b"q1") is not None
    assert s.ask(Endpoint("10.0.0.3", 1), DNS, b"q1") is None  # nothing recorded from that host
    other = Endpoint("10.0.0.2", 52000)
    assert s.ask(other, DNS, b"other") == [b"other answer"]
    assert s.ask(other, DNS, b"again") is None
    found = s.finish()
    assert UdpDiverged("10.0.0.2", DNS, 1, "extra", 1, actual=b"again") in found
    assert UdpDiverged("10.0.0.2", DNS, 0, "missing", 1) in found


def test_a_crafted_reply_is_a_valid_udp_packet_from_the_recorded_server():
    raw = make_udp_packet(bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 53, 51000, b"\x00answer", ident=7)
    parsed = IP(raw)
    assert (parsed.src, parsed.dst, parsed[UDP].sport, parsed[UDP].dport) == ("10.0.0.1", "10.0.0.2", 53, 51000)
    assert bytes(parsed[UDP].payload) == b"\x00answer"
    rebuilt = IP(raw)
    del rebuilt.chksum, rebuilt[UDP].chksum
    assert bytes(rebuilt) == raw  # both checksums are what scapy computes


def test_flows_whose_server_ran_live_are_not_reported_unused():
    from pytest_netplayground.core.addressing import Endpoint
    from pytest_netplayground.core.events import Datagram, Direction, UdpFlow
    from pytest_netplayground.core.udp_standin import UdpStandIn

    server = Endpoint("10.0.0.1", 53)
    flow = UdpFlow(0.0, 0, Endpoint("10.0.0.2", 4000), server)
    stand_in = UdpStandIn.of({0: flow}, [Datagram(0.1, 0, Direction.C2S, b"q"), Datagram(0.2, 0, Direction.S2C, b"a")])
    assert [d.what for d in stand_in.finish()] == ["unused"]
    stand_in.went_live("10.0.0.2", server)
    assert stand_in.finish() == []
