"""Reassembling captured TCP connections into cassette events, without files or sockets."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_netplayground.core.capture_decode import TCP, UDP, CapturedPacket
from pytest_netplayground.core.capture_flows import CaptureFlows
from pytest_netplayground.core.capture_stream import server_is_first
from pytest_netplayground.core.events import (
    Closed,
    ConnectionOpened,
    Data,
    Datagram,
    Direction,
    HalfClosed,
    Outcome,
    Reset,
    UdpFlow,
)
from pytest_netplayground.core.tcp_reassembly import HalfStream
from pytest_netplayground.core.turns import split_turns
from tests.support.captures import (
    CLIENT,
    CLIENT6,
    REQUEST,
    RESPONSE,
    SERVER,
    SERVER6,
    Segment,
    conversation,
    per_direction,
)

_FLAGS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10}


def captured(segment: Segment) -> CapturedPacket:
    flags = sum(_FLAGS[f] for f in segment.flags)
    src, dst = segment.src, segment.dst
    return CapturedPacket(segment.t, TCP, src[0], src[1], dst[0], dst[1], segment.payload, flags, segment.seq, segment.ack)


def run(segments, gap_mode="cut") -> tuple[list, CaptureFlows]:
    flows = CaptureFlows(gap_mode=gap_mode)
    events: list = []
    for segment in segments:
        events += flows.feed(captured(segment) if isinstance(segment, Segment) else segment)
    events += flows.finish()
    return events, flows


def http() -> list[Segment]:
    return conversation([("c2s", REQUEST), ("s2c", RESPONSE)])


def test_a_whole_exchange_becomes_the_recorded_conversation():
    events, flows = run(http())
    kinds = [type(e).__name__ for e in events if not isinstance(e, Data)]
    assert kinds == ["ConnectionOpened", "HalfClosed", "HalfClosed", "Closed"]
    [opened] = [e for e in events if isinstance(e, ConnectionOpened)]
    assert (opened.client.host, opened.client.port, opened.server.port) == (CLIENT[0], CLIENT[1], SERVER[1])
    assert opened.outcome is Outcome.ESTABLISHED
    turns = split_turns(events)
    assert [(turn.direction, turn.data) for turn in turns] == [(Direction.C2S, REQUEST), (Direction.S2C, RESPONSE)]
    assert events[0].t == pytest.approx(0.001)  # relative to the first packet (the SYN at 0)
    assert [e.t for e in events] == sorted(e.t for e in events)
    [summary] = flows.summaries
    assert (summary.ending, summary.handshake, summary.retransmitted, summary.gaps) == ("closed", True, 0, [])


def test_reordered_retransmitted_and_duplicated_segments_give_the_same_bytes():
    segments = http()
    data = [i for i, s in enumerate(segments) if s.payload and s.src == SERVER]
    # The response's segments: the third first, then the rest, with a copy of two of them.
    a, b, c = data[0], data[1], data[2]
    shuffled = segments[:a] + [segments[c], segments[a], segments[b], segments[a], segments[c]] + segments[c + 1 :]
    events, flows = run(shuffled)
    assert per_direction(events) == {"c2s": REQUEST, "s2c": RESPONSE}
    [summary] = flows.summaries
    assert summary.retransmitted == 2
    assert summary.placed == 1
    assert summary.gaps == [] and summary.conflicts == []


def test_a_retransmission_with_other_bytes_keeps_the_first_copy_and_is_reported():
    segments = http()
    first = next(i for i, s in enumerate(segments) if s.payload and s.src == SERVER)
    original = segments[first]
    forged = Segment(original.t, original.src, original.dst, "PA", original.seq, original.ack, b"X" * len(original.payload))
    events, flows = run(segments[: first + 1] + [forged] + segments[first + 1 :])
    assert per_direction(events)["s2c"] == RESPONSE
    assert flows.summaries[0].conflicts == [(Direction.S2C, 0)]


@pytest.mark.parametrize("first_from", ["client", "server"])
def test_a_connection_joined_mid_way_guesses_the_client_from_the_ports(first_from):
    segments = conversation([("c2s", REQUEST), ("s2c", RESPONSE), ("c2s", b"next request")], handshake=False)
    start = next(i for i, s in enumerate(segments) if s.payload and s.src == (SERVER if first_from == "server" else CLIENT))
    events, flows = run(segments[start:])
    [opened] = [e for e in events if isinstance(e, ConnectionOpened)]
    assert (opened.client.port, opened.server.port) == (CLIENT[1], SERVER[1])
    expected_c2s = REQUEST + b"next request" if first_from == "client" else b"next request"
    assert per_direction(events) == {"c2s": expected_c2s, "s2c": RESPONSE}
    assert flows.summaries[0].handshake is False


def test_ports_decide_the_server():
    assert server_is_first(80, 40000) and not server_is_first(40000, 80)
    assert server_is_first(5432, 50000) and not server_is_first(50000, 5432)
    assert server_is_first(443, 80) is False  # two well-known ports: the lower one serves


def _drop_second_response_segment(segments):
    index = [i for i, s in enumerate(segments) if s.payload and s.src == SERVER][1]
    return segments[:index] + segments[index + 1 :], len(segments[index - 1].payload)


def test_a_gap_cuts_the_connection_where_the_bytes_are_missing():
    segments, offset = _drop_second_response_segment(http())
    events, flows = run(segments)
    assert per_direction(events) == {"c2s": REQUEST, "s2c": RESPONSE[:offset]}
    [summary] = flows.summaries
    [(direction, gap)] = summary.gaps
    assert (direction, gap.offset, gap.length, summary.ending) == (Direction.S2C, offset, 50, "cut")
    assert isinstance(events[-1], Closed)
    assert not any(isinstance(e, HalfClosed) for e in events)


def test_a_gap_can_be_skipped_to_keep_what_follows():
    segments, offset = _drop_second_response_segment(http())
    events, flows = run(segments, gap_mode="keep")
    assert per_direction(events) == {"c2s": REQUEST, "s2c": RESPONSE[:offset] + RESPONSE[offset + 50 :]}
    [summary] = flows.summaries
    assert [(d, g.offset, g.length) for d, g in summary.gaps] == [(Direction.S2C, offset, 50)]
    assert summary.ending == "closed"


def test_a_reset_is_recorded_from_the_side_that_sent_it():
    events, flows = run(conversation([("c2s", REQUEST), ("s2c", RESPONSE)], end="rst"))
    assert per_direction(events) == {"c2s": REQUEST, "s2c": RESPONSE}
    assert [type(e) for e in events[-2:]] == [Reset, Closed]
    assert events[-2].direction is Direction.S2C
    assert flows.summaries[0].ending == "reset"


def test_a_syn_answered_by_a_reset_is_a_refused_connection_and_one_never_answered_timed_out():
    syn = conversation([], end=None)[0]
    refusal = Segment(syn.t + 0.001, SERVER, CLIENT, "RA", 0, syn.seq + 1)
    other = Segment(syn.t + 0.002, CLIENT, (SERVER[0], 81), "S", 99, 0)
    events, _ = run([syn, refusal, other])
    outcomes = [(e.server.port, e.outcome) for e in events if isinstance(e, ConnectionOpened)]
    assert outcomes == [(80, Outcome.REFUSED), (81, Outcome.TIMED_OUT)]
    assert [type(e) for e in events] == [ConnectionOpened, ConnectionOpened]


def test_a_connection_still_open_when_the_capture_ends_is_closed_at_the_last_packet():
    segments = conversation([("c2s", REQUEST), ("s2c", RESPONSE)], end=None)
    events, flows = run(segments)
    assert per_direction(events) == {"c2s": REQUEST, "s2c": RESPONSE}
    assert isinstance(events[-1], Closed)
    assert events[-1].t == pytest.approx(segments[-1].t - segments[0].t, abs=1e-6)
    assert flows.summaries[0].ending == "truncated"


def test_ipv6_connections_import_as_ipv4_ones_do():
    events, _ = run(conversation([("c2s", REQUEST), ("s2c", RESPONSE)], client=CLIENT6, server=SERVER6))
    [opened] = [e for e in events if isinstance(e, ConnectionOpened)]
    assert str(opened.server) == "[2001:db8::7]:80"
    assert per_direction(events) == {"c2s": REQUEST, "s2c": RESPONSE}


def test_ports_used_again_make_a_second_connection():
    first = conversation([("c2s", b"one"), ("s2c", b"1")])
    second = conversation([("c2s", b"two"), ("s2c", b"2")], t0=first[-1].t + 1, isn=(5, 500))
    events, _ = run(first + second)
    assert [e.conn for e in events if isinstance(e, ConnectionOpened)] == [0, 1]
    assert per_direction(events, 1) == {"c2s": b"two", "s2c": b"2"}


def test_udp_datagrams_become_a_flow_whose_first_sender_is_the_client():
    a, b = ("192.0.2.5", 5353), ("192.0.2.7", 53)
    packets = [
        CapturedPacket(10.0, UDP, a[0], a[1], b[0], b[1], b"query"),
        CapturedPacket(10.5, UDP, b[0], b[1], a[0], a[1], b"answer"),
    ]
    events, flows = run(packets)
    assert [type(e) for e in events] == [UdpFlow, Datagram, Datagram]
    assert (events[0].client.port, events[0].server.port) == (5353, 53)
    assert [(e.direction, e.data, e.t) for e in events[1:]] == [
        (Direction.C2S, b"query", 0.0),
        (Direction.S2C, b"answer", 0.5),
    ]
    assert flows.udp_summaries[0].datagrams == 2


def test_a_stream_longer_than_the_sequence_space_is_placed_by_unwrapped_offsets():
    half = HalfStream(base=0xFFFF_FFF0)
    half.next = 5 * (1 << 32) + 100  # as if 20 GiB had been read already
    seq = (half.base + half.next) & 0xFFFF_FFFF
    assert half.add((seq + 3) & 0xFFFF_FFFF, b"def") == b""  # ahead of a hole
    assert half.add(seq, b"abc") == b"abcdef"
    assert half.next == 5 * (1 << 32) + 106
    assert half.add(seq, b"abc") == b"" and half.retransmitted == 1


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=400),
    cuts=st.lists(st.tuples(st.integers(0, 400), st.integers(1, 120)), min_size=0, max_size=30),
    seed=st.integers(0, 2**32 - 1),
    isn=st.integers(0, 2**32 - 1),
)
def test_any_permutation_and_duplication_of_a_streams_segments_reassembles_to_the_same_bytes(data, cuts, seed, isn):
    # Segments covering every byte (a partition) plus overlapping retransmissions cut anywhere.
    pieces = []
    start = 0
    rng = random.Random(seed)
    while start < len(data):
        size = rng.randint(1, 64)
        pieces.append((start, data[start : start + size]))
        start += size
    for offset, size in cuts:
        offset %= len(data)
        pieces.append((offset, data[offset : offset + size]))
    rng.shuffle(pieces)
    client_isn = isn
    syn = Segment(1.0, CLIENT, SERVER, "S", client_isn, 0)
    synack = Segment(1.001, SERVER, CLIENT, "SA", 900, (client_isn + 1) & 0xFFFFFFFF)
    segments = [syn, synack]
    for n, (offset, chunk) in enumerate(pieces):
        seq = (client_isn + 1 + offset) & 0xFFFFFFFF
        segments.append(Segment(1.01 + n / 1000, CLIENT, SERVER, "PA", seq, 901, chunk))
    fin_seq = (client_isn + 1 + len(data)) & 0xFFFFFFFF
    segments.append(Segment(2.0, CLIENT, SERVER, "FA", fin_seq, 901))
    segments.append(Segment(2.1, SERVER, CLIENT, "FA", 901, (fin_seq + 1) & 0xFFFFFFFF))
    events, flows = run(segments)
    assert per_direction(events) == {"c2s": data, "s2c": b""}
    assert flows.summaries[0].ending == "closed"
    assert flows.summaries[0].gaps == [] and flows.summaries[0].conflicts == []


_flag_sets = st.sampled_from(["S", "SA", "A", "PA", "FA", "RA", "R", "F", "PAF", "SF"])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            _flag_sets,
            st.integers(0, 2**32 - 1) | st.integers(0, 300),
            st.integers(0, 2**32 - 1) | st.integers(0, 300),
            st.binary(max_size=40),
        ),
        max_size=40,
    ),
    st.sampled_from(["cut", "keep"]),
)
def test_any_packets_at_all_give_well_formed_events_and_never_an_exception(packets, gap_mode):
    segments = [
        Segment(1.0 + n / 100, *((CLIENT, SERVER) if forward else (SERVER, CLIENT)), flags, seq, ack, payload)
        for n, (forward, flags, seq, ack, payload) in enumerate(packets)
    ]
    events, _ = run(segments, gap_mode)
    opened, closed = set(), set()
    for event in events:
        if isinstance(event, ConnectionOpened):
            assert event.conn == len(opened)
            opened.add(event.conn)
            continue
        assert event.conn in opened and event.conn not in closed
        if isinstance(event, Closed):
            closed.add(event.conn)
    established = {e.conn for e in events if isinstance(e, ConnectionOpened) and e.outcome is Outcome.ESTABLISHED}
    assert closed == established  # every connection ends, once
    assert [e.t for e in events] == sorted(e.t for e in events)


_VALID = bytes.fromhex(
    "450000310001000040067cc1c0000205c0000207"  # IPv4, 49 bytes, TCP, 192.0.2.5 -> 192.0.2.7
    "9c4000500000006400000000601020000000000001010101"  # TCP with 4 bytes of options
    "68656c6c6f"
)
_VALID6 = bytes.fromhex("60000000000d1140" + "20010db8" + "00" * 11 + "05" + "20010db8" + "00" * 11 + "07")


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([101, 229]),
    st.sampled_from([_VALID, _VALID6 + bytes.fromhex("00350035000d0000") + b"query"]),
    st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), max_size=6),
    st.integers(0, 90),
)
def test_any_damaged_frame_decodes_or_is_passed_over_without_an_exception(linktype, frame, flips, cut):
    from pytest_netplayground.core.capture_decode import decode_frame

    damaged = bytearray(frame)
    for at, value in flips:
        if at < len(damaged):
            damaged[at] = value
    decoded = decode_frame(linktype, bytes(damaged[:cut]), 0.0)
    assert decoded is None or decoded.proto in (TCP, UDP)
    if not flips and cut >= len(frame):
        assert decoded is not None and decoded.payload in (b"hello", b"query")
