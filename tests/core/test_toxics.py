"""The decisions of toxics on a connection's byte stream, without sockets."""

from __future__ import annotations

import random

import pytest

from pytest_netplayground import ConfigError
from pytest_netplayground.core.toxics import EOF, RESET, Slicer, Toxics, ToxicStream, toxics


def test_a_clear_stream_is_idle_and_passes_bytes_whole():
    stream = ToxicStream()
    assert stream.idle
    stream.push(b"hello")
    assert stream.pull(0.0) == ([b"hello"], None)


def test_stall_holds_bytes_and_eof_until_cleared():
    stream = ToxicStream(Toxics(stall=True))
    stream.push(b"abc")
    stream.push_eof()
    assert stream.pull(0.0) == ([], None)
    assert stream.held == 3 and not stream.idle
    stream.set(Toxics())
    assert stream.idle is False, "the end of file is still to go"
    assert stream.pull(1.0) == ([b"abc", EOF], None)


def test_limit_data_lets_n_bytes_through_then_resets():
    stream = ToxicStream(Toxics(limit_data=5))
    stream.push(b"abc")
    assert stream.pull(0.0) == ([b"abc"], None)
    stream.push(b"defgh")
    assert stream.pull(0.0) == ([b"de", RESET], None)
    assert stream.dropped == 3
    stream.push(b"more")
    assert stream.pull(0.0) == ([], None)


def test_limit_of_exactly_what_was_sent_resets_at_once():
    stream = ToxicStream(Toxics(limit_data=3))
    stream.push(b"abc")
    assert stream.pull(0.0) == ([b"abc", RESET], None)


def test_slicer_without_delay_cuts_pieces_in_order():
    stream = ToxicStream(Toxics(slicer=4))
    stream.push(b"0123456789")
    out, wake = stream.pull(0.0)
    assert out == [b"0123", b"4567", b"89"] and wake is None


def test_slicer_with_delay_asks_to_be_pulled_again():
    stream = ToxicStream(Toxics(slicer=Slicer(3, "10ms")))
    stream.push(b"abcdefg")
    stream.push_eof()
    assert stream.pull(0.0) == ([b"abc"], 0.01)
    assert stream.pull(0.005) == ([], 0.01)
    assert stream.pull(0.01) == ([b"def"], 0.02)
    assert stream.pull(0.02) == ([b"g", EOF], None)


def test_slicer_variation_is_seeded_and_keeps_every_byte():
    def pieces(seed):
        stream = ToxicStream(Toxics(slicer=(10, 0, 4)), random.Random(seed))
        stream.push(bytes(range(200)))
        return stream.pull(0.0)[0]

    first = pieces(1)
    assert b"".join(first) == bytes(range(200))
    assert all(6 <= len(piece) <= 14 for piece in first[:-1])
    assert len({len(piece) for piece in first}) > 1
    assert pieces(1) == first


def test_half_close_ends_the_direction_and_drops_later_bytes():
    stream = ToxicStream()
    stream.push(b"before")
    stream.close()
    stream.push(b"after")
    assert stream.pull(0.0) == ([b"before", EOF], None)
    assert stream.dropped == 5


def test_bad_toxics_are_named():
    with pytest.raises(ConfigError, match="unknown toxic 'stal'"):
        toxics({"stal": True})
    with pytest.raises(ConfigError, match="limit_data: expected a whole number"):
        Toxics(limit_data=-1)
    with pytest.raises(ConfigError, match="slicer size"):
        Toxics(slicer=0)
    with pytest.raises(ConfigError, match="slicer delay"):
        Toxics(slicer=(3, "soon"))
    with pytest.raises(ConfigError, match="slicer variation: must be below"):
        Slicer(3, 0, 3)


def test_settings_and_flags_give_toxics_per_link():
    import argparse

    from pytest_netplayground.cli.fault_options import add_fault_options, fault_settings
    from pytest_netplayground.core.fault_spec import fault_specs

    (spec,) = fault_specs({"h1->h2": {"limit_data": 1000, "slicer": "64,1ms", "latency": "5ms"}})
    assert spec.toxics == Toxics(limit_data=1000, slicer=Slicer(64, 0.001))
    assert spec.faults.latency == 0.005
    assert spec.describe() == "h1->h2: latency=0.005 limit_data=1000 slicer=(64, 0.001, 0)"
    parser = argparse.ArgumentParser()
    add_fault_options(parser)
    (flagged,), _ = fault_settings(parser.parse_args(["--limit-data", "h1-h2=300", "--slicer", "h1-h2=8"]))
    assert flagged.toxics == Toxics(limit_data=300, slicer=Slicer(8))
    assert flagged.faults.is_clear
    with pytest.raises(ConfigError, match="link 'h1-h2': limit_data: expected a whole number"):
        fault_specs({"h1-h2": {"limit_data": "lots"}})
