"""Recorded UDP flows played against live ones: binding, pacing, comparison, refusals, crafted packets."""

from __future__ import annotations

import ipaddress

import pytest
from scapy.layers.inet import ICMP, IP, UDP, UDPerror

from pytest_netplayground.core.addressing import AddressPlan, Endpoint
from pytest_netplayground.core.codec import decode_record, encode_record
from pytest_netplayground.core.divergence import DivergenceReport, UdpDiverged
from pytest_netplayground.core.events import Datagram, Direction, Header, Refusal, UdpFlow
from pytest_netplayground.core.packets import ICMP_PORT_UNREACHABLE, make_icmp_unreachable, make_udp_packet
from pytest_netplayground.core.render import render_conversations
from pytest_netplayground.core.replay import ReplayConfig
from pytest_netplayground.core.router import Router, Verdict
from pytest_netplayground.core.udp import UdpFlows, refused_key
from pytest_netplayground.core.udp_replay import SendDatagram, UdpReplays

DNS = Endpoint("10.0.0.1", 53)
RECORDED = Endpoint("10.0.0.2", 40000)
LIVE = Endpoint("10.0.0.2", 51000)  # the client's port changes from run to run
C2S, S2C = Direction.C2S, Direction.S2C

FLOWS = {0: UdpFlow(0.0, 0, RECORDED, DNS), 1: UdpFlow(0.5, 1, Endpoint("10.0.0.2", 40001), DNS)}
STEPS = [
    Datagram(0.0, 0, C2S, b"q1"),
    Datagram(0.1, 0, S2C, b"a1"),
    Datagram(0.1, 0, S2C, b"a1 trailer"),
    Datagram(0.3, 0, C2S, b"q2"),
    Datagram(0.4, 0, S2C, b"a2"),
    Datagram(0.5, 1, C2S, b"other"),
    Datagram(0.7, 1, S2C, b"other answer"),
]


def replays(pacing: str = "causal", **config) -> UdpReplays:
    return UdpReplays.of(FLOWS, STEPS, ReplayConfig(pacing=pacing, **config))


def sent(actions) -> list:
    return [(a.direction, a.data) if isinstance(a, SendDatagram) else ("refuse", a.direction) for a in actions]


def ask(replay, data: bytes, now: float = 0.0) -> list:
    replay.live_datagram(C2S, data, now)
    return sent(replay.poll(now))


# -- the server absent: the cassette answers ---------------------------------------


def test_each_request_gets_the_replies_that_followed_it_one_for_one():
    r = replays()
    replay = r.bind(LIVE, DNS, b"q1", server_live=False, now=0.0)
    assert replay.flow.flow == 0
    assert ask(replay, b"q1") == [(S2C, b"a1"), (S2C, b"a1 trailer")]
    assert replay.next_deadline() is None  # nothing is due before the client asks again
    assert ask(replay, b"q2") == [(S2C, b"a2")]
    # A second live flow whose first request matches the second recording is bound to it.
    other = r.bind(Endpoint("10.0.0.2", 52000), DNS, b"other", server_live=False, now=0.0)
    assert other.flow.flow == 1 and ask(other, b"other") == [(S2C, b"other answer")]
    assert r.finish() == []


def test_a_changed_request_is_answered_by_order_and_reported():
    r = replays()
    replay = r.bind(LIVE, DNS, b"q1", server_live=False, now=0.0)
    ask(replay, b"q1")
    assert ask(replay, b"qX") == [(S2C, b"a2")]
    found = r.finish()
    assert UdpDiverged("10.0.0.2", DNS, 0, "differs", 1, 1, b"q2", b"qX") in found
    assert UdpDiverged("10.0.0.2", DNS, 1, "unused") in found
    text = DivergenceReport(tuple(found)).format()
    assert text.splitlines()[0] == "2 divergences in 0 connections and 1 UDP flow"
    assert "UDP 10.0.0.2 -> 10.0.0.1:53, recorded flow 0, client datagram 1: differs at byte 1" in text


def test_extra_and_missing_datagrams_and_flows_nothing_recorded():
    r = replays()
    replay = r.bind(LIVE, DNS, b"q1", server_live=False, now=0.0)
    ask(replay, b"q1")
    assert r.bind(Endpoint("10.0.0.3", 1), DNS, b"q1", server_live=False, now=0.0) is None
    other = r.bind(Endpoint("10.0.0.2", 52000), DNS, b"other", server_live=False, now=0.0)
    ask(other, b"other")
    assert ask(other, b"again") == []
    assert r.bind(Endpoint("10.0.0.2", 53000), DNS, b"q1", server_live=False, now=0.0) is None  # all used
    found = r.finish()
    assert UdpDiverged("10.0.0.2", DNS, 1, "extra", 1, actual=b"again") in found
    assert UdpDiverged("10.0.0.2", DNS, 0, "missing", 1) in found


def test_find_tells_the_direction_of_a_live_datagram():
    r = replays()
    replay = r.bind(LIVE, DNS, b"q1", server_live=True, now=0.0)
    assert r.find(LIVE, DNS) == (replay, C2S)
    assert r.find(DNS, LIVE) == (replay, S2C)
    assert r.find(RECORDED, DNS) is None


# -- the server running: recorded client datagrams to it, its replies compared ------


def test_with_the_server_live_it_gets_the_recorded_requests_and_its_replies_are_compared():
    r = replays()
    replay = r.bind(LIVE, DNS, b"q1 live", server_live=True, now=0.0)
    # The recorded request goes to the server, the recorded replies to the client.
    assert ask(replay, b"q1 live") == [(C2S, b"q1"), (S2C, b"a1"), (S2C, b"a1 trailer")]
    # The second recorded request waits for the server's two replies.
    replay.live_datagram(C2S, b"q2", 0.1)
    assert sent(replay.poll(0.1)) == []
    replay.live_datagram(S2C, b"a1", 0.2)
    assert sent(replay.poll(0.2)) == []
    replay.live_datagram(S2C, b"a1 changed", 0.3)
    assert sent(replay.poll(0.3)) == [(C2S, b"q2"), (S2C, b"a2")]
    found = replay.finish()
    assert UdpDiverged("10.0.0.2", DNS, 0, "differs", 0, 2, b"q1", b"q1 live") in found
    assert UdpDiverged("10.0.0.2", DNS, 0, "differs", 1, 3, b"a1 trailer", b"a1 changed", S2C) in found
    assert UdpDiverged("10.0.0.2", DNS, 0, "missing", 1, direction=S2C) in found  # a2 never came
    assert "server datagram 1: differs at byte 3" in DivergenceReport(tuple(found)).format()


def test_a_request_the_starting_server_refuses_is_sent_again_once_it_has_bound():
    r = replays(stall_timeout=2.0)
    replay = r.bind(LIVE, DNS, b"q1", server_live=True, now=0.0)
    assert ask(replay, b"q1")[0] == (C2S, b"q1")
    replay.live_refused(C2S, 0.01)  # not bound yet: its host answered port unreachable
    assert replay.awaiting_bind
    assert sent(replay.bound(0.5)) == [(C2S, b"q1")]  # the shell saw it bound: once
    assert sent(replay.bound(0.6)) == []
    replay.live_datagram(S2C, b"a1", 0.7)
    replay.live_refused(C2S, 0.8)  # a server that answered and then closed is not waited for
    assert not replay.awaiting_bind
    replay.live_datagram(S2C, b"a1 trailer", 0.8)
    assert not [item for item in replay.finish() if item.what == "differs"]


def test_the_wait_for_a_server_to_bind_ends_after_the_stall_timeout():
    r = replays(stall_timeout=1.0)
    replay = r.bind(LIVE, DNS, b"q1", server_live=True, now=0.0)
    ask(replay, b"q1")
    replay.live_refused(C2S, 0.1)
    assert not replay.bind_given_up(1.0) and replay.awaiting_bind
    assert replay.bind_given_up(1.2) and not replay.awaiting_bind
    assert sent(replay.bound(1.3)) == []


def test_with_the_server_absent_a_refusal_is_never_waited_out():
    r = replays()
    replay = r.bind(LIVE, DNS, b"q1", server_live=False, now=0.0)
    ask(replay, b"q1")
    replay.live_refused(C2S, 0.1)
    assert not replay.awaiting_bind


def test_a_silent_server_stalls_the_replay_only_for_the_stall_timeout():
    r = replays(stall_timeout=2.0)
    replay = r.bind(LIVE, DNS, b"q1", server_live=True, now=0.0)
    ask(replay, b"q1")
    replay.live_datagram(C2S, b"q2", 0.5)
    assert sent(replay.poll(0.5)) == []
    assert replay.next_deadline() == pytest.approx(2.0)
    assert sent(replay.poll(2.0)) == [(C2S, b"q2"), (S2C, b"a2")]
    assert UdpDiverged("10.0.0.2", DNS, 0, "missing", 3, direction=S2C) in replay.finish()


# -- pacing ---------------------------------------------------------------------------


def test_recorded_pacing_sends_at_the_recorded_offsets_scaled_by_speed():
    r = replays("recorded", speed=2.0)
    replay = r.bind(LIVE, DNS, b"q1", server_live=False, now=10.0)
    replay.live_datagram(C2S, b"q1", 10.0)
    assert sent(replay.poll(10.0)) == []
    assert replay.next_deadline() == pytest.approx(10.05)
    assert sent(replay.poll(10.05)) == [(S2C, b"a1"), (S2C, b"a1 trailer")]
    # Recorded pacing does not wait for the client's second request.
    assert replay.next_deadline() == pytest.approx(10.2)
    assert sent(replay.poll(10.2)) == [(S2C, b"a2")]
    assert replay.next_deadline() is None


def test_flood_sends_every_recorded_reply_at_once():
    r = replays("flood")
    replay = r.bind(LIVE, DNS, b"q1", server_live=False, now=0.0)
    assert ask(replay, b"q1") == [(S2C, b"a1"), (S2C, b"a1 trailer"), (S2C, b"a2")]


def test_causal_pacing_holds_a_reply_until_its_request_came():
    r = replays()
    replay = r.bind(LIVE, DNS, b"q1", server_live=False, now=0.0)
    assert sent(replay.poll(0.0)) == []  # bound, but the shell has not given the datagram yet
    assert ask(replay, b"q1") == [(S2C, b"a1"), (S2C, b"a1 trailer")]


# -- refusals ---------------------------------------------------------------------------


REFUSED_FLOWS = {0: UdpFlow(0.0, 0, RECORDED, DNS)}
REFUSED_STEPS = [
    Datagram(0.0, 0, C2S, b"q"),
    Refusal(0.001, 0, C2S),  # nothing listened yet
    Datagram(0.1, 0, C2S, b"q"),
    Datagram(0.2, 0, S2C, b"a"),
]


@pytest.mark.parametrize("server_live", [False, True])
def test_a_recorded_refusal_is_played_to_the_client_after_its_datagram(server_live):
    r = UdpReplays.of(REFUSED_FLOWS, REFUSED_STEPS)
    replay = r.bind(LIVE, DNS, b"q", server_live=server_live, now=0.0)
    first = ask(replay, b"q")
    assert ("refuse", C2S) in first and (S2C, b"a") not in first
    assert (S2C, b"a") in ask(replay, b"q", 0.1)
    if not server_live:
        assert r.finish() == []


def test_a_running_server_never_gets_the_request_its_host_refused_when_recording():
    # It was not bound then; on replay it may be, and must not answer that request twice.
    r = UdpReplays.of(REFUSED_FLOWS, REFUSED_STEPS)
    replay = r.bind(LIVE, DNS, b"q", server_live=True, now=0.0)
    assert ask(replay, b"q") == [("refuse", C2S), (C2S, b"q")]
    replay.live_datagram(C2S, b"q", 0.1)  # the client asks again, as it did
    replay.live_datagram(S2C, b"a", 0.2)
    assert sent(replay.poll(0.2)) == [(S2C, b"a")]
    assert replay.finish() == []


def test_refusal_records_round_trip_and_show():
    record = Refusal(0.25, 3, C2S)
    line = encode_record(record)
    assert line == b'{"t": 0.250000, "ev": "refused", "flow": 3, "dir": "c2s"}\n'
    assert decode_record(line) == record
    text = render_conversations(Header("10.0.0.0/24", started=1.0), [REFUSED_FLOWS[0], *REFUSED_STEPS])
    assert "the server's host refused it: ICMP port unreachable" in text


def test_the_router_hands_an_icmp_port_unreachable_about_udp_to_the_session():
    router = Router(AddressPlan("10.0.0.0/24"), udp_tap=True)
    router.add_host(0, "10.0.0.1")
    router.add_host(1, "10.0.0.2")
    datagram = make_udp_packet(bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1]), 40000, 53, b"q")
    icmp = bytearray(make_icmp_unreachable(datagram, ICMP_PORT_UNREACHABLE))
    assert router.from_host(icmp, len(icmp)) == Verdict.UDP and router.target == 1
    # The recorder turns it into the refusal of the flow's datagram.
    flows = UdpFlows()
    flows.see(datagram, 0.0)
    assert flows.refused(refused_key(icmp), 0.5) == Refusal(0.5, 0, C2S)
    parsed = IP(bytes(icmp))
    assert parsed[ICMP].type == 3 and parsed[ICMP].code == 3 and parsed[UDPerror].dport == 53
    # Without the tap, or for other ICMP, nothing changes.
    echo = bytearray(bytes(IP(src="10.0.0.1", dst="10.0.0.2") / ICMP()))
    assert router.from_host(echo, len(echo)) == Verdict.DELIVER
    assert refused_key(echo) is None
    router.udp_tap = False
    assert router.from_host(icmp, len(icmp)) == Verdict.DELIVER


def test_a_crafted_reply_is_a_valid_udp_packet_from_the_recorded_server():
    raw = make_udp_packet(bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 53, 51000, b"\x00answer", ident=7)
    parsed = IP(raw)
    assert (parsed.src, parsed.dst, parsed[UDP].sport, parsed[UDP].dport) == ("10.0.0.1", "10.0.0.2", 53, 51000)
    assert bytes(parsed[UDP].payload) == b"\x00answer"
    rebuilt = IP(raw)
    del rebuilt.chksum, rebuilt[UDP].chksum
    assert bytes(rebuilt) == raw  # both checksums are what scapy computes



def test_over_ipv6_the_router_hands_datagrams_and_port_unreachables_about_them_to_the_session():
    from scapy.layers.inet6 import ICMPv6DestUnreach, IPv6

    from pytest_netplayground.core.addressing6 import Subnet6
    from pytest_netplayground.core.packets6 import port_unreachable, udp_packet
    from pytest_netplayground.core.router6 import Router6

    router = Router(AddressPlan("10.0.0.0/24"), udp_tap=True, six=Router6(Subnet6.parse("fd00:1::/64")))
    router.six.add_host(0, "fd00:1::1")
    router.six.add_host(1, "fd00:1::2")
    client, server = ipaddress.IPv6Address("fd00:1::2").packed, ipaddress.IPv6Address("fd00:1::1").packed
    datagram = udp_packet(client, server, 40000, 53, b"q")
    parsed = IPv6(datagram)
    assert (parsed.src, parsed.dst, bytes(parsed[UDP].payload)) == ("fd00:1::2", "fd00:1::1", b"q")
    del parsed[UDP].chksum
    assert IPv6(bytes(parsed))[UDP].chksum == IPv6(datagram)[UDP].chksum  # a checksum the kernel accepts
    buf = bytearray(datagram)
    assert router.from_host(buf, len(buf)) == Verdict.UDP and router.target == 0
    icmp = bytearray(port_unreachable(datagram))
    assert (IPv6(bytes(icmp))[ICMPv6DestUnreach].type, IPv6(bytes(icmp))[ICMPv6DestUnreach].code) == (1, 4)
    assert router.from_host(icmp, len(icmp)) == Verdict.UDP and router.target == 1
    flows = UdpFlows()
    flows.see(datagram, 0.0)
    assert flows.refused(refused_key(bytes(icmp)), 0.5) == Refusal(0.5, 0, C2S)
