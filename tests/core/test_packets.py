"""Checksums and reply packets built on raw bytes, checked against scapy and RFC 1071 arithmetic."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, IPOption_NOP, IPOption_Router_Alert
from scapy.utils import checksum as scapy_checksum

from pytest_netplayground.core.packets import (
    ICMP_HOST_UNREACHABLE,
    ICMP_PORT_UNREACHABLE,
    PROTO_TCP,
    adjust_checksum,
    checksum,
    checksum_delta,
    make_icmp_unreachable,
    make_tcp_reset_reply,
)

CLIENT = "10.0.0.1"
SERVER = "10.0.0.2"


def folded_sum(data: bytes) -> int:
    """One's-complement sum of 16-bit words, as a receiver computes it: 0xFFFF means valid."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ones_add(a: int, b: int) -> int:
    total = a + b
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def with_word(data: bytes | bytearray, offset: int, value: int) -> bytearray:
    out = bytearray(data)
    struct.pack_into("!H", out, offset, value)
    return out


def word(data: bytes | bytearray, offset: int) -> int:
    return struct.unpack_from("!H", data, offset)[0]


def rebuilt(packet: bytes) -> IP:
    """``packet`` parsed by scapy, then rebuilt with every checksum recomputed by scapy."""
    parsed = IP(packet)
    del parsed.chksum
    for layer in (TCP, ICMP):
        if layer in parsed:
            del parsed[layer].chksum
    return IP(bytes(parsed))


addresses = st.binary(min_size=4, max_size=4)


@st.composite
def ip_headers(draw) -> bytearray:
    """A random IPv4 header (with options) whose checksum field is zero."""
    ihl = draw(st.integers(5, 15))
    rest = draw(st.binary(min_size=ihl * 4 - 1, max_size=ihl * 4 - 1))
    return with_word(bytes([0x40 | ihl]) + rest, 10, 0)


@st.composite
def rewrites(draw) -> tuple[int, bytes]:
    """Which address to rewrite (offset 12: source, 16: destination) and its new value."""
    return draw(st.sampled_from([12, 16])), draw(addresses)


def rewrite_incrementally(packet: bytearray, offset: int, new: bytes, checksum_at: int) -> int:
    delta = checksum_delta(bytes(packet[offset : offset + 4]), new)
    packet[offset : offset + 4] = new
    return adjust_checksum(word(packet, checksum_at), delta)


# --- checksum --------------------------------------------------------------------


@given(st.binary(max_size=2000))
def test_checksum_agrees_with_scapy(data):
    assert checksum(data) == scapy_checksum(data)


@given(st.binary(max_size=200).filter(lambda d: any(d)))
def test_checksum_stored_in_the_data_makes_it_sum_to_ffff(data):
    data = bytes(data) + (b"\0" if len(data) % 2 else b"")
    assert folded_sum(data + struct.pack("!H", checksum(data))) == 0xFFFF


# --- incremental updates (RFC 1624) ------------------------------------------------


@given(ip_headers(), rewrites())
def test_incremental_ip_checksum_update_equals_full_recomputation(header, rewrite):
    offset, new = rewrite
    header = with_word(header, 10, checksum(header))
    updated = rewrite_incrementally(header, offset, new, 10)
    assert updated == checksum(with_word(header, 10, 0))


@given(ip_headers(), rewrites())
def test_incremental_ip_checksum_update_leaves_a_header_a_receiver_accepts(header, rewrite):
    offset, new = rewrite
    header = with_word(header, 10, checksum(header))
    header = with_word(header, 10, rewrite_incrementally(header, offset, new, 10))
    assert folded_sum(header) == 0xFFFF


@given(
    src=addresses,
    dst=addresses,
    segment=st.binary(min_size=20, max_size=300),
    new=addresses,
    which=st.sampled_from(["src", "dst"]),
)
def test_incremental_tcp_checksum_update_equals_full_recomputation(src, dst, segment, new, which):
    def tcp_checksum(src: bytes, dst: bytes, segment: bytes) -> int:
        pseudo = src + dst + struct.pack("!BBH", 0, PROTO_TCP, len(segment))
        return checksum(pseudo + with_word(segment, 16, 0))

    segment = with_word(segment, 16, tcp_checksum(src, dst, segment))
    old = src if which == "src" else dst
    updated = adjust_checksum(word(segment, 16), checksum_delta(old, new))
    if which == "src":
        src = new
    else:
        dst = new
    assert updated == tcp_checksum(src, dst, segment)


def header_summing_to_ffff(header: bytearray) -> bytearray:
    """``header`` with its identification field adjusted so that its words sum to 0xFFFF."""
    gap = 0xFFFF - folded_sum(with_word(header, 10, 0))
    return with_word(header, 4, ones_add(word(header, 4), gap))


@given(ip_headers(), rewrites())
def test_incremental_update_yields_zero_when_the_rewritten_header_sums_to_ffff(header, rewrite):
    offset, new = rewrite
    target = bytearray(header)
    target[offset : offset + 4] = new
    target = header_summing_to_ffff(target)
    header[4:6] = target[4:6]  # same identification before and after the rewrite
    header = with_word(header, 10, checksum(header))
    updated = rewrite_incrementally(header, offset, new, 10)
    assert updated == 0x0000 == checksum(target)
    assert folded_sum(with_word(header, 10, updated)) == 0xFFFF


@given(ip_headers(), rewrites(), st.sampled_from([0x0000, 0xFFFF]))
def test_incremental_update_from_a_zero_checksum_in_either_representation_stays_valid(
    header, rewrite, stored
):
    offset, new = rewrite
    header = with_word(header_summing_to_ffff(header), 10, stored)
    assert folded_sum(header) == 0xFFFF  # +0 and -0 are both a valid checksum here
    header = with_word(header, 10, rewrite_incrementally(header, offset, new, 10))
    assert folded_sum(header) == 0xFFFF


def test_incremental_update_can_yield_ffff_and_it_is_valid():
    # A header whose words sum to 0xFFFF, stored with the -0 checksum 0xFFFF, then its
    # source rewritten from 255.255.255.255 to 0.0.0.0: the delta is zero, so the stored
    # 0xFFFF is kept; a receiver still sums the header to 0xFFFF.
    header = bytearray(20)
    header[0] = 0x45
    header[12:16] = b"\xff\xff\xff\xff"
    header = with_word(header_summing_to_ffff(header), 10, 0xFFFF)
    header = with_word(header, 10, rewrite_incrementally(header, 12, b"\0\0\0\0", 10))
    assert word(header, 10) == 0xFFFF
    assert folded_sum(header) == 0xFFFF


@given(ip_headers(), addresses)
def test_rewriting_an_address_to_itself_keeps_the_checksum(header, address):
    header[16:20] = address
    header = with_word(header, 10, checksum(header))
    assert rewrite_incrementally(header, 16, address, 10) == word(header, 10)


# --- make_tcp_reset_reply ------------------------------------------------------------

SYN_CASES = {
    "syn": {"flags": "S", "payload": b""},
    "syn with payload": {"flags": "S", "payload": b"hello"},
    "syn fin": {"flags": "SF", "payload": b""},
    "syn fin with payload": {"flags": "SF", "payload": b"hello, world"},
}


def syn_packet(flags: str = "S", payload: bytes = b"", seq: int = 1000, ip_options: bool = False) -> bytes:
    options = [IPOption_NOP(), IPOption_Router_Alert()] if ip_options else []
    tcp = TCP(sport=40000, dport=80, flags=flags, seq=seq, options=[("MSS", 1460), ("WScale", 7)])
    return bytes(IP(src=CLIENT, dst=SERVER, options=options) / tcp / payload)


@pytest.fixture(params=list(SYN_CASES), ids=list(SYN_CASES))
def syn_case(request):
    return SYN_CASES[request.param]


def test_reset_reply_goes_from_the_syn_destination_back_to_its_source(syn_case):
    reply = IP(make_tcp_reset_reply(syn_packet(**syn_case)))
    assert (reply.src, reply[TCP].sport) == (SERVER, 80)
    assert (reply.dst, reply[TCP].dport) == (CLIENT, 40000)


def test_reset_reply_is_rst_ack_with_sequence_zero(syn_case):
    reply = IP(make_tcp_reset_reply(syn_packet(**syn_case)))
    assert reply[TCP].flags == "RA"
    assert reply[TCP].seq == 0


def test_reset_reply_acknowledges_the_syn_its_payload_and_its_fin(syn_case):
    reply = IP(make_tcp_reset_reply(syn_packet(seq=1000, **syn_case)))
    fin = 1 if "F" in syn_case["flags"] else 0
    assert reply[TCP].ack == 1000 + 1 + len(syn_case["payload"]) + fin


def test_reset_reply_checksums_equal_scapy_recomputed_ones(syn_case):
    raw = make_tcp_reset_reply(syn_packet(**syn_case))
    reply, again = IP(raw), rebuilt(raw)
    assert reply.chksum == again.chksum
    assert reply[TCP].chksum == again[TCP].chksum


def test_reset_reply_carries_no_payload(syn_case):
    reply = IP(make_tcp_reset_reply(syn_packet(**syn_case)))
    assert reply.len == 40
    assert bytes(reply[TCP].payload) == b""


def test_reset_reply_reads_past_ip_options_of_the_syn():
    reply = IP(make_tcp_reset_reply(syn_packet(payload=b"abc", seq=7, ip_options=True)))
    assert (reply[TCP].sport, reply[TCP].dport, reply[TCP].ack) == (80, 40000, 7 + 1 + 3)


@given(seq=st.integers(0, 2**32 - 1), payload=st.binary(max_size=64))
def test_reset_reply_acknowledgement_wraps_around_the_sequence_space(seq, payload):
    reply = IP(make_tcp_reset_reply(syn_packet(seq=seq, payload=payload)))
    assert reply[TCP].ack == (seq + 1 + len(payload)) % 2**32


# --- make_icmp_unreachable -------------------------------------------------------------


def datagram(ip_options: bool = False, payload: bytes = b"0123456789abcdef") -> bytes:
    options = [IPOption_NOP(), IPOption_Router_Alert()] if ip_options else []
    return bytes(IP(src=CLIENT, dst="10.0.0.200", options=options) / TCP(sport=40000, dport=80) / payload)


@pytest.mark.parametrize("ip_options", [False, True], ids=["plain header", "header with options"])
def test_icmp_unreachable_quotes_the_original_header_and_8_bytes(ip_options):
    original = datagram(ip_options)
    ihl = (original[0] & 0x0F) * 4
    reply = IP(make_icmp_unreachable(original))
    assert bytes(reply[ICMP].payload) == original[: ihl + 8]


def test_icmp_unreachable_quotes_the_whole_packet_when_shorter_than_header_plus_8():
    original = bytes(IP(src=CLIENT, dst="10.0.0.200", proto=17) / b"abc")
    raw = make_icmp_unreachable(original)
    assert raw[28:] == original
    assert folded_sum(raw[20:]) == 0xFFFF


@pytest.mark.parametrize("code", [ICMP_HOST_UNREACHABLE, ICMP_PORT_UNREACHABLE])
def test_icmp_unreachable_is_type_3_with_the_code_asked_for(code):
    reply = IP(make_icmp_unreachable(datagram(), code))
    assert (reply[ICMP].type, reply[ICMP].code) == (3, code)


def test_icmp_unreachable_defaults_to_host_unreachable():
    assert IP(make_icmp_unreachable(datagram()))[ICMP].code == ICMP_HOST_UNREACHABLE == 1


def test_icmp_unreachable_goes_from_the_original_destination_to_its_source():
    reply = IP(make_icmp_unreachable(datagram()))
    assert (reply.src, reply.dst) == ("10.0.0.200", CLIENT)


@pytest.mark.parametrize("ip_options", [False, True], ids=["plain header", "header with options"])
def test_icmp_unreachable_checksums_are_valid(ip_options):
    raw = make_icmp_unreachable(datagram(ip_options))
    reply, again = IP(raw), rebuilt(raw)
    assert reply.chksum == again.chksum
    assert reply[ICMP].chksum == again[ICMP].chksum
    assert folded_sum(raw[:20]) == folded_sum(raw[20:]) == 0xFFFF
    assert struct.unpack_from("!H", raw, 2)[0] == len(raw)


def test_icmp_unreachable_accepts_a_memoryview():
    original = datagram()
    buf = bytearray(original) + bytearray(100)
    assert make_icmp_unreachable(memoryview(buf)[: len(original)]) == make_icmp_unreachable(original)
