"""Exchange matching: live requests answered with the recorded replies to the same requests."""

from __future__ import annotations

import pytest

from pytest_netplayground.core.addressing import ConnectionKey
from pytest_netplayground.core.divergence import ByteMismatch, DivergenceReport
from pytest_netplayground.core.events import (
    Closed,
    ConnectionOpened,
    Data,
    Direction,
    HalfClosed,
    Outcome,
    Reset,
)
from pytest_netplayground.core.exchange import (
    MAX_MISMATCHES,
    Ending,
    ExchangeReplay,
    Match,
    MoreMismatches,
    RequestMismatch,
    ReusedExchanges,
    UnusedExchanges,
    build_books,
    exchanges_of,
    match_mode,
)
from pytest_netplayground.core.replay import ReplayConfig
from pytest_netplayground.errors import ConfigError

C2S, S2C = Direction.C2S, Direction.S2C
CLIENT, SERVER = "10.0.0.2", "10.0.0.1"
KEY = ConnectionKey(CLIENT, SERVER, 6379)


def opened(conn: int, t: float | None = None, port: int = 6379, outcome=Outcome.ESTABLISHED, client=CLIENT):
    t = float(conn) if t is None else t
    return ConnectionOpened(t, conn, (client, 40000 + conn), (SERVER, port), outcome)


def conversation(conn: int, *steps, t0: float | None = None, port: int = 6379, client=CLIENT):
    """A recording: steps are (direction, bytes) or "fin c2s"/"fin s2c"/"rst s2c"."""
    first = opened(conn, t0, port, client=client)
    events: list = []
    t = first.t
    for step in steps:
        t += 0.001
        if isinstance(step, str):
            kind, direction = step.split()
            cls = HalfClosed if kind == "fin" else Reset
            events.append(cls(t, conn, Direction(direction)))
        else:
            events.append(Data(t, conn, step[0], step[1]))
    events.append(Closed(t + 0.001, conn))
    return first, events


def replay(book, settle: float = 0.2) -> ExchangeReplay:
    live = ExchangeReplay(book, settle)
    assert live.open(0.0) == []
    return live


def replies(answers) -> list[bytes]:
    return [a.exchange.reply for a in answers]


# -- the recorded side ------------------------------------------------------------------


def test_exchanges_pair_each_request_turn_with_the_reply_after_it():
    first, events = conversation(
        0,
        (C2S, b"GET a"),
        (C2S, b"\r\n"),
        (S2C, b"A"),
        (C2S, b"GET b\r\n"),
        (S2C, b"B1"),
        (S2C, b"B2"),
        "fin c2s",
    )
    got = exchanges_of(first, events)
    assert [(e.number, e.request, e.reply, e.ending) for e in got] == [
        (0, b"GET a\r\n", b"A", None),
        (1, b"GET b\r\n", b"B1B2", None),
    ]


def test_a_server_that_speaks_first_gives_a_banner_exchange():
    first, events = conversation(0, (S2C, b"220 hi\r\n"), (C2S, b"QUIT\r\n"), (S2C, b"221 bye\r\n"))
    got = exchanges_of(first, events)
    assert [(e.request, e.reply) for e in got] == [(b"", b"220 hi\r\n"), (b"QUIT\r\n", b"221 bye\r\n")]


def test_a_server_closing_after_its_reply_ends_that_exchange():
    first, events = conversation(0, (C2S, b"GET /\r\n"), (S2C, b"body"), "fin s2c", "fin c2s")
    assert [e.ending for e in exchanges_of(first, events)] == [Ending.FIN]


def test_a_server_closing_after_its_client_did_ends_no_exchange():
    first, events = conversation(0, (C2S, b"PING"), (S2C, b"PONG"), "fin c2s", "fin s2c")
    assert [e.ending for e in exchanges_of(first, events)] == [None]


def test_a_request_the_server_answers_by_resetting():
    first, events = conversation(0, (C2S, b"PING"), (S2C, b"PONG"), (C2S, b"SHUTDOWN"), "rst s2c")
    got = exchanges_of(first, events)
    assert [(e.request, e.reply, e.ending) for e in got] == [
        (b"PING", b"PONG", None),
        (b"SHUTDOWN", b"", Ending.RESET),
    ]


def test_books_are_per_key_and_hold_exchanges_of_every_connection_in_recorded_order():
    books = build_books(
        [
            conversation(1, (C2S, b"B"), (S2C, b"b"), t0=2.0),
            conversation(0, (C2S, b"A"), (S2C, b"a"), t0=1.0),
            conversation(2, (C2S, b"C"), (S2C, b"c"), port=80),
            conversation(3, (C2S, b"D"), (S2C, b"d"), client="10.0.0.3"),
            (opened(4, outcome=Outcome.REFUSED), []),
        ]
    )
    assert set(books) == {KEY, ConnectionKey(CLIENT, SERVER, 80), ConnectionKey("10.0.0.3", SERVER, 6379)}
    assert [(e.conn, e.request) for e in books[KEY].exchanges] == [(0, b"A"), (1, b"B")]


# -- the live side ----------------------------------------------------------------------


def pool_book():
    """Two recorded connections of one key; INCR answered 1..4 across them."""
    return build_books(
        [
            conversation(
                0, (C2S, b"INCR\r\n"), (S2C, b":1\r\n"), (C2S, b"INCR\r\n"), (S2C, b":3\r\n"), t0=0.0
            ),
            conversation(
                1, (C2S, b"INCR\r\n"), (S2C, b":2\r\n"), (C2S, b"INCR\r\n"), (S2C, b":4\r\n"), t0=0.0005
            ),
            conversation(2, (C2S, b"GET k\r\n"), (S2C, b"$1\r\nv\r\n"), t0=0.1),
        ]
    )[KEY]


def test_requests_from_any_connection_get_recorded_replies_once_each_in_recorded_order():
    book = pool_book()
    first, second, third = replay(book), replay(book), replay(book)
    # Three live connections split four INCRs differently from the recording.
    assert replies(third.client_data(b"INCR\r\n", 0.1)) == [b":1\r\n"]
    assert replies(first.client_data(b"INCR\r\n", 0.1)) == [b":2\r\n"]
    assert replies(first.client_data(b"INCR\r\n", 0.2)) == [b":3\r\n"]
    assert replies(second.client_data(b"GET k\r\n", 0.2)) == [b"$1\r\nv\r\n"]
    assert replies(third.client_data(b"INCR\r\n", 0.3)) == [b":4\r\n"]
    assert book.findings() == []


def test_a_request_arriving_in_pieces_is_answered_when_it_is_whole():
    live = replay(pool_book())
    assert live.client_data(b"GE", 1.0) == []
    assert live.next_deadline() == pytest.approx(1.2)
    assert replies(live.client_data(b"T k\r\n", 1.1)) == [b"$1\r\nv\r\n"]
    assert live.next_deadline() is None


def test_pipelined_requests_are_cut_at_recorded_requests():
    book = pool_book()
    live = replay(book)
    answers = live.client_data(b"INCR\r\nGET k\r\nINCR\r\nIN", 1.0)
    assert [a.request for a in answers] == [b"INCR\r\n", b"GET k\r\n", b"INCR\r\n"]
    assert replies(answers) == [b":1\r\n", b"$1\r\nv\r\n", b":2\r\n"]
    assert live.waiting == b"IN"
    assert replies(live.client_data(b"CR\r\n", 1.0)) == [b":3\r\n"]


def test_a_request_no_recording_equals_is_answered_as_the_closest_after_the_settle_time():
    book = pool_book()
    live = replay(book, settle=0.2)
    assert live.client_data(b"GET q\r\n", 5.0) == []
    assert live.poll(5.1) == []
    answers = live.poll(5.2)
    assert [a.exchange.request for a in answers] == [b"GET k\r\n"]
    mismatch, unused = book.findings()
    assert isinstance(unused, UnusedExchanges)
    assert isinstance(mismatch, RequestMismatch) and isinstance(mismatch, ByteMismatch)
    assert (mismatch.conn, mismatch.offset, mismatch.live_length, mismatch.recorded_length) == (2, 4, 7, 7)
    assert mismatch.expected == b"GET k\r\n" and mismatch.actual == b"GET q\r\n"
    text = DivergenceReport([mismatch]).format()
    assert "differs at offset 4" in text and "#2 10.0.0.2 -> 10.0.0.1:6379" in text


def test_the_closest_request_shares_the_most_with_the_live_one():
    book = build_books(
        [
            conversation(0, (C2S, b"GET /other.txt"), (S2C, b"other")),
            conversation(1, (C2S, b"GET /index.txt"), (S2C, b"index")),
            conversation(2, (C2S, b"POST /index.txt"), (S2C, b"posted")),
        ]
    )[KEY]
    live = replay(book)
    live.client_data(b"GET /i.txt", 0.0)
    assert replies(live.poll(1.0)) == [b"index"]


def test_the_clients_end_completes_its_last_request_at_once():
    book = pool_book()
    live = replay(book)
    assert replies(live.client_data(b"GET k\r\nINC", 0.0)) == [b"$1\r\nv\r\n"]
    assert replies(live.client_end(0.0)) == [b":1\r\n"]
    assert isinstance(book.findings()[0], RequestMismatch)
    assert live.client_data(b"more", 0.1) == [] and live.next_deadline() is None


def test_a_recorded_exchange_is_given_again_only_when_none_of_its_request_is_left():
    book = pool_book()
    live = replay(book)
    got = [live.client_data(b"GET k\r\n", float(i))[0].exchange for i in range(3)]
    assert [e.conn for e in got] == [2, 2, 2]
    found = book.findings()
    assert [type(f) for f in found] == [ReusedExchanges, UnusedExchanges]
    assert found[0].count == 2 and found[1].count == 4 and found[1].total == 5


def test_unused_exchanges_are_reported():
    book = pool_book()
    replay(book).client_data(b"INCR\r\n", 0.0)
    [unused] = book.findings()
    assert isinstance(unused, UnusedExchanges)
    assert (unused.count, unused.first) == (4, b"INCR\r\n")
    assert "4 of 5 recorded exchanges were never asked for" in unused.summary


def test_only_some_mismatches_are_reported_one_by_one():
    book = pool_book()
    live = replay(book)
    for i in range(MAX_MISMATCHES + 3):
        live.client_data(b"NOPE\r\n", float(i))
        live.poll(float(i) + 1)
    found = book.findings()
    assert sum(isinstance(f, RequestMismatch) for f in found) == MAX_MISMATCHES
    [more] = [f for f in found if isinstance(f, MoreMismatches)]
    assert more.count == 3


def test_banners_are_given_at_opening_as_the_recorded_connections_had_them():
    book = build_books(
        [
            conversation(0, (S2C, b"220 one\r\n"), (C2S, b"QUIT\r\n"), (S2C, b"221\r\n")),
            conversation(1, (C2S, b"QUIT\r\n"), (S2C, b"221\r\n")),
        ]
    )[KEY]
    first, second, third = (ExchangeReplay(book, 0.2) for _ in range(3))
    assert replies(first.open(0.0)) == [b"220 one\r\n"]
    assert second.open(0.0) == []
    assert third.open(0.0) == []  # not every recorded connection greeted: past them, none does


def test_past_the_recorded_connections_a_banner_is_given_again_when_every_one_had_it():
    book = build_books([conversation(0, (S2C, b"220 one\r\n"), (C2S, b"QUIT\r\n"), (S2C, b"221\r\n"))])[KEY]
    assert [replies(ExchangeReplay(book, 0.2).open(0.0)) for _ in range(3)] == [[b"220 one\r\n"]] * 3
    assert [type(f) for f in book.findings()] == [UnusedExchanges]  # QUIT; the banners are no reuse


def test_a_reply_after_which_the_server_closed_says_so():
    book = build_books([conversation(0, (C2S, b"GET /\r\n"), (S2C, b"body"), "fin s2c", "fin c2s")])[KEY]
    [answer] = replay(book).client_data(b"GET /\r\n", 0.0)
    assert answer.exchange.ending is Ending.FIN


def test_replay_config_takes_a_match_mode_and_a_settle_time():
    assert ReplayConfig().match is Match.CONNECTION
    config = ReplayConfig(match="Exchange", settle="0.05")
    assert (config.match, config.settle) == (Match.EXCHANGE, 0.05)
    with pytest.raises(ConfigError, match="expected one of connection, exchange, got 'pairs'"):
        match_mode("pairs")
    with pytest.raises(ConfigError, match="settle"):
        ReplayConfig(settle=0)


def test_settings_take_match_from_any_layer_and_reject_unknown_modes():
    from pytest_netplayground.settings import check_marker, merge

    assert merge([]).match == "connection"
    assert (
        merge([("ini", {"match": "exchange"}), ("command line", {"match": "Connection"})]).match
        == "connection"
    )
    check_marker((), {"match": "exchange"}, "t.py::test")
    with pytest.raises(ConfigError, match="'match'.*expected one of connection, exchange"):
        merge([("marker", {"match": "pairs"})])
