"""Replaying one connection with the client played from the recording (a drive) and the server live."""

from __future__ import annotations

import pytest

from pytest_netplayground.core.divergence import ByteMismatch, MissingBytes, Stall, UnexpectedReset
from pytest_netplayground.core.events import Closed, ConnectionOpened, Data, Direction, HalfClosed
from pytest_netplayground.core.noise import IgnoreRule, Noise
from pytest_netplayground.core.replay import (
    ConnectionReplay,
    Finished,
    Pacing,
    ReplayConfig,
    Send,
    ShutWrite,
)

C2S, S2C = Direction.C2S, Direction.S2C
T0 = 500.0
START = 20.0
OPENED = ConnectionOpened(t=T0, conn=3, client=("10.0.0.2", 41000), server=("10.0.0.1", 80))
REQUEST_1 = b"GET /a HTTP/1.1\r\n\r\n"
REQUEST_2 = b"GET /b HTTP/1.1\r\n\r\n"
ANSWER_1 = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"
ANSWER_2 = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"


def at(t: float, event_type, *args):
    return event_type(T0 + t, OPENED.conn, *args)


def two_requests():
    return [
        at(0.1, Data, C2S, REQUEST_1),
        at(0.2, Data, S2C, ANSWER_1),
        at(0.3, Data, C2S, REQUEST_2),
        at(0.4, Data, S2C, ANSWER_2),
        at(0.5, HalfClosed, C2S),
        at(0.6, HalfClosed, S2C),
        Closed(T0 + 0.7, OPENED.conn),
    ]


def drive(events, pacing=Pacing.CAUSAL, noise=None, **config) -> ConnectionReplay:
    events = list(events)
    noise = noise or Noise()
    return ConnectionReplay(
        OPENED,
        lambda: iter(events),
        config=ReplayConfig(pacing=pacing, noise=noise, **config),
        client_live=False,
        start=START,
        comparator_for=lambda direction, turn: noise.comparator(OPENED, direction, turn),
    )


def test_the_first_request_goes_at_once_and_the_next_waits_for_the_live_answer():
    r = drive(two_requests())
    assert r.poll(START) == [Send(C2S, REQUEST_1)]
    assert r.poll(START + 1.0) == []  # the server has not answered: the client waits
    r.live_data(S2C, ANSWER_1, START + 1.1)
    assert r.poll(START + 1.1) == [Send(C2S, REQUEST_2)]


def test_the_recorded_answers_are_never_written_anywhere():
    r = drive(two_requests())
    actions = r.poll(START)
    r.live_data(S2C, ANSWER_1, START)
    actions += r.poll(START)
    r.live_data(S2C, ANSWER_2, START)
    r.live_eof(S2C, START)
    actions += r.poll(START)
    assert actions == [Send(C2S, REQUEST_1), Send(C2S, REQUEST_2), ShutWrite(C2S), Finished()]
    assert all(getattr(action, "direction", C2S) is C2S for action in actions)


def test_a_live_server_answering_as_recorded_has_no_divergence():
    r = drive(two_requests())
    r.poll(START)
    r.live_data(S2C, ANSWER_1[:5], START)
    r.live_data(S2C, ANSWER_1[5:], START)
    r.poll(START)
    r.live_data(S2C, ANSWER_2, START)
    r.live_eof(S2C, START)
    r.poll(START)
    r.close(START)
    assert r.divergences == ()


def test_a_changed_answer_is_reported_in_its_turn_at_its_offset():
    r = drive(two_requests())
    r.poll(START)
    r.live_data(S2C, ANSWER_1, START)
    r.poll(START)
    r.live_data(S2C, ANSWER_2[:-1] + b"X", START)
    r.live_eof(S2C, START)
    r.poll(START)
    r.close(START)
    (found,) = r.divergences
    assert isinstance(found, ByteMismatch)
    assert found.direction is S2C
    assert found.offset == len(ANSWER_1) + len(ANSWER_2) - 1


def test_the_client_bytes_are_not_compared_since_nothing_live_sends_them():
    r = drive(two_requests())
    for _ in range(3):
        r.poll(START)
        r.live_data(S2C, ANSWER_1 if _ == 0 else ANSWER_2 if _ == 1 else b"", START)
    r.live_eof(S2C, START)
    r.poll(START)
    r.close(START)
    assert not any(d.direction is C2S for d in r.divergences)


def test_a_silent_server_is_a_stall_after_the_timeout_and_the_rest_is_played_out():
    r = drive(two_requests(), stall_timeout=2.0)
    r.poll(START)
    assert r.next_deadline() == START + 2.0
    actions = r.poll(START + 2.0)
    assert actions == [Send(C2S, REQUEST_2), ShutWrite(C2S), Finished()]
    r.close(START + 2.0)
    kinds = {type(d) for d in r.divergences}
    assert Stall in kinds and MissingBytes in kinds


def test_a_live_reset_where_none_was_recorded_is_reported():
    r = drive(two_requests())
    r.poll(START)
    r.live_reset(S2C, START)
    r.poll(START)
    r.close(START)
    assert any(isinstance(d, UnexpectedReset) and d.direction is S2C for d in r.divergences)


def test_recorded_pacing_sends_each_request_at_its_recorded_offset_without_waiting():
    r = drive(two_requests(), pacing=Pacing.RECORDED, speed=2.0)
    assert r.poll(START) == []
    assert r.next_deadline() == pytest.approx(START + 0.05)
    assert r.poll(START + 0.051) == [Send(C2S, REQUEST_1)]
    assert r.poll(START + 0.151) == [Send(C2S, REQUEST_2)]  # no answer came: it goes anyway


def test_flood_sends_every_request_at_once():
    r = drive(two_requests(), pacing=Pacing.FLOOD)
    assert r.poll(START) == [Send(C2S, REQUEST_1), Send(C2S, REQUEST_2), ShutWrite(C2S), Finished()]


def test_the_end_waits_for_the_server_to_close_as_recorded_until_the_settle_time():
    r = drive(two_requests(), settle=0.5)
    r.poll(START)
    r.live_data(S2C, ANSWER_1, START)
    r.poll(START)
    r.live_data(S2C, ANSWER_2, START)
    assert r.poll(START) == [ShutWrite(C2S)]  # the recorded server closed: give the live one time to
    assert r.next_deadline() == START + 0.5
    assert r.poll(START + 0.5) == [Finished()]


def test_noise_rules_hide_a_difference_in_the_live_answer():
    noise = Noise(ignore=(IgnoreRule.parse("s2c:Content-Length: \\d"),))
    r = drive(two_requests()[:2], noise=noise)
    r.poll(START)
    r.live_data(S2C, ANSWER_1.replace(b"Length: 1", b"Length: 7"), START)
    r.live_eof(S2C, START)
    r.poll(START)
    r.close(START)
    assert r.divergences == ()
