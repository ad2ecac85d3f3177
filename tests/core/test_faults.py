"""The faults' value types, the per-link shaper and the sandbox's fault table, with no I/O."""

from __future__ import annotations

import math
import random

import pytest

from pytest_netplayground.core.fault_spec import (
    LinkDirection,
    fault_specs,
    flags_to_faults,
    parse_link,
    seed,
)
from pytest_netplayground.core.fault_table import ANY, PARTITIONED, FaultTable
from pytest_netplayground.core.faults import (
    Distribution,
    GilbertElliott,
    LinkFaults,
    duration,
    probability,
    rate,
)
from pytest_netplayground.core.packets import make_udp_packet
from pytest_netplayground.core.shaper import LOSS, QUEUE_FULL, LinkShaper, flip_byte
from pytest_netplayground.errors import ConfigError


def shaper(seed: int = 1, **faults) -> LinkShaper:
    return LinkShaper(LinkFaults(**faults), random.Random(seed))


def binomial_band(n: int, p: float, sigmas: float = 5.0) -> tuple[float, float]:
    spread = sigmas * math.sqrt(n * p * (1 - p))
    return n * p - spread, n * p + spread


# -- units and validation -------------------------------------------------------------


@pytest.mark.parametrize(
    "text, seconds",
    [(0.05, 0.05), ("50ms", 0.05), ("0.2s", 0.2), ("300us", 0.0003), ("2", 2.0), (" 10 ms ", 0.01)],
)
def test_durations_take_units(text, seconds):
    assert duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text, bytes_per_second",
    [(1_250_000, 1_250_000), ("10mbit", 1_250_000), ("1.25MB", 1_250_000), ("64kB/s", 64_000), ("8bit", 1)],
)
def test_rates_take_units(text, bytes_per_second):
    assert rate(text) == pytest.approx(bytes_per_second)


def test_probabilities_take_percentages():
    assert probability("2%") == pytest.approx(0.02)
    assert probability(0.3) == 0.3


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("latency", -1, "latency: expected a time of 0 or more"),
        ("latency", "fast", "latency: expected a time"),
        ("loss", 1.5, "loss: expected a probability"),
        ("loss", "150%", "loss: expected a probability"),
        ("rate", 0, "rate: expected a rate above 0"),
        ("rate", "10 furlongs", "rate: expected a rate"),
        ("distribution", "pareto", "distribution: expected one of uniform, normal"),
        ("corrupt", True, "corrupt: expected a probability"),
    ],
)
def test_bad_fault_values_name_the_fault(field, value, words):
    with pytest.raises(ConfigError, match=words):
        LinkFaults(**{field: value})


def test_unknown_fault_is_named():
    with pytest.raises(ConfigError, match="unknown fault 'latncy'"):
        fault_specs({"h1-h2": {"latncy": 0.05}})


def test_links_are_parsed_with_their_direction():
    assert parse_link("h1-h2") == ("h1", "h2", LinkDirection.BOTH)
    assert parse_link("10.0.0.1->10.0.0.2") == ("10.0.0.1", "10.0.0.2", LinkDirection.A_TO_B)
    assert parse_link("web-1<->db") == ("web-1", "db", LinkDirection.BOTH)
    assert parse_link("h3") == ("h3", "*", LinkDirection.BOTH)
    with pytest.raises(ConfigError, match="ambiguous"):
        parse_link("web-1-db")
    with pytest.raises(ConfigError, match="two different hosts"):
        parse_link("h1-h1")


def test_settings_and_flags_give_the_same_specs():
    from_flags = fault_specs(flags_to_faults({"latency": ["h1-h2=50ms"], "loss": ["h1-h2=2%"]}))
    from_dict = fault_specs({"h1-h2": {"latency": 0.05, "loss": 0.02}})
    from_list = fault_specs([{"link": ["h1", "h2"], "latency": "50ms", "loss": "2%"}])
    assert from_flags == from_dict == from_list
    (spec,) = from_dict
    assert spec.pairs() == [("h1", "h2"), ("h2", "h1")]
    one_way = fault_specs({"h1-h2": {"latency": 0.05, "direction": "b->a"}})
    assert one_way[0].pairs() == [("h2", "h1")]
    with pytest.raises(ConfigError, match="LINK=VALUE"):
        flags_to_faults({"latency": ["50ms"]})
    with pytest.raises(ConfigError, match="expected a seed"):
        seed("-3")


# -- the shaper -------------------------------------------------------------------------


def test_latency_delays_every_packet_by_it():
    link = shaper(latency=0.05)
    for i in range(10):
        reason, deliveries = link.decide(100, now=i * 0.001)
        assert reason is None
        assert deliveries == ((pytest.approx(i * 0.001 + 0.05), None),)


@pytest.mark.parametrize("distribution", list(Distribution))
def test_jitter_never_reorders_packets(distribution):
    link = shaper(latency=0.05, jitter=0.04, distribution=distribution)
    arrivals = [link.decide(100, now=i * 0.001)[1][0][0] for i in range(2000)]
    assert arrivals == sorted(arrivals)
    assert len(set(arrivals)) > 100, "jitter made no difference"
    assert min(a - i * 0.001 for i, a in enumerate(arrivals)) >= 0


def test_reorder_lets_some_packets_overtake():
    link = shaper(latency=0.05, reorder=0.25)
    arrivals = [link.decide(100, now=i * 0.001)[1][0][0] for i in range(1000)]
    overtaking = sum(1 for i in range(1, len(arrivals)) if arrivals[i] < arrivals[i - 1])
    low, high = binomial_band(999, 0.25 * 0.75)
    assert low <= overtaking <= high


def test_token_bucket_holds_the_rate_over_simulated_time():
    link = shaper(rate=10_000, queue=10**9)
    # Offered: 1000 packets of 1000 bytes in 1 s (1 MB/s), ten times the rate.
    departures = [link.decide(1000, now=i * 0.001)[1][0][0] for i in range(1000)]
    assert departures[-1] == pytest.approx(100.0, rel=0.01)  # 1 MB at 10 kB/s
    assert departures == sorted(departures)


def test_token_bucket_lets_a_burst_through_then_paces():
    link = shaper(rate=1000, burst=3000, queue=10**9)
    departures = [link.decide(1000, now=0.0)[1][0][0] for _ in range(5)]
    assert departures == pytest.approx([0.0, 0.0, 0.0, 1.0, 2.0])


def test_a_full_queue_drops_at_the_tail():
    link = shaper(rate=1000, queue=5000)
    reasons = [link.decide(1000, now=0.0)[0] for _ in range(10)]
    # 5000 bytes of queue: five packets wait for the token bucket, the rest are dropped.
    assert reasons[:5] == [None] * 5
    assert set(reasons[5:]) == {QUEUE_FULL}
    # The queue drains with time: a packet two seconds later fits again.
    assert link.decide(1000, now=2.0)[0] is None


def test_loss_rate_lies_in_the_binomial_band():
    link = shaper(seed=7, loss=0.1)
    n = 20_000
    lost = sum(link.decide(100, now=i * 1e-4)[0] == LOSS for i in range(n))
    low, high = binomial_band(n, 0.1)
    assert low <= lost <= high


def _burst_lengths(drops: list[bool]) -> list[int]:
    bursts, run = [], 0
    for dropped in drops:
        if dropped:
            run += 1
        elif run:
            bursts.append(run)
            run = 0
    return bursts


def test_gilbert_elliott_loses_in_bursts():
    n = 50_000
    bursty = shaper(seed=3, gemodel=GilbertElliott(p=0.02, r=0.25))
    drops = [bursty.decide(100, now=i)[0] == LOSS for i in range(n)]
    # Stationary share of the bad state: p / (p + r); mean burst 1 / r = 4 packets.
    share = sum(drops) / n
    assert share == pytest.approx(0.02 / 0.27, rel=0.15)
    bursts = _burst_lengths(drops)
    assert sum(bursts) / len(bursts) == pytest.approx(4.0, rel=0.15)
    # Independent loss at the same rate has bursts of about 1 / (1 - share).
    flat = shaper(seed=3, loss=share)
    flat_bursts = _burst_lengths([flat.decide(100, now=i)[0] == LOSS for i in range(n)])
    assert sum(flat_bursts) / len(flat_bursts) < 1.2


def test_duplicate_and_corrupt():
    link = shaper(seed=5, duplicate=0.5, corrupt=0.5)
    outcomes = [link.decide(100, now=float(i))[1] for i in range(2000)]
    doubles = sum(len(d) == 2 for d in outcomes)
    flipped = sum(d[0][1] is not None for d in outcomes)
    for count in (doubles, flipped):
        low, high = binomial_band(2000, 0.5)
        assert low <= count <= high
    assert all(d[-1][1] is None for d in outcomes if len(d) == 2), "only one copy is corrupted"


def test_same_seed_same_decisions_other_seed_others():
    def run(s):
        link = shaper(seed=s, loss=0.2, latency=0.01, jitter=0.005, duplicate=0.1)
        return [link.decide(100, now=i * 0.001) for i in range(500)]

    assert run(11) == run(11)
    assert run(11) != run(12)


# -- the table -----------------------------------------------------------------------------


def test_table_is_inactive_until_a_fault_is_set():
    table = FaultTable(seed=1)
    assert not table.active
    assert table.decide(0, 1, 100, 0.0) is None
    table.set(0, 1, LinkFaults(latency=0.01))
    assert table.active
    assert table.decide(0, 1, 100, 0.0) == ((pytest.approx(0.01), None),)
    assert table.decide(1, 0, 100, 0.0) is None, "the other direction is not faulty"
    table.set(0, 1, LinkFaults())
    assert not table.active


def test_one_host_against_all_others():
    table = FaultTable(seed=1)
    table.set(2, ANY, LinkFaults(latency=0.01))
    table.set(ANY, 2, LinkFaults(latency=0.02))
    assert table.decide(2, 0, 1, 0.0)[0][0] == pytest.approx(0.01)
    assert table.decide(1, 2, 1, 0.0)[0][0] == pytest.approx(0.02)
    assert table.decide(0, 1, 1, 0.0) is None


def test_partition_drops_both_ways_until_healed():
    table = FaultTable(seed=1)
    ident = table.partition(frozenset({0}), frozenset({1, 2}))
    assert table.active
    assert table.decide(0, 1, 100, 0.0) == ()
    assert table.decide(2, 0, 100, 0.0) == ()
    assert table.decide(1, 2, 100, 0.0) is None, "hosts on the same side still talk"
    assert table.dropped[PARTITIONED] == 2
    table.heal(ident)
    assert not table.active
    assert table.decide(0, 1, 100, 0.0) is None
    with pytest.raises(ConfigError, match="both sides"):
        table.partition(frozenset({0}), frozenset({0, 1}))


def test_table_seeds_each_link_on_its_own():
    def drops(traffic_on_other_link: bool) -> list:
        table = FaultTable(seed=99)
        table.set(0, 1, LinkFaults(loss=0.5))
        table.set(1, 0, LinkFaults(loss=0.5))
        out = []
        for _i in range(200):
            if traffic_on_other_link:
                table.decide(1, 0, 100, 0.0)
            out.append(table.decide(0, 1, 100, 0.0))
        return out

    assert drops(False) == drops(True)


# -- corruption --------------------------------------------------------------------------


def _udp_packet(payload: bytes) -> bytearray:
    return bytearray(make_udp_packet(bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 1000, 2000, payload))


def test_flip_byte_hits_the_payload_only():
    packet = _udp_packet(b"hello world")
    original = bytes(packet)
    offset = flip_byte(packet, len(packet), 0.5)
    assert 28 <= offset < len(packet)
    assert packet[offset] == original[offset] ^ 0xFF
    assert packet[:28] == original[:28]
    empty = _udp_packet(b"")
    offset = flip_byte(empty, len(empty), 0.5)
    assert offset == 20 + 7, "no payload: the UDP checksum is flipped"


# -- the cassette header ------------------------------------------------------------------


def test_cassette_header_lists_faults_and_older_headers_still_read():
    from pytest_netplayground.core.codec import encode_header
    from pytest_netplayground.core.decoding import decode_record
    from pytest_netplayground.core.events import Header

    header = Header("10.0.0.0/24", (), 1.0, "x", faults=("h1<->h2: latency=0.05",), fault_seed=7)
    line = encode_header(header)
    assert decode_record(line) == header
    plain = encode_header(Header("10.0.0.0/24", (), 1.0, "x"))
    assert b"fault" not in plain
    assert decode_record(plain).faults == ()
    from pytest_netplayground.errors import CassetteFormatError

    with pytest.raises(CassetteFormatError, match='"faults"'):
        decode_record(line.replace(b'["h1<->h2: latency=0.05"]', b"[3]"))
