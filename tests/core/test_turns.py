from pytest_netplayground.core.events import Closed, Data, Direction, HalfClosed
from pytest_netplayground.core.turns import split_turns

C2S, S2C = Direction.C2S, Direction.S2C


def test_consecutive_chunks_of_one_side_are_one_turn():
    turns = split_turns([Data(0.1, 0, C2S, b"GET "), Data(0.2, 0, C2S, b"/\r\n"), Data(0.3, 0, S2C, b"OK")])
    assert [(t.direction, t.data) for t in turns] == [(C2S, b"GET /\r\n"), (S2C, b"OK")]


def test_turns_are_numbered_overall_and_per_direction():
    events = [Data(0, 0, S2C, b"hi"), Data(0, 0, C2S, b"a"), Data(0, 0, S2C, b"b"), Data(0, 0, C2S, b"c")]
    turns = split_turns(events)
    assert [(t.number, t.index) for t in turns] == [(0, 0), (1, 0), (2, 1), (3, 1)]


def test_empty_data_and_other_events_do_not_split_a_turn():
    events = [Data(0, 0, C2S, b"a"), Data(0, 0, S2C, b""), HalfClosed(0, 0, S2C), Data(0, 0, C2S, b"b"), Closed(1, 0)]
    assert [t.data for t in split_turns(events)] == [b"ab"]


def test_a_turn_keeps_the_time_of_its_first_byte():
    turns = split_turns([Data(1.5, 0, C2S, b"a"), Data(2.5, 0, C2S, b"b")])
    assert turns[0].t == 1.5
