"""Whatever bytes reach the router, it answers with a verdict and keeps its books straight."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from scapy.layers.inet import (
    ICMP,
    IP,
    TCP,
    UDP,
    IPOption_EOL,
    IPOption_NOP,
    IPOption_Router_Alert,
    IPOption_RR,
    IPOption_Timestamp,
)
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)

from pytest_netplayground.core.addressing import AddressPlan, decode_key, invert
from pytest_netplayground.core.addressing6 import Subnet6
from pytest_netplayground.core.describe import describe_packet
from pytest_netplayground.core.events import Direction
from pytest_netplayground.core.router import Router, Verdict
from pytest_netplayground.core.router6 import Router6
from pytest_netplayground.core.udp import UdpFlows, is_udp, refused_key, udp_key_and_payload
from pytest_netplayground.core.udp_replay import UdpReplays

VERDICTS = {v for k, v in vars(Verdict).items() if not k.startswith("_")}
SIDES = ["from_host", "from_proxy"]

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
HOST_ALIASES = ["245.255.255.254", "245.255.255.253", "245.255.255.252"]
ADDRESSES = [
    "10.0.0.1",
    "10.0.0.2",
    "10.0.0.3",
    "10.0.0.200",
    "10.0.0.0",
    "10.0.0.255",
    "245.255.255.254",
    "245.255.255.252",
    "245.255.255.100",
    "192.168.1.1",
    "0.0.0.0",
    "255.255.255.255",
]

SYNS = [
    bytes(IP(src=src, dst=dst) / TCP(sport=sport, dport=80, flags="S"))
    for src, dst in [("10.0.0.1", "10.0.0.2"), ("10.0.0.3", "10.0.0.1")]
    for sport in (40000, 40001)
]

DAMAGE = [
    "none",
    "none",
    "none",
    "ip checksum",
    "flipped body bit",
    "truncate",
    "total length",
    "ihl",
    "version",
]

IP_OPTIONS = [IPOption_NOP, IPOption_EOL, IPOption_RR, IPOption_Timestamp, IPOption_Router_Alert]


HOSTS6 = ["fd00::1", "fd00::2", "fd00::3"]
ALIASES6 = [str(ipaddress.IPv6Address(invert(ipaddress.IPv6Address(a).packed))) for a in HOSTS6]
ADDRESSES6 = HOSTS6 + ALIASES6[:2] + [
    "fd00::",
    "fd00::99",
    "fd00::ffff:ffff:ffff:ffff",
    "2001:db8::1",
    "ff02::1",
    "::1",
    "::",
]


def make_router(udp_tap: bool = False) -> Router:
    router = Router(AddressPlan("10.0.0.0/24"), six=Router6(Subnet6.parse("fd00::/64")), udp_tap=udp_tap)
    for i in range(3):
        router.add_host(i, f"10.0.0.{i + 1}")
        router.six.add_host(i, HOSTS6[i])
    return router


def folded_sum(data: bytes) -> int:
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ip_header_valid(packet: bytes) -> bool:
    """Version 4, a header length of at least 20 that fits, and a checksum a receiver accepts."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return False
    ihl = (packet[0] & 0x0F) * 4
    return 20 <= ihl <= len(packet) and folded_sum(packet[:ihl]) == 0xFFFF


def tcp_checksum_valid(packet: bytes) -> bool:
    """An unfragmented TCP segment, at least a header long, whose checksum a receiver accepts."""
    ihl = (packet[0] & 0x0F) * 4
    segment = packet[ihl:]
    if packet[9] != 6 or len(segment) < 20:
        return False
    pseudo = packet[12:20] + struct.pack("!BBH", 0, 6, len(segment))
    return folded_sum(pseudo + segment) == 0xFFFF


def tcp6_checksum_valid(packet: bytes) -> bool:
    """An IPv6 packet whose next header is TCP, at least a header long, with a checksum a receiver accepts."""
    segment = packet[40:]
    if len(packet) < 60 or packet[6] != 6:
        return False
    pseudo = packet[8:40] + struct.pack("!IxxxB", len(segment), 6)
    return folded_sum(pseudo + segment) == 0xFFFF


def feed(router: Router, side: str, packet: bytes) -> tuple[int, int, bytes]:
    """(verdict, increase of the drop counters, the packet as left in the buffer)."""
    note(describe_packet(packet))
    buf = bytearray(b"\x55" * 65536)  # stale bytes past the packet, as in the shell's reused buffer
    buf[: len(packet)] = packet
    before = sum(router.dropped.values())
    verdict = getattr(router, side)(buf, len(packet))
    return verdict, sum(router.dropped.values()) - before, bytes(buf[: len(packet)])


def icmp6_unreachable_valid(reply: bytes, packet: bytes) -> bool:
    """An ICMPv6 destination unreachable back to the packet's source, its checksum right, within 1280 bytes."""
    body = reply[40:]
    pseudo = reply[8:40] + struct.pack("!I3xB", len(body), 58)
    return (
        reply[0] >> 4 == 6
        and reply[6] == 58
        and struct.unpack("!H", reply[4:6])[0] == len(body)
        and reply[24:40] == packet[8:24]
        and body[0] == 1
        and folded_sum(pseudo + body) == 0xFFFF
        and len(reply) <= 1280
    )


# --- strategies ---------------------------------------------------------------------


@st.composite
def large_bytes(draw) -> bytes:
    """Up to 65535 bytes: a drawn prefix, then filler, without drawing every byte."""
    size = draw(st.integers(201, 65535))
    prefix = draw(st.binary(max_size=64))
    fill = draw(st.sampled_from([b"\0", b"\xff", b"E"]))
    return (prefix + fill * size)[:size]


arbitrary_bytes = st.one_of(*[st.binary(max_size=200)] * 4, large_bytes())


@st.composite
def transport(draw):
    kind = draw(st.sampled_from(["tcp", "tcp", "tcp", "udp", "icmp", "other"]))
    payload = draw(st.binary(max_size=40))
    if kind == "tcp":
        options = draw(st.sampled_from([[], [("MSS", 1460)], [("NOP", None), ("WScale", 7)]]))
        layer = TCP(
            sport=draw(st.integers(0, 65535)),
            dport=draw(st.integers(0, 65535)),
            flags=draw(st.integers(0, 255)),
            seq=draw(st.integers(0, 2**32 - 1)),
            ack=draw(st.integers(0, 2**32 - 1)),
            options=options,
        )
    elif kind == "udp":
        layer = UDP(sport=draw(st.integers(0, 65535)), dport=draw(st.integers(0, 65535)))
    elif kind == "icmp":
        layer = ICMP(type=draw(st.sampled_from([0, 3, 5, 8, 11, 12, 13, 255])), code=draw(st.integers(0, 15)))
    else:
        return payload, draw(st.integers(0, 255).filter(lambda p: p not in (1, 6, 17)))
    return layer / payload, None


@st.composite
def ipv4_packets(draw) -> bytes:
    """An IPv4 packet built by scapy, then perhaps damaged in one of several ways."""
    layer, proto = draw(transport())
    options = [option() for option in draw(st.lists(st.sampled_from(IP_OPTIONS), max_size=3))]
    sources = draw(st.sampled_from([HOSTS, HOST_ALIASES, ADDRESSES]))
    ip = IP(
        src=draw(st.sampled_from(sources)),
        dst=draw(st.sampled_from(draw(st.sampled_from([HOSTS, ADDRESSES])))),
        options=options,
        flags=draw(st.sampled_from([0, "DF", "MF", "DF+MF", "evil"])),
        frag=draw(st.sampled_from([0, 0, 0, 1, 185, 8191])),
        id=draw(st.integers(0, 65535)),
        ttl=draw(st.integers(0, 255)),
    )
    if proto is not None:
        ip.proto = proto
    packet = bytearray(bytes(ip / layer))
    damage = draw(st.sampled_from(DAMAGE))
    if damage == "ip checksum":
        packet[10] ^= draw(st.integers(1, 255))
    elif damage == "flipped body bit" and len(packet) > 20:
        packet[draw(st.integers(20, len(packet) - 1))] ^= 0x01
    elif damage == "truncate":
        packet = packet[: draw(st.integers(0, len(packet)))]
    elif damage == "total length":
        struct.pack_into("!H", packet, 2, draw(st.integers(0, 65535)))
    elif damage == "ihl":
        packet[0] = 0x40 | draw(st.integers(0, 15))
    elif damage == "version":
        packet[0] = (draw(st.integers(0, 15)) << 4) | (packet[0] & 0x0F)
    return bytes(packet)


EXTENSIONS6 = [IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting, lambda: IPv6ExtHdrFragment(m=1)]


@st.composite
def ipv6_packets(draw) -> bytes:
    """An IPv6 packet: hosts, unowned and outside addresses, extension headers, perhaps damaged."""
    upper = draw(
        st.sampled_from(
            [
                TCP(flags=draw(st.integers(0, 255)), sport=draw(st.integers(0, 65535)), dport=80),
                UDP(sport=draw(st.integers(0, 65535)), dport=draw(st.integers(0, 65535))),
                ICMPv6EchoRequest(),
                ICMPv6EchoReply(),
                ICMPv6DestUnreach() / IPv6(src="fd00::2", dst="fd00::1") / UDP(),
                ICMP(),
            ]
        )
    )
    chain = [make() for make in draw(st.lists(st.sampled_from(EXTENSIONS6), max_size=3))]
    ip = IPv6(src=draw(st.sampled_from(ADDRESSES6)), dst=draw(st.sampled_from(ADDRESSES6)))
    for header in chain:
        ip = ip / header
    packet = bytearray(bytes(ip / upper / draw(st.binary(max_size=40))))
    damage = draw(st.sampled_from(["none", "none", "truncate", "payload length", "next header", "fragment"]))
    if damage == "truncate":
        packet = packet[: draw(st.integers(0, len(packet)))]
    elif damage == "payload length":
        struct.pack_into("!H", packet, 4, draw(st.integers(0, 65535)))
    elif damage == "next header":
        packet[6] = draw(st.integers(0, 255))
    elif damage == "fragment":
        packet = bytearray(bytes(ip / IPv6ExtHdrFragment(offset=draw(st.integers(1, 8191))) / upper))
    return bytes(packet)


packets = st.one_of(ipv4_packets(), ipv4_packets(), ipv6_packets(), ipv6_packets())
anything = st.one_of(arbitrary_bytes, packets)


# --- properties -----------------------------------------------------------------------


@FUZZ
@given(side=st.sampled_from(SIDES), packet=arbitrary_bytes)
def test_arbitrary_bytes_get_a_verdict(side, packet):
    verdict, _, _ = feed(make_router(), side, packet)
    assert verdict in VERDICTS


@FUZZ
@given(side=st.sampled_from(SIDES), packet=packets)
def test_crafted_and_damaged_packets_get_a_verdict(side, packet):
    verdict, _, _ = feed(make_router(), side, packet)
    assert verdict in VERDICTS


@FUZZ
@given(side=st.sampled_from(SIDES), packet=anything)
def test_a_drop_is_counted_exactly_once(side, packet):
    verdict, counted, _ = feed(make_router(), side, packet)
    if verdict == Verdict.DROP:
        assert counted == 1


@FUZZ
@given(side=st.sampled_from(SIDES), packet=anything)
def test_only_drops_and_replies_are_counted(side, packet):
    verdict, counted, _ = feed(make_router(), side, packet)
    if verdict not in (Verdict.DROP, Verdict.REPLY):
        assert counted == 0


@FUZZ
@given(side=st.sampled_from(SIDES), packet=packets)
def test_forwarded_packets_keep_a_valid_ip_header_checksum(side, packet):
    valid_before = ip_header_valid(packet)
    verdict, _, out = feed(make_router(), side, packet)
    if verdict in (Verdict.TO_PROXY, Verdict.DELIVER) and valid_before:
        assert ip_header_valid(out)


@FUZZ
@given(side=st.sampled_from(SIDES), packet=packets)
def test_forwarded_packets_keep_a_valid_tcp_checksum(side, packet):
    valid_before = ip_header_valid(packet) and tcp_checksum_valid(packet)
    verdict, _, out = feed(make_router(), side, packet)
    if verdict in (Verdict.TO_PROXY, Verdict.DELIVER) and valid_before:
        assert tcp_checksum_valid(out)


@FUZZ
@given(packet=packets)
def test_replies_to_hosts_are_valid_icmp_unreachables(packet):
    router = make_router()
    verdict, _, _ = feed(router, "from_host", packet)
    if verdict == Verdict.REPLY and packet[0] >> 4 == 6:
        assert icmp6_unreachable_valid(router.reply, packet)
    elif verdict == Verdict.REPLY:
        reply = router.reply
        assert ip_header_valid(reply)
        assert folded_sum(reply[20:]) == 0xFFFF
        assert reply[20] == 3
        assert reply[16:20] == packet[12:16]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("from_host"), st.sampled_from(SYNS)),
            st.tuples(st.sampled_from(SIDES), anything),
            st.tuples(st.sampled_from(["release", "refuse", "unreachable", "forget"]), st.none()),
        ),
        max_size=12,
    )
)
def test_sequences_of_packets_and_gate_decisions_never_raise(steps):
    router = make_router()
    keys = []
    for action, packet in steps:
        if packet is not None:
            verdict, _, _ = feed(router, action, packet)
            assert verdict in VERDICTS
            if verdict == Verdict.NEW_CONNECTION:
                keys.append(router.key)
        elif keys:
            result = getattr(router, action)(keys[-1])
            if action == "release" and result is not None:
                assert ip_header_valid(result)
            elif action in ("refuse", "unreachable") and result is not None:
                host, answer = result
                assert host in router.hosts.values()
                assert ip_header_valid(answer)


@FUZZ
@given(packet=ipv6_packets())
def test_ipv6_from_a_host_goes_untouched_to_its_owner_or_rewritten_to_the_proxy(packet):
    router = make_router()
    verdict, _, out = feed(router, "from_host", packet)
    assert verdict in (Verdict.DROP, Verdict.DELIVER, Verdict.REPLY, Verdict.NEW_CONNECTION, Verdict.TO_PROXY)
    layer = IPv6(packet) if verdict in (Verdict.DELIVER, Verdict.TO_PROXY) else None
    if verdict == Verdict.DELIVER:
        assert out == packet
        assert router.six.hosts[packet[24:40]] == router.target
        assert TCP not in layer or IPv6ExtHdrFragment in layer
    elif verdict == Verdict.TO_PROXY:
        # Only the destination changed, to its owner's alias, and a valid checksum stayed valid.
        assert IPv6ExtHdrFragment not in layer
        assert packet[24:40] in router.six.hosts
        assert out[24:40] == invert(packet[24:40])
        assert out[:24] == packet[:24] and len(out) == len(packet)
        if packet[6] == 6:
            assert tcp6_checksum_valid(out) == tcp6_checksum_valid(packet)
    elif verdict == Verdict.NEW_CONNECTION:
        assert len(router.key) == 36 and router.key[:32] == packet[8:40]


@FUZZ
@given(packet=ipv6_packets())
def test_ipv6_from_the_proxy_is_delivered_only_from_an_alias_to_a_host(packet):
    router = make_router()
    verdict, counted, out = feed(router, "from_proxy", packet)
    assert verdict in (Verdict.DROP, Verdict.DELIVER)
    if verdict == Verdict.DROP:
        assert counted == 1
    else:
        assert packet[6] == 6 and packet[8:24] == invert(out[8:24]) and out[8:24] in router.six.hosts
        assert router.six.hosts[out[24:40]] == router.target
        assert tcp6_checksum_valid(out) == tcp6_checksum_valid(packet)


# --- UDP, as the router hands it to a recording or replaying session ------------------


@st.composite
def udp_packets(draw) -> bytes:
    """IPv4/UDP between hosts, or an ICMP error quoting one, with their headers mutated."""
    src, dst = draw(st.sampled_from(HOSTS)), draw(st.sampled_from(HOSTS))
    datagram = IP(src=src, dst=dst) / UDP(
        sport=draw(st.integers(0, 65535)), dport=draw(st.integers(0, 65535))
    ) / draw(st.binary(max_size=64))
    if draw(st.booleans()):
        quoted = bytes(datagram)[: draw(st.integers(0, 40))]
        packet = bytearray(
            bytes(IP(src=dst, dst=src) / ICMP(type=3, code=draw(st.sampled_from([1, 3, 3, 13]))) / quoted)
        )
        if len(packet) > 28 and draw(st.booleans()):
            packet[28] = draw(st.integers(0, 255))  # the quoted header's version and length
    else:
        packet = bytearray(bytes(datagram))
    mutation = draw(st.sampled_from(["none", "udp length", "udp checksum", "truncate", "ip length", "byte"]))
    if mutation == "udp length" and len(packet) >= 28:
        struct.pack_into("!H", packet, 24, draw(st.integers(0, 65535)))
    elif mutation == "udp checksum" and len(packet) >= 28:
        struct.pack_into("!H", packet, 26, draw(st.integers(0, 65535)))
    elif mutation == "truncate":
        packet = packet[: draw(st.integers(0, len(packet)))]
    elif mutation == "ip length" and len(packet) >= 4:
        struct.pack_into("!H", packet, 2, draw(st.integers(0, 65535)))
    elif mutation == "byte" and packet:
        packet[draw(st.integers(0, len(packet) - 1))] = draw(st.integers(0, 255))
    return bytes(packet)


@st.composite
def udp6_packets(draw) -> bytes:
    """IPv6/UDP between the sandbox's addresses and others, its lengths mutated."""
    packet = bytearray(
        bytes(
            IPv6(src=draw(st.sampled_from(ADDRESSES6)), dst=draw(st.sampled_from(ADDRESSES6)))
            / UDP(sport=draw(st.integers(0, 65535)), dport=draw(st.integers(0, 65535)))
            / draw(st.binary(max_size=64))
        )
    )
    mutation = draw(st.sampled_from(["none", "udp length", "payload length", "truncate"]))
    if mutation == "udp length":
        struct.pack_into("!H", packet, 44, draw(st.integers(0, 65535)))
    elif mutation == "payload length":
        struct.pack_into("!H", packet, 4, draw(st.integers(0, 65535)))
    elif mutation == "truncate":
        packet = packet[: draw(st.integers(0, len(packet)))]
    return bytes(packet)


udp_anything = st.one_of(udp_packets(), udp_packets(), udp6_packets(), packets)


@FUZZ
@given(udp_tap=st.booleans(), packet=udp_anything)
def test_udp_gets_a_known_verdict_and_is_never_resized(udp_tap, packet):
    router = make_router(udp_tap)
    verdict, counted, out = feed(router, "from_host", packet)
    assert verdict in VERDICTS
    if verdict == Verdict.DROP:
        assert counted == 1
    if verdict in (Verdict.DELIVER, Verdict.UDP):
        assert len(out) == len(packet)
    if verdict == Verdict.UDP:
        assert udp_tap and out == packet  # handed over untouched, for the session to judge
        assert router.target in router.hosts.values()


@FUZZ
@given(packets=st.lists(udp_anything, max_size=12))
def test_replaying_exactly_what_was_recorded_finds_nothing(packets):
    """Whatever reaches a session as UDP is numbered, its refusals read, and the same traffic
    replayed against the recording (the server running) differs in nothing."""
    router = make_router(udp_tap=True)
    flows, steps, live = UdpFlows(), [], []
    for now, packet in enumerate(packets):
        verdict, _, out = feed(router, "from_host", packet)
        if verdict != Verdict.UDP:
            continue
        if is_udp(out):
            key, payload = udp_key_and_payload(out)
            _, datagram = flows.see_parsed(key, payload, float(now))
            steps.append(datagram)
            live.append((key, payload))
        elif (key := refused_key(out)) is not None and (refusal := flows.refused(key, float(now))) is not None:
            steps.append(refusal)
    replays = UdpReplays.of({flow.flow: flow for flow in flows.flows}, steps)
    for now, (key, payload) in enumerate(live):
        source, destination = decode_key(key)
        found = replays.find(source, destination)
        if found is None:
            replay = replays.bind(source, destination, payload, server_live=True, now=float(now))
            found = (replay, Direction.C2S)
        replay, direction = found
        replay.live_datagram(direction, payload, float(now))
        replay.poll(float(now))
    assert replays.finish() == []
