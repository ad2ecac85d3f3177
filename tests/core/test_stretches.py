"""What a live side must still do before its turn is over."""

from pytest_netplayground.core.events import Direction
from pytest_netplayground.core.stretches import Needs, Stretches

C2S, S2C = Direction.C2S, Direction.S2C


def test_a_side_that_sent_nothing_of_its_turn_needs_bytes():
    s = Stretches()
    s.played(C2S, 10, closes=False)
    assert s.needs(C2S) is Needs.BYTES


def test_a_side_short_of_its_turn_is_over_once_quiet():
    s = Stretches()
    s.played(C2S, 10, closes=False)
    s.live_data(C2S, 4, now=1.0)
    assert s.needs(C2S) is Needs.QUIET
    assert s.quiet_since(C2S, since=0.5) == 1.0


def test_a_side_that_sent_its_count_needs_nothing_unless_it_was_recorded_closing():
    s = Stretches()
    s.played(C2S, 3, closes=False)
    s.live_data(C2S, 3, now=0.0)
    assert s.needs(C2S) is Needs.NOTHING
    s.played(C2S, 0, closes=True)
    assert s.needs(C2S) is Needs.QUIET
    s.live_end(C2S, now=0.1)
    assert s.needs(C2S) is Needs.NOTHING


def test_bytes_beyond_a_turn_count_toward_the_next_one():
    s = Stretches()
    s.played(C2S, 3, closes=False)
    s.live_data(C2S, 6, now=0.0)  # two requests at once
    s.played(S2C, 1, closes=False)  # the first answer
    s.played(C2S, 3, closes=False)  # the second recorded request
    assert s.needs(C2S) is Needs.NOTHING


def test_the_wait_is_said_in_words():
    s = Stretches()
    s.played(C2S, 10, closes=False)
    s.live_data(C2S, 4, now=0.0)
    assert s.waiting_for(C2S, "2 bytes s2c") == "10 bytes c2s from the client (4 so far) before replaying 2 bytes s2c"
