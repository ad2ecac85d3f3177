"""The router's verdicts and rewrites, on packets crafted with scapy."""

from __future__ import annotations

import socket
import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, IPOption_NOP, IPOption_Router_Alert
from scapy.layers.inet6 import IPv6

from pytest_netplayground.core.addressing import AddressPlan, Endpoint, encode_key, reverse_key
from pytest_netplayground.core.router import Router, Verdict, decode_key

H0, H1, H2 = "10.0.0.1", "10.0.0.2", "10.0.0.3"
ALIAS = {H0: "245.255.255.254", H1: "245.255.255.253", H2: "245.255.255.252"}
UNOWNED = "10.0.0.200"


@pytest.fixture
def router() -> Router:
    router = Router(AddressPlan("10.0.0.0/24"))
    for i in range(3):
        router.add_host(i, f"10.0.0.{i + 1}")
    return router


def shell_buffer(packet) -> tuple[bytearray, int]:
    """``packet`` as the shell hands it over: at the start of a reused 64 KiB buffer whose
    bytes past the packet are stale (here 0x55, which reads as a plausible TCP data offset)."""
    raw = bytes(packet)
    buf = bytearray(b"\x55" * 65536)
    buf[: len(raw)] = raw
    return buf, len(raw)


def from_host(router: Router, packet) -> tuple[int, bytes]:
    buf, n = shell_buffer(packet)
    verdict = router.from_host(buf, n)
    return verdict, bytes(buf[:n])


def from_proxy(router: Router, packet) -> tuple[int, bytes]:
    buf, n = shell_buffer(packet)
    verdict = router.from_proxy(buf, n)
    return verdict, bytes(buf[:n])


def syn(src: str = H1, dst: str = H2, sport: int = 40000, dport: int = 80, seq: int = 1000, **tcp) -> IP:
    return IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="S", seq=seq, **tcp)


def data(src: str = H0, dst: str = H1, payload: bytes = b"hello", ip_options: bool = False) -> IP:
    options = [IPOption_NOP(), IPOption_Router_Alert()] if ip_options else []
    return IP(src=src, dst=dst, options=options) / TCP(sport=40000, dport=80, flags="PA") / payload


def key_of(src: str, dst: str, sport: int, dport: int) -> bytes:
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)


def assert_checksums_valid(raw: bytes) -> None:
    """The IP (and TCP or ICMP) checksums of ``raw`` equal those scapy recomputes."""
    parsed = IP(raw)
    again = IP(raw)
    del again.chksum
    layers = [layer for layer in (TCP, ICMP) if layer in parsed]
    for layer in layers:
        del again[layer].chksum
    again = IP(bytes(again))
    assert parsed.chksum == again.chksum, "IP header checksum"
    for layer in layers:
        assert parsed[layer].chksum == again[layer].chksum, f"{layer.__name__} checksum"


def opened_key(router: Router, **kw) -> bytes:
    verdict, _ = from_host(router, syn(**kw))
    assert verdict == Verdict.NEW_CONNECTION
    return router.key


# --- TCP from a host goes to the proxy ------------------------------------------------


def test_tcp_data_between_hosts_goes_to_the_proxy(router):
    verdict, _ = from_host(router, data())
    assert verdict == Verdict.TO_PROXY


@pytest.mark.parametrize("ip_options", [False, True], ids=["plain header", "header with options"])
def test_tcp_to_the_proxy_has_its_destination_replaced_by_the_alias(router, ip_options):
    _, out = from_host(router, data(H0, H1, ip_options=ip_options))
    parsed = IP(out)
    assert parsed.dst == ALIAS[H1] == router.plan.alias(H1)
    assert parsed.src == H0


@pytest.mark.parametrize("ip_options", [False, True], ids=["plain header", "header with options"])
def test_tcp_to_the_proxy_changes_nothing_but_destination_and_checksums(router, ip_options):
    original = data(H2, H0, payload=b"odd", ip_options=ip_options)
    _, out = from_host(router, original)
    expected = IP(bytes(original))
    expected.dst = ALIAS[H0]
    del expected.chksum, expected[TCP].chksum
    assert out == bytes(expected)


@pytest.mark.parametrize("payload", [b"", b"x", b"even", b"\xff" * 1000], ids=["empty", "1", "4", "1000"])
@pytest.mark.parametrize("ip_options", [False, True], ids=["plain header", "header with options"])
def test_tcp_to_the_proxy_keeps_valid_checksums(router, payload, ip_options):
    _, out = from_host(router, data(H0, H1, payload=payload, ip_options=ip_options))
    assert_checksums_valid(out)


# --- the SYN gate ------------------------------------------------------------------------


def test_first_syn_of_a_connection_is_held_as_a_new_connection(router):
    verdict, _ = from_host(router, syn(H1, H2, 40000, 80))
    assert verdict == Verdict.NEW_CONNECTION


def test_new_connection_key_is_source_destination_and_ports(router):
    from_host(router, syn(H1, H2, 40000, 80))
    assert router.key == key_of(H1, H2, 40000, 80)


def test_decode_key_gives_client_and_server_endpoints(router):
    from_host(router, syn(H1, H2, 40000, 80))
    assert decode_key(router.key) == (Endpoint(H1, 40000), Endpoint(H2, 80))


def test_encode_key_builds_the_key_the_router_cuts_from_the_syn(router):
    from_host(router, syn(H1, H2, 40000, 80))
    assert encode_key(Endpoint(H1, 40000), Endpoint(H2, 80)) == router.key
    assert decode_key(encode_key(Endpoint(H2, 65535), Endpoint(H1, 1))) == (Endpoint(H2, 65535), Endpoint(H1, 1))


def test_reverse_key_is_the_key_of_the_answer():
    assert reverse_key(key_of(H1, H2, 40000, 80)) == key_of(H2, H1, 80, 40000)


def test_retransmitted_syn_of_a_pending_connection_is_held(router):
    from_host(router, syn())
    verdict, _ = from_host(router, syn())
    assert verdict == Verdict.HELD


def test_syn_on_other_ports_is_a_separate_new_connection(router):
    first = opened_key(router, sport=40000)
    second = opened_key(router, sport=40001)
    assert first != second


def test_release_returns_the_held_syn_rewritten_for_the_proxy(router):
    key = opened_key(router, src=H1, dst=H2, seq=1234)
    out = router.release(key)
    parsed = IP(out)
    assert (parsed.src, parsed.dst) == (H1, ALIAS[H2])
    assert (parsed[TCP].sport, parsed[TCP].dport, parsed[TCP].seq) == (40000, 80, 1234)
    assert parsed[TCP].flags == "S"
    assert_checksums_valid(out)


def test_release_returns_the_latest_retransmission(router):
    key = opened_key(router, options=[("Timestamp", (1, 0))])
    from_host(router, syn(options=[("Timestamp", (2, 0))]))
    out = router.release(key)
    assert dict(IP(out)[TCP].options)["Timestamp"] == (2, 0)


def test_syn_after_release_goes_to_the_proxy(router):
    key = opened_key(router, src=H1, dst=H2)
    router.release(key)
    verdict, out = from_host(router, syn(H1, H2))
    assert verdict == Verdict.TO_PROXY
    assert IP(out).dst == ALIAS[H2]
    assert_checksums_valid(out)


def test_release_of_an_unknown_key_returns_none(router):
    assert router.release(key_of(H1, H2, 1, 2)) is None


def test_release_twice_returns_none_the_second_time(router):
    key = opened_key(router)
    router.release(key)
    assert router.release(key) is None


def test_refuse_returns_the_client_host_and_a_reset_for_it(router):
    key = opened_key(router, src=H1, dst=H2, sport=40000, dport=80, seq=5000)
    host, packet = router.refuse(key)
    assert host == 1
    rst = IP(packet)
    assert (rst.src, rst[TCP].sport, rst.dst, rst[TCP].dport) == (H2, 80, H1, 40000)
    assert rst[TCP].flags == "RA"
    assert rst[TCP].ack == 5001
    assert_checksums_valid(packet)


def test_refuse_of_an_unknown_key_returns_none(router):
    assert router.refuse(key_of(H1, H2, 1, 2)) is None


def test_after_refuse_a_new_syn_starts_afresh(router):
    key = opened_key(router)
    router.refuse(key)
    verdict, _ = from_host(router, syn())
    assert verdict == Verdict.NEW_CONNECTION


def test_unreachable_returns_the_client_host_and_an_icmp_host_unreachable(router):
    key = opened_key(router, src=H2, dst=H0)
    host, packet = router.unreachable(key)
    assert host == 2
    reply = IP(packet)
    assert (reply.src, reply.dst) == (H0, H2)
    assert (reply[ICMP].type, reply[ICMP].code) == (3, 1)
    assert (reply[IPerror].src, reply[IPerror].dst) == (H2, H0)
    assert_checksums_valid(packet)


def test_unreachable_of_an_unknown_key_returns_none(router):
    assert router.unreachable(key_of(H1, H2, 1, 2)) is None


def test_forget_of_a_pending_connection_lets_a_new_syn_start_afresh(router):
    key = opened_key(router)
    router.forget(key)
    verdict, _ = from_host(router, syn())
    assert verdict == Verdict.NEW_CONNECTION


def test_forget_of_an_open_connection_lets_a_new_syn_start_afresh(router):
    key = opened_key(router)
    router.release(key)
    router.forget(key)
    verdict, _ = from_host(router, syn())
    assert verdict == Verdict.NEW_CONNECTION
    assert router.key == key


def test_forget_of_an_unknown_key_does_nothing(router):
    router.forget(key_of(H1, H2, 1, 2))
    assert (router.pending, router.open) == ({}, set())


def test_syn_ack_from_a_host_is_not_gated(router):
    verdict, out = from_host(router, IP(src=H1, dst=H2) / TCP(flags="SA"))
    assert verdict == Verdict.TO_PROXY
    assert IP(out).dst == ALIAS[H2]


def test_spoofed_source_syn_is_dropped_and_counted(router):
    verdict, _ = from_host(router, syn(src="192.168.7.7", dst=H1))
    assert verdict == Verdict.DROP
    assert router.dropped == {"spoofed source": 1}
    assert router.pending == {}


def test_syn_from_an_unowned_subnet_address_is_dropped_as_spoofed(router):
    verdict, _ = from_host(router, syn(src=UNOWNED, dst=H1))
    assert verdict == Verdict.DROP
    assert router.dropped == {"spoofed source": 1}


def test_syn_from_a_host_to_its_own_address_is_dropped_and_counted(router):
    verdict, _ = from_host(router, syn(src=H1, dst=H1))
    assert verdict == Verdict.DROP
    assert router.dropped == {"from a host to itself": 1}
    assert router.pending == {}


# --- packets from the proxy --------------------------------------------------------------


def test_packet_from_the_proxy_is_delivered_to_the_host_owning_its_destination(router):
    verdict, _ = from_proxy(router, data(src=ALIAS[H0], dst=H2))
    assert verdict == Verdict.DELIVER
    assert router.target == 2


def test_packet_from_the_proxy_has_its_alias_source_unaliased(router):
    _, out = from_proxy(router, data(src=ALIAS[H0], dst=H2))
    assert (IP(out).src, IP(out).dst) == (H0, H2)


@pytest.mark.parametrize("payload", [b"", b"x", b"\x00" * 999], ids=["empty", "1", "999"])
@pytest.mark.parametrize("ip_options", [False, True], ids=["plain header", "header with options"])
def test_packet_from_the_proxy_keeps_valid_checksums(router, payload, ip_options):
    _, out = from_proxy(router, data(src=ALIAS[H1], dst=H0, payload=payload, ip_options=ip_options))
    assert_checksums_valid(out)


def test_round_trip_through_the_proxy_restores_the_packet(router):
    original = bytes(data(H0, H1, payload=b"round trip"))
    _, to_proxy = from_host(router, original)
    reply = IP(to_proxy)
    reply.src, reply.dst = reply.dst, reply.src  # the proxy answers from the alias
    _, delivered = from_proxy(router, bytes(reply))
    assert (IP(delivered).src, IP(delivered).dst) == (H1, H0)
    assert_checksums_valid(delivered)


def test_packet_from_the_proxy_whose_source_is_not_an_alias_is_dropped(router):
    verdict, _ = from_proxy(router, data(src="192.168.7.7", dst=H0))
    assert verdict == Verdict.DROP
    assert router.dropped == {"proxy: source not an alias": 1}


def test_packet_from_the_proxy_to_no_host_is_dropped(router):
    verdict, _ = from_proxy(router, data(src=ALIAS[H0], dst=UNOWNED))
    assert verdict == Verdict.DROP
    assert router.dropped == {"proxy: no such host": 1}


@pytest.mark.parametrize(
    "packet",
    [
        # An IPv6 header whose bytes 9, 12:16 and 16:20 read as TCP from an alias to a host.
        IPv6(src="6:0:f5ff:fffe:a00:2::", dst="fd00::2", nh=6) / TCP(),
        bytes(data(src=ALIAS[H0], dst=H1))[:19],
    ],
    ids=["ipv6", "runt"],
)
def test_packet_from_the_proxy_that_is_not_ipv4_is_dropped_and_counted(router, packet):
    verdict, _ = from_proxy(router, packet)
    assert verdict == Verdict.DROP
    assert router.dropped == {"proxy: not ipv4": 1}


def test_udp_from_the_proxy_is_dropped(router):
    verdict, _ = from_proxy(router, IP(src=ALIAS[H0], dst=H1) / UDP())
    assert verdict == Verdict.DROP
    assert router.dropped == {"proxy: not tcp": 1}


# --- other protocols between hosts --------------------------------------------------------


@pytest.mark.parametrize(
    "packet",
    [
        IP(src=H0, dst=H2) / UDP(sport=5353, dport=53) / b"query",
        IP(src=H0, dst=H2) / ICMP(type=8, id=1, seq=1) / b"ping",
        IP(src=H0, dst=H2) / ICMP(type=0, id=1, seq=1) / b"pong",
    ],
    ids=["udp", "echo request", "echo reply"],
)
def test_udp_and_icmp_echo_are_delivered_untouched(router, packet):
    verdict, out = from_host(router, packet)
    assert verdict == Verdict.DELIVER
    assert router.target == 2
    assert out == bytes(packet)


# --- addresses no host owns -------------------------------------------------------------


@pytest.mark.parametrize(
    "packet",
    [
        syn(src=H1, dst=UNOWNED),
        IP(src=H1, dst=UNOWNED) / UDP(sport=5353, dport=53),
        IP(src=H1, dst=UNOWNED) / ICMP(type=8),
    ],
    ids=["tcp syn", "udp", "echo request"],
)
def test_packet_to_an_unowned_subnet_address_gets_an_icmp_host_unreachable(router, packet):
    verdict, _ = from_host(router, packet)
    assert verdict == Verdict.REPLY
    reply = IP(router.reply)
    assert (reply.src, reply.dst) == (UNOWNED, H1)
    assert (reply[ICMP].type, reply[ICMP].code) == (3, 1)
    assert bytes(reply[ICMP].payload) == bytes(packet)[:28]
    assert_checksums_valid(router.reply)


def test_packet_to_an_unowned_subnet_address_is_counted(router):
    from_host(router, syn(src=H1, dst=UNOWNED))
    assert router.dropped == {"no such host": 1}


@pytest.mark.parametrize(
    "icmp",
    [ICMP(type=3, code=3), ICMP(type=11, code=0), ICMP(type=12), ICMP(type=5)],
    ids=["destination unreachable", "time exceeded", "parameter problem", "redirect"],
)
def test_icmp_error_to_an_unowned_subnet_address_is_not_answered(router, icmp):
    quoted = bytes(IP(src=UNOWNED, dst=H1) / UDP(sport=53, dport=5353))[:28]
    verdict, _ = from_host(router, IP(src=H1, dst=UNOWNED) / icmp / quoted)
    assert verdict == Verdict.DROP
    assert router.reply == b""


def test_icmp_error_to_an_unowned_subnet_address_is_counted_as_no_such_host(router):
    from_host(router, IP(src=H1, dst=UNOWNED) / ICMP(type=3, code=3))
    assert router.dropped == {"no such host": 1}


# --- drops ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "packet",
    [data(H0, "192.168.1.1"), IP(src=H0, dst="8.8.8.8") / UDP(), data(H0, ALIAS[H1])],
    ids=["tcp", "udp", "to an alias"],
)
def test_packet_outside_the_subnet_is_dropped_and_counted(router, packet):
    verdict, _ = from_host(router, packet)
    assert verdict == Verdict.DROP
    assert router.dropped == {"outside subnet": 1}


def test_ipv6_from_a_host_is_dropped_and_counted_as_ipv6(router):
    verdict, _ = from_host(router, IPv6(src="fd00::1", dst="fd00::2") / TCP(flags="S"))
    assert verdict == Verdict.DROP
    assert router.dropped == {"ipv6": 1}


@pytest.mark.parametrize(
    "fragment",
    [{"flags": "MF"}, {"frag": 185}, {"flags": "MF", "frag": 1}],
    ids=["first fragment", "last fragment", "middle fragment"],
)
def test_tcp_fragments_are_dropped_and_counted(router, fragment):
    packet = IP(src=H0, dst=H1, **fragment) / TCP(flags="S") / (b"x" * 100)
    verdict, _ = from_host(router, packet)
    assert verdict == Verdict.DROP
    assert router.dropped == {"tcp fragment": 1}
    assert router.pending == {}


def test_tcp_with_dont_fragment_set_is_not_a_fragment(router):
    verdict, _ = from_host(router, IP(src=H0, dst=H1, flags="DF") / TCP(flags="A"))
    assert verdict == Verdict.TO_PROXY


@pytest.mark.parametrize(
    "mangle, reason",
    [
        (lambda raw: raw[:19], "too short"),
        (lambda raw: raw[:-1], "bad ip length"),
        (lambda raw: raw + b"\0", "bad ip length"),
        (lambda raw: bytes([0x44]) + raw[1:], "bad ip length"),
        (lambda raw: raw[:2] + struct.pack("!H", len(raw) - 4) + raw[4:], "bad ip length"),
        (lambda raw: bytes([0x55]) + raw[1:], "not ipv4"),
    ],
    ids=["runt", "truncated", "trailing byte", "ihl below 5", "total length wrong", "version 5"],
)
def test_malformed_ip_header_is_dropped_and_counted(router, mangle, reason):
    raw = bytes(data(H0, H1))
    verdict, _ = from_host(router, mangle(raw))
    assert verdict == Verdict.DROP
    assert router.dropped == {reason: 1}


@pytest.mark.parametrize("tcp_bytes", [0, 19], ids=["no tcp header", "19 byte tcp header"])
def test_truncated_tcp_header_is_dropped_and_counted(router, tcp_bytes):
    raw = bytearray(bytes(data(H0, H1, payload=b""))[: 20 + tcp_bytes])
    raw[2:4] = struct.pack("!H", len(raw))
    verdict, _ = from_host(router, raw)
    assert verdict == Verdict.DROP
    assert router.dropped == {"bad tcp header": 1}


@pytest.mark.parametrize("offset", [4, 15], ids=["data offset below 5", "data offset past the end"])
def test_tcp_data_offset_out_of_range_is_dropped_and_counted(router, offset):
    raw = bytearray(bytes(data(H0, H1, payload=b"")))
    raw[32] = offset << 4
    verdict, _ = from_host(router, raw)
    assert verdict == Verdict.DROP
    assert router.dropped == {"bad tcp header": 1}
