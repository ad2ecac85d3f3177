"""Matching live connections to recorded ones by key and opening order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_netplayground.core.addressing import Endpoint
from pytest_netplayground.core.events import ConnectionOpened, Outcome
from pytest_netplayground.core.matching import Matcher
from pytest_netplayground.errors import CassetteFormatError

CLIENT = "10.0.0.2"
SERVER = "10.0.0.1"


def opened(conn: int, client_port: int = 40000, server_port: int = 80, client: str = CLIENT, **kw):
    return ConnectionOpened(
        t=float(conn), conn=conn, client=(client, client_port), server=(SERVER, server_port), **kw
    )


def test_match_ignores_the_client_port():
    recording = opened(1, client_port=40000)
    matcher = Matcher([recording])
    assert matcher.match(Endpoint(CLIENT, 51234), Endpoint(SERVER, 80)) == recording


def test_match_requires_the_same_server_port():
    matcher = Matcher([opened(1, server_port=80)])
    assert matcher.match(Endpoint(CLIENT, 40000), Endpoint(SERVER, 81)) is None


def test_match_requires_the_same_client_host():
    matcher = Matcher([opened(1)])
    assert matcher.match(Endpoint("10.0.0.3", 40000), Endpoint(SERVER, 80)) is None


def test_match_accepts_address_tuples():
    recording = opened(1)
    assert Matcher([recording]).match((CLIENT, 1234), (SERVER, 80)) == recording


def test_connections_of_one_key_are_matched_in_order_of_opening():
    first, second, third = opened(1, 40001), opened(4, 40002), opened(9, 40003)
    matcher = Matcher([third, first, second])  # given out of order on purpose
    got = [matcher.match((CLIENT, 50000 + i), (SERVER, 80)) for i in range(3)]
    assert got == [first, second, third]


def test_keys_have_independent_ordinals():
    web1, db1, web2 = opened(1, server_port=80), opened(2, server_port=5432), opened(3, server_port=80)
    matcher = Matcher([web1, db1, web2])
    assert matcher.match((CLIENT, 1), (SERVER, 5432)) == db1
    assert matcher.match((CLIENT, 2), (SERVER, 80)) == web1
    assert matcher.match((CLIENT, 3), (SERVER, 80)) == web2


def test_concurrent_connections_of_one_key_get_distinct_recordings():
    matcher = Matcher([opened(1, 40001), opened(2, 40002)])
    # Both open before either finishes: nothing is "returned to a queue".
    a = matcher.match((CLIENT, 50001), (SERVER, 80))
    b = matcher.match((CLIENT, 50002), (SERVER, 80))
    assert a is not None and b is not None
    assert a.conn != b.conn


def test_match_returns_none_once_a_key_is_used_up():
    matcher = Matcher([opened(1)])
    matcher.match((CLIENT, 1), (SERVER, 80))
    assert matcher.match((CLIENT, 2), (SERVER, 80)) is None


def test_unused_lists_recordings_never_matched_in_conn_order():
    recordings = [opened(3, server_port=81), opened(1), opened(2)]
    matcher = Matcher(recordings)
    matcher.match((CLIENT, 9), (SERVER, 80))
    assert [o.conn for o in matcher.unused()] == [2, 3]


def test_unused_is_empty_when_everything_was_matched():
    matcher = Matcher([opened(1)])
    matcher.match((CLIENT, 9), (SERVER, 80))
    assert matcher.unused() == []


def test_failed_recorded_attempts_take_their_place_in_the_order():
    refused = opened(1, outcome=Outcome.REFUSED)
    ok = opened(2)
    matcher = Matcher([refused, ok])
    assert matcher.match((CLIENT, 1), (SERVER, 80)) == refused
    assert matcher.match((CLIENT, 2), (SERVER, 80)) == ok


def test_ordinal_of_is_one_based_per_key():
    recordings = [opened(1), opened(2, server_port=81), opened(3), opened(4)]
    matcher = Matcher(recordings)
    assert [matcher.ordinal_of(o) for o in recordings] == [1, 1, 2, 3]


def test_ordinal_of_accepts_a_connection_number():
    matcher = Matcher([opened(5), opened(7)])
    assert matcher.ordinal_of(7) == 2


def test_ordinal_of_an_unknown_connection_raises_key_error():
    with pytest.raises(KeyError, match="#3"):
        Matcher([opened(1)]).ordinal_of(3)


def test_duplicate_connection_numbers_are_rejected():
    with pytest.raises(CassetteFormatError, match="connection number 1"):
        Matcher([opened(1), opened(1, server_port=81)])


@given(st.lists(st.integers(min_value=80, max_value=82), min_size=1, max_size=30))
def test_every_recording_is_matched_exactly_once_by_as_many_live_connections(ports):
    recordings = [opened(i + 1, server_port=port) for i, port in enumerate(ports)]
    matcher = Matcher(recordings)
    got = [matcher.match((CLIENT, 60000 - i), (SERVER, port)) for i, port in enumerate(ports)]
    assert got == recordings
    assert matcher.unused() == []
