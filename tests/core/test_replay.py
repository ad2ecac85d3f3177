"""Replaying one recorded connection: pacing, stand-in mode, divergences, stalls, laziness."""

from __future__ import annotations

import itertools
import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_netplayground.core.divergence import (
    ByteMismatch,
    ExtraBytes,
    MissingBytes,
    MissingReset,
    Stall,
    UnexpectedReset,
)
from pytest_netplayground.core.events import (
    Closed,
    ConnectionOpened,
    Data,
    Direction,
    HalfClosed,
    Reset,
)
from pytest_netplayground.core.replay import (
    Abort,
    ConnectionReplay,
    Finished,
    Pacing,
    ReplayConfig,
    Send,
    ShutWrite,
)
from pytest_netplayground.errors import ConfigError

C2S, S2C = Direction.C2S, Direction.S2C
T0 = 1000.0  # recorded opening time; replays below start at another clock's START
START = 50.0
OPENED = ConnectionOpened(t=T0, conn=7, client=("10.0.0.2", 40000), server=("10.0.0.1", 80))

REQUEST = b"GET /index.html HTTP/1.1\r\nHost: example\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def data(t: float, direction: Direction, payload: bytes) -> Data:
    return Data(T0 + t, OPENED.conn, direction, payload)


def half_closed(t: float, direction: Direction) -> HalfClosed:
    return HalfClosed(T0 + t, OPENED.conn, direction)


def reset(t: float, direction: Direction) -> Reset:
    return Reset(T0 + t, OPENED.conn, direction)


def closed(t: float) -> Closed:
    return Closed(T0 + t, OPENED.conn)


def replay(events, *, pacing=Pacing.CAUSAL, server_live=True, **config) -> ConnectionReplay:
    events = list(events)
    return ConnectionReplay(
        OPENED,
        lambda: iter(events),
        config=ReplayConfig(pacing=pacing, **config),
        server_live=server_live,
        start=START,
        ordinal=2,
    )


def http_exchange():
    return [
        data(0.1, C2S, REQUEST),
        half_closed(0.2, C2S),
        data(0.5, S2C, RESPONSE),
        half_closed(0.6, S2C),
        closed(0.7),
    ]


def feed(r: ConnectionReplay, direction: Direction, payload: bytes, pieces=1, now=START) -> None:
    size = max(1, -(-len(payload) // pieces))
    for i in range(0, len(payload), size):
        r.live_data(direction, payload[i : i + size], now)


# -- configuration ------------------------------------------------------------


def test_config_defaults_to_causal_pacing_at_speed_one():
    assert ReplayConfig() == ReplayConfig(pacing=Pacing.CAUSAL, speed=1.0, stall_timeout=5.0)


def test_pacing_is_accepted_by_name():
    assert ReplayConfig(pacing=" Flood ").pacing is Pacing.FLOOD


def test_unknown_pacing_is_a_config_error_listing_the_choices():
    with pytest.raises(ConfigError, match=r"^pacing: expected one of recorded, flood, causal, got 'fastest'$"):
        ReplayConfig(pacing="fastest")


@pytest.mark.parametrize("speed", [0, -1.5, "fast", math.inf, math.nan, True])
def test_speed_must_be_a_finite_positive_number(speed):
    with pytest.raises(
        ConfigError, match="^speed: expected a finite number above 0, got " + re.escape(repr(speed)) + "$"
    ):
        ReplayConfig(speed=speed)


@pytest.mark.parametrize("timeout", [0, -1, "soon"])
def test_stall_timeout_must_be_positive(timeout):
    with pytest.raises(ConfigError, match="stall_timeout"):
        ReplayConfig(stall_timeout=timeout)


def test_infinite_stall_timeout_is_refused_since_no_replay_may_wait_for_ever():
    with pytest.raises(ConfigError, match="^stall_timeout: expected a finite number above 0, got 'inf'$"):
        ReplayConfig(stall_timeout="inf")


@pytest.mark.parametrize("settle", [0, -1, "soon", math.inf])
def test_settle_must_be_a_finite_positive_number(settle):
    with pytest.raises(ConfigError, match="settle"):
        ReplayConfig(settle=settle)


# -- flood --------------------------------------------------------------------


def test_flood_delivers_every_step_at_once_in_recorded_order():
    r = replay(http_exchange(), pacing=Pacing.FLOOD)
    assert r.poll(START) == [
        Send(C2S, REQUEST),
        ShutWrite(C2S),
        Send(S2C, RESPONSE),
        ShutWrite(S2C),
        Finished(),
    ]


def test_poll_after_finished_returns_nothing():
    r = replay(http_exchange(), pacing=Pacing.FLOOD)
    r.poll(START)
    assert r.finished
    assert r.poll(START + 1) == []
    assert r.next_deadline() is None


def test_end_of_steps_without_closed_finishes_the_script():
    r = replay([data(0.1, S2C, b"hi")], pacing=Pacing.FLOOD)
    assert r.poll(START) == [Send(S2C, b"hi"), Finished()]


def test_recorded_reset_is_replayed_as_an_abort_of_the_receiver():
    r = replay([data(0.1, S2C, b"x"), reset(0.2, S2C), closed(0.2)], pacing=Pacing.FLOOD)
    assert r.poll(START) == [Send(S2C, b"x"), Abort(S2C), Finished()]


def test_next_deadline_under_flood_is_already_due():
    r = replay(http_exchange(), pacing=Pacing.FLOOD)
    assert r.next_deadline() <= START


# -- recorded -----------------------------------------------------------------


def test_recorded_pacing_holds_a_step_until_its_deadline():
    r = replay([data(0.5, S2C, b"a")], pacing=Pacing.RECORDED)
    assert r.poll(START + 0.49) == []
    assert r.poll(START + 0.5) == [Send(S2C, b"a"), Finished()]


def test_recorded_next_deadline_is_the_exact_recorded_offset_from_start():
    r = replay([data(0.5, S2C, b"a"), data(1.25, S2C, b"b")], pacing=Pacing.RECORDED)
    assert r.next_deadline() == START + 0.5
    r.poll(START + 0.5)
    assert r.next_deadline() == START + 1.25


def test_recorded_deadlines_are_divided_by_speed():
    r = replay([data(0.5, S2C, b"a"), data(1.5, S2C, b"b")], pacing=Pacing.RECORDED, speed=2.0)
    assert r.next_deadline() == START + 0.25
    r.poll(START + 0.25)
    assert r.next_deadline() == START + 0.75


def test_recorded_deadlines_are_absolute_so_a_late_poll_does_not_shift_later_steps():
    events = [data(0.5, S2C, b"a"), data(1.0, S2C, b"b"), data(2.0, S2C, b"c")]
    r = replay(events, pacing=Pacing.RECORDED)
    assert r.poll(START + 1.9) == [Send(S2C, b"a"), Send(S2C, b"b")]
    assert r.next_deadline() == START + 2.0


def test_recorded_pacing_does_not_wait_for_live_bytes():
    r = replay(http_exchange(), pacing=Pacing.RECORDED)
    actions = r.poll(START + 0.5)
    assert Send(S2C, RESPONSE) in actions


# -- causal -------------------------------------------------------------------


def test_causal_server_greeting_is_delivered_immediately():
    greeting = b"220 mail.example ESMTP\r\n"
    r = replay([data(0.3, S2C, greeting), data(0.4, C2S, b"EHLO x\r\n")])
    assert r.poll(START) == [Send(S2C, greeting)]


def test_causal_response_waits_for_every_recorded_request_byte():
    r = replay(http_exchange()[:1] + [data(0.5, S2C, RESPONSE)], server_live=False)
    assert r.poll(START) == []
    r.live_data(C2S, REQUEST[:-1], START + 0.1)
    assert r.poll(START + 0.1) == []
    r.live_data(C2S, REQUEST[-1:], START + 0.2)
    assert r.poll(START + 0.2) == [Send(S2C, RESPONSE), Finished()]


def test_causal_waits_for_live_eof_when_the_recorded_client_had_half_closed():
    r = replay(http_exchange(), server_live=False)
    feed(r, C2S, REQUEST)
    assert r.poll(START) == []
    r.live_eof(C2S, START + 0.1)
    assert r.poll(START + 0.1) == [Send(S2C, RESPONSE), ShutWrite(S2C), Finished()]


def test_causal_live_reset_satisfies_a_recorded_half_close():
    r = replay(http_exchange(), server_live=False)
    feed(r, C2S, REQUEST)
    r.live_reset(C2S, START)
    assert Send(S2C, RESPONSE) in r.poll(START)


def test_causal_client_step_waits_for_the_live_server():
    greeting = b"SSH-2.0-x\r\n"
    r = replay([data(0.1, S2C, greeting), data(0.2, C2S, b"SSH-2.0-y\r\n")])
    assert r.poll(START) == [Send(S2C, greeting)]
    feed(r, S2C, greeting[:5])
    assert r.poll(START) == []
    feed(r, S2C, greeting[5:])
    assert r.poll(START) == [Send(C2S, b"SSH-2.0-y\r\n"), Finished()]


def test_causal_end_waits_for_the_live_client_to_send_what_was_recorded():
    events = [data(0.1, S2C, b"bye?"), data(0.2, C2S, b"bye"), closed(0.3)]
    r = replay(events, server_live=False)
    assert r.poll(START) == [Send(S2C, b"bye?")]
    feed(r, C2S, b"bye")
    assert r.poll(START) == [Finished()]


def test_causal_next_deadline_is_due_once_live_input_satisfies_the_head():
    r = replay(http_exchange(), server_live=False)
    feed(r, C2S, REQUEST, now=START + 1)
    r.live_eof(C2S, START + 2)
    assert r.next_deadline() <= START + 2


# -- stand-in server ----------------------------------------------------------


def test_stand_in_server_passes_over_client_steps_without_actions():
    r = replay(http_exchange(), server_live=False)
    feed(r, C2S, REQUEST)
    r.live_eof(C2S, START)
    actions = r.poll(START)
    assert actions == [Send(S2C, RESPONSE), ShutWrite(S2C), Finished()]


def test_stand_in_client_steps_do_not_wait_for_their_recorded_time():
    events = [data(0.5, C2S, b"ping"), data(1.0, S2C, b"pong")]
    r = replay(events, pacing=Pacing.RECORDED, server_live=False)
    assert r.poll(START) == []
    assert r.next_deadline() == START + 1.0


def test_stand_in_server_is_not_checked_for_missing_bytes():
    r = replay(http_exchange(), server_live=False)
    feed(r, C2S, REQUEST)
    r.live_eof(C2S, START)
    r.poll(START)
    r.close(START)
    assert r.divergences == ()


# -- divergences --------------------------------------------------------------


def test_identical_live_bytes_produce_no_divergence():
    r = replay(http_exchange())
    feed(r, C2S, REQUEST, pieces=5)
    feed(r, S2C, RESPONSE, pieces=3)
    r.close(START)
    assert r.divergences == ()


def test_changed_byte_is_reported_at_its_offset_with_both_snippets():
    live = REQUEST.replace(b"index", b"admin")
    r = replay(http_exchange(), server_live=False)
    feed(r, C2S, live)
    (found,) = r.divergences
    assert found == ByteMismatch(
        conn=7,
        key=OPENED.key,
        ordinal=2,
        direction=C2S,
        offset=5,
        expected=REQUEST[:53],
        actual=live[:53],
        snippet_offset=0,
    )


def test_snippets_hold_16_bytes_before_and_48_after_the_difference():
    recorded = bytes(range(200))
    live = bytearray(recorded)
    live[100] ^= 0xFF
    r = replay([data(0.1, C2S, recorded)], server_live=False)
    feed(r, C2S, bytes(live), pieces=7)
    (found,) = r.divergences
    assert (found.offset, found.snippet_offset) == (100, 84)
    assert found.expected == recorded[84:148]
    assert found.actual == bytes(live[84:148])


def test_context_before_comes_from_earlier_live_chunks():
    recorded = bytes(range(64))
    live = recorded[:40] + b"\xff" + recorded[41:]
    r = replay([data(0.1, C2S, recorded)], server_live=False)
    feed(r, C2S, live[:38])
    feed(r, C2S, live[38:])
    (found,) = r.divergences
    assert found.expected[:16] == recorded[24:40]
    assert found.snippet_offset == 24


def test_actual_snippet_is_completed_by_later_live_data():
    recorded = b"A" * 100
    live = b"A" * 10 + b"B" * 90
    r = replay([data(0.1, C2S, recorded)], server_live=False)
    feed(r, C2S, live[:11])
    feed(r, C2S, live[11:])
    (found,) = r.divergences
    assert found.actual == live[0:58]


def test_expected_snippet_reads_ahead_across_recorded_chunks():
    chunks = [bytes([65 + i]) * 4 for i in range(20)]
    recorded = b"".join(chunks)
    r = replay([data(0.1 + i / 100, C2S, c) for i, c in enumerate(chunks)], server_live=False)
    feed(r, C2S, recorded[:20] + b"?")
    (found,) = r.divergences
    assert found.expected == recorded[4:68]


def test_only_the_first_difference_of_a_direction_is_reported():
    live = b"X" + REQUEST[1:10] + b"Y" + REQUEST[11:]
    r = replay(http_exchange())
    feed(r, C2S, live, pieces=4)
    assert [d.offset for d in r.divergences] == [0]


def test_differences_are_reported_per_direction():
    r = replay(http_exchange())
    feed(r, C2S, b"POST" + REQUEST[4:])
    feed(r, S2C, RESPONSE[:9] + b"500" + RESPONSE[12:])
    assert [(type(d), d.direction, d.offset) for d in r.divergences] == [
        (ByteMismatch, C2S, 0),
        (ByteMismatch, S2C, 9),
    ]


def test_live_bytes_beyond_the_recording_are_extra_bytes_at_the_recorded_length():
    r = replay([data(0.1, C2S, b"hello")], server_live=False)
    feed(r, C2S, b"hel")
    feed(r, C2S, b"lo world")
    (found,) = r.divergences
    assert isinstance(found, ExtraBytes)
    assert (found.offset, found.sent) == (5, 11)
    assert found.expected == b"hello"
    assert found.actual == b"hello world"


def test_missing_bytes_are_reported_at_close_with_the_counts():
    r = replay(http_exchange(), server_live=False)
    feed(r, C2S, REQUEST[:10])
    r.close(START)
    (found,) = r.divergences
    assert isinstance(found, MissingBytes)
    assert (found.sent, found.recorded) == (10, len(REQUEST))
    assert found.expected == REQUEST[:58]
    assert found.actual == REQUEST[:10]


def test_missing_bytes_count_the_whole_recording_when_the_script_was_not_played_out():
    events = [data(0.1, C2S, b"ab"), data(0.2, S2C, b"ok"), data(0.3, C2S, b"cdef")]
    r = replay(events, server_live=False)
    r.close(START)  # nothing polled, nothing sent
    (found,) = r.divergences
    assert (found.sent, found.recorded, found.expected) == (0, 6, b"abcdef")


def test_missing_bytes_are_not_reported_when_nothing_is_missing():
    r = replay(http_exchange(), server_live=False)
    feed(r, C2S, REQUEST)
    r.close(START)
    assert r.divergences == ()


def test_live_reset_without_a_recorded_one_is_unexpected():
    r = replay(http_exchange(), server_live=False)
    feed(r, C2S, REQUEST)
    r.live_reset(C2S, START)
    r.close(START)
    assert r.divergences == (UnexpectedReset(7, OPENED.key, 2, C2S),)


def test_a_reset_by_a_sender_that_is_not_checked_is_not_reported():
    r = ConnectionReplay(
        OPENED,
        lambda: iter(http_exchange()),
        config=ReplayConfig(),
        server_live=True,
        start=START,
        ordinal=2,
        checked=[C2S],  # only the client's sending is compared (``check=["client"]``)
    )
    feed(r, C2S, REQUEST)
    r.live_reset(S2C, START)  # a live server that ended early
    r.close(START)
    assert not [d for d in r.divergences if isinstance(d, UnexpectedReset)]


def test_recorded_reset_without_a_live_one_is_missing():
    events = [data(0.1, C2S, b"x"), reset(0.2, C2S), closed(0.2)]
    r = replay(events, server_live=False)
    feed(r, C2S, b"x")
    r.close(START)
    assert r.divergences == (MissingReset(7, OPENED.key, 2, C2S),)


def test_recorded_reset_is_found_even_if_the_script_never_reached_it():
    events = [data(0.1, C2S, b"x"), data(0.2, S2C, b"y"), reset(0.3, C2S), closed(0.3)]
    r = replay(events)
    r.live_data(C2S, b"x", START)
    r.close(START)
    assert MissingReset(7, OPENED.key, 2, C2S) in r.divergences


def test_matching_resets_are_not_divergences():
    events = [data(0.1, C2S, b"x"), reset(0.2, C2S), closed(0.2)]
    r = replay(events, server_live=False)
    feed(r, C2S, b"x")
    r.live_reset(C2S, START)
    r.close(START)
    assert r.divergences == ()


def test_close_is_idempotent():
    r = replay(http_exchange(), server_live=False)
    r.close(START)
    r.close(START + 1)
    assert len(r.divergences) == 1


# -- stalls -------------------------------------------------------------------


def stalls(r: ConnectionReplay) -> list[Stall]:
    return [d for d in r.divergences if isinstance(d, Stall)]


def test_stall_is_not_reported_before_the_timeout():
    r = replay(http_exchange(), server_live=False, stall_timeout=5.0)
    r.poll(START)
    r.poll(START + 4.999)
    assert stalls(r) == []


def test_stall_is_reported_once_after_the_timeout():
    r = replay(http_exchange(), server_live=False, stall_timeout=5.0)
    r.poll(START + 5.0)
    r.poll(START + 20.0)
    (stall,) = stalls(r)
    assert stall.direction is C2S
    assert stall.waited == 5.0
    assert f"{len(REQUEST)} bytes c2s from the client (0 so far)" in stall.waiting_for


def test_a_recorded_end_of_stream_the_live_client_never_sends_delays_the_answer_by_the_settle_time():
    r = replay(http_exchange(), server_live=False, stall_timeout=5.0, settle=0.2)
    feed(r, C2S, REQUEST)
    assert Send(S2C, RESPONSE) not in r.poll(START + 0.1)
    assert Send(S2C, RESPONSE) in r.poll(START + 0.2)
    assert stalls(r) == []


def test_a_turn_shorter_than_recorded_ends_once_the_live_side_goes_quiet():
    r = replay(http_exchange(), server_live=False, settle=0.2)
    r.live_data(C2S, REQUEST[:-5], START + 1.0)
    assert r.poll(START + 1.1) == []
    assert r.next_deadline() == pytest.approx(START + 1.2)
    assert Send(S2C, RESPONSE) in r.poll(START + 1.2)


def test_a_short_turn_is_reported_where_it_differs_and_the_next_turn_is_compared_afresh():
    events = [data(0.1, C2S, b"GET /index.txt"), data(0.2, S2C, b"page"), data(0.3, C2S, b"BYE"), closed(0.4)]
    r = replay(events, server_live=False, settle=0.2)
    r.live_data(C2S, b"GET /i.txt", START)
    assert Send(S2C, b"page") in r.poll(START + 0.2)
    r.live_data(C2S, b"BYE", START + 0.3)
    r.close(START + 0.4)
    (found,) = r.divergences
    assert isinstance(found, ByteMismatch)
    assert found.offset == len(b"GET /i")


def test_a_short_turn_that_agrees_so_far_is_missing_bytes_and_later_turns_still_align():
    events = [data(0.1, C2S, b"abcdef"), data(0.2, S2C, b"ok"), data(0.3, C2S, b"next"), data(0.4, S2C, b"bye")]
    r = replay(events, server_live=False, settle=0.2)
    r.live_data(C2S, b"abc", START)
    assert r.poll(START + 0.2) == [Send(S2C, b"ok")]
    r.live_data(C2S, b"next", START + 0.3)
    assert r.poll(START + 0.3) == [Send(S2C, b"bye"), Finished()]
    r.close(START + 0.4)
    (found,) = r.divergences
    assert isinstance(found, MissingBytes)
    assert (found.sent, found.recorded) == (3, 6)


def test_a_live_side_that_says_nothing_stalls_and_then_the_rest_is_played_out():
    r = replay(http_exchange(), server_live=False, stall_timeout=1.0)
    assert r.poll(START + 0.5) == []
    actions = r.poll(START + 1.0)
    assert actions == [Send(S2C, RESPONSE), ShutWrite(S2C), Finished()]
    (stall,) = stalls(r)
    assert stall.waited == 1.0


def test_pipelined_requests_are_answered_in_order_as_their_bytes_arrive():
    events = [data(0.1, C2S, b"one"), data(0.2, S2C, b"1"), data(0.3, C2S, b"two"), data(0.4, S2C, b"2")]
    r = replay(events, server_live=False)
    r.live_data(C2S, b"onetwo", START)
    assert r.poll(START) == [Send(S2C, b"1"), Send(S2C, b"2"), Finished()]
    r.close(START)
    assert r.divergences == ()


def test_next_deadline_is_the_stall_time_and_none_once_played_out():
    r = replay(http_exchange(), server_live=False, stall_timeout=5.0)
    assert r.next_deadline() <= START  # the passed-over request step is due
    r.poll(START)
    assert r.next_deadline() == START + 5.0
    r.poll(START + 5.0)
    assert r.finished
    assert r.next_deadline() is None


def test_no_stall_is_reported_under_recorded_pacing():
    r = replay([data(100.0, S2C, b"late")], pacing=Pacing.RECORDED, stall_timeout=1.0)
    r.poll(START + 50.0)
    assert stalls(r) == []


# -- laziness -----------------------------------------------------------------


class CountingSteps:
    """A steps() factory whose iterators record how many events each yielded."""

    def __init__(self, make_events):
        self.make_events = make_events
        self.pulled: list[int] = []

    def __call__(self):
        index = len(self.pulled)
        self.pulled.append(0)
        for event in self.make_events():
            self.pulled[index] += 1
            yield event


def test_script_is_read_only_one_step_ahead_of_delivery():
    steps = CountingSteps(lambda: (data(float(i), S2C, b"%04d" % i) for i in range(1000)))
    r = ConnectionReplay(OPENED, steps, config=ReplayConfig(pacing="recorded"), start=START)
    actions = r.poll(START + 2.0)
    assert len(actions) == 3
    assert max(steps.pulled) <= 4


def test_comparing_live_bytes_reads_the_recording_lazily():
    def ping_pong():
        for i in range(1000):
            yield data(i + 0.1, C2S, b"ping%04d" % i)
            yield data(i + 0.2, S2C, b"pong%04d" % i)

    steps = CountingSteps(ping_pong)
    r = ConnectionReplay(OPENED, steps, server_live=False, start=START)
    for i in range(3):
        r.live_data(C2S, b"ping%04d" % i, START)
    assert r.poll(START) == [Send(S2C, b"pong%04d" % i) for i in range(3)]
    assert r.divergences == ()
    assert len(steps.pulled) == 2  # one iterator drives sending, one compares c2s
    assert max(steps.pulled) <= 10


# -- properties ---------------------------------------------------------------


@st.composite
def chunked(draw, payload):
    cuts = draw(st.lists(st.integers(min_value=0, max_value=len(payload)), max_size=8))
    bounds = [0, *sorted(cuts), len(payload)]
    return [payload[a:b] for a, b in itertools.pairwise(bounds)]


@given(st.data(), st.binary(min_size=1, max_size=300))
def test_any_chunking_of_identical_live_bytes_never_diverges(draw, payload):
    recorded_chunks = draw.draw(chunked(payload))
    live_chunks = draw.draw(chunked(payload))
    events = [data(0.1, C2S, c) for c in recorded_chunks]
    r = replay(events, server_live=False)
    for chunk in live_chunks:
        r.live_data(C2S, chunk, START)
    r.close(START)
    assert r.divergences == ()


@given(st.data(), st.binary(min_size=1, max_size=300))
def test_any_single_changed_byte_is_a_mismatch_at_exactly_its_offset(draw, payload):
    at = draw.draw(st.integers(min_value=0, max_value=len(payload) - 1))
    new = draw.draw(st.integers(min_value=0, max_value=255).filter(lambda b: b != payload[at]))
    live = payload[:at] + bytes([new]) + payload[at + 1 :]
    events = [data(0.1, C2S, c) for c in draw.draw(chunked(payload))]
    r = replay(events, server_live=False)
    for chunk in draw.draw(chunked(live)):
        r.live_data(C2S, chunk, START)
    r.close(START)
    (found,) = r.divergences
    assert isinstance(found, ByteMismatch)
    assert found.offset == at
    lo = max(0, at - 16)
    assert found.snippet_offset == lo
    assert found.expected == payload[lo : at + 48]
    assert found.actual == live[lo : at + 48]


@given(st.data(), st.binary(min_size=1, max_size=100))
def test_causal_response_goes_exactly_when_the_last_request_byte_arrives(draw, request):
    r = replay([data(0.1, C2S, request), data(0.2, S2C, b"ok")], server_live=False)
    chunks = [c for c in draw.draw(chunked(request)) if c]
    for chunk in chunks:
        assert r.poll(START) == []
        r.live_data(C2S, chunk, START)
    assert r.poll(START) == [Send(S2C, b"ok"), Finished()]
