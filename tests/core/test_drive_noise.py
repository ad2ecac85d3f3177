"""Noise a drive learns from repeated live answers, moved onto the recorded answer."""

from __future__ import annotations

from pytest_netplayground.core.drive_noise import learn_from_answers, move_spans
from pytest_netplayground.core.events import ConnectionOpened, Data, Direction
from pytest_netplayground.core.noise import Noise

C2S, S2C = Direction.C2S, Direction.S2C
OPENED = ConnectionOpened(t=0.0, conn=4, client=("10.0.0.2", 40000), server=("10.0.0.1", 80))
REQUEST = b"GET / HTTP/1.0\r\n\r\n"


def answer(date: bytes, body: bytes = b"hello", extra: bytes = b"") -> bytes:
    return b"HTTP/1.0 200 OK\r\n" + extra + b"Date: " + date + b"\r\n\r\n" + body


def exchange(reply: bytes) -> list[Data]:
    return [Data(0.0, OPENED.conn, C2S, REQUEST), Data(0.1, OPENED.conn, S2C, reply)]


def test_spans_between_answers_of_equal_length_stay_where_they_are():
    assert move_spans(b"abcXYZdef", b"abc123def", [(3, 6)]) == ((3, 6),)


def test_spans_follow_the_shared_bytes_when_the_recording_is_longer():
    live = answer(b"Tue 10:00:01")
    recorded = answer(b"Tue 10:00:00", extra=b"Server: x\r\n")
    start = live.index(b"10:00:01")
    (moved,) = move_spans(live, recorded, [(start, start + 8)])
    assert recorded[moved[0] : moved[1]].endswith(b"0") and moved[1] == recorded.index(b"\r\n\r\n")
    assert moved[0] >= recorded.index(b"Date: ") + 6


def test_nothing_is_learned_from_one_run():
    assert learn_from_answers({4: OPENED}, {4: exchange(answer(b"A"))}, [{4: exchange(answer(b"B"))}]) == ()


def test_what_differs_between_two_runs_is_learned_in_the_recordings_terms_and_hides_it():
    recorded = exchange(answer(b"Mon 09:00:00"))
    runs = [{4: exchange(answer(b"Tue 10:00:01"))}, {4: exchange(answer(b"Tue 10:00:03"))}]
    (learned,) = learn_from_answers({4: OPENED}, {4: recorded}, runs)
    assert (learned.conn, learned.direction, learned.turn) == (4, S2C, 0)
    judge = Noise(learned=(learned,)).comparator(OPENED, S2C, 0)
    assert judge(recorded[1].data, answer(b"Wed 11:11:11")) is None


def test_a_difference_the_runs_agree_on_is_still_reported():
    recorded = exchange(answer(b"Mon 09:00:00"))
    runs = [
        {4: exchange(answer(b"Tue 10:00:01", b"HELLO"))},
        {4: exchange(answer(b"Tue 10:00:03", b"HELLO"))},
    ]
    learned = learn_from_answers({4: OPENED}, {4: recorded}, runs)
    judge = Noise(learned=learned).comparator(OPENED, S2C, 0)
    live = answer(b"Wed 11:11:11", b"HELLO")
    assert judge(recorded[1].data, live) == live.index(b"HELLO")


def test_identical_runs_learn_nothing():
    runs = [{4: exchange(answer(b"same"))}, {4: exchange(answer(b"same"))}]
    assert learn_from_answers({4: OPENED}, {4: exchange(answer(b"rec!"))}, runs) == ()
