"""Matching live connections to recorded ones: by key, opening order and what the client says first."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_netplayground.core.addressing import Endpoint
from pytest_netplayground.core.events import (
    Closed,
    ConnectionOpened,
    Data,
    Direction,
    HalfClosed,
    Outcome,
    Reset,
)
from pytest_netplayground.core.matching import LEAD_LIMIT, Claim, Leads, Matcher
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


# -- leads: what a recorded client said first --------------------------------------


def leads_of(*events) -> dict:
    leads = Leads()
    for event in events:
        leads.feed(event)
    return leads.leads


def c2s(conn: int, data: bytes) -> Data:
    return Data(t=1.0, conn=conn, direction=Direction.C2S, data=data)


def s2c(conn: int, data: bytes) -> Data:
    return Data(t=1.0, conn=conn, direction=Direction.S2C, data=data)


def test_a_lead_is_what_the_client_sent_before_the_servers_first_byte():
    got = leads_of(opened(1), c2s(1, b"GET "), c2s(1, b"/a\r\n"), s2c(1, b"200"), c2s(1, b"GET /b\r\n"))
    assert got == {1: b"GET /a\r\n"}


def test_a_lead_is_none_when_the_server_spoke_first():
    assert leads_of(opened(1), s2c(1, b"220 ready"), c2s(1, b"HELO")) == {1: None}


def test_a_lead_is_empty_when_the_client_closed_without_a_word():
    assert leads_of(opened(1), HalfClosed(t=1.0, conn=1, direction=Direction.C2S), s2c(1, b"x")) == {1: b""}


def test_a_lead_ends_at_a_reset_or_close():
    got = leads_of(opened(1), c2s(1, b"ab"), Reset(t=1.0, conn=1, direction=Direction.C2S), c2s(1, b"cd"))
    assert got == {1: b"ab"}
    assert leads_of(opened(2), c2s(2, b"ab"), Closed(t=1.0, conn=2), c2s(2, b"cd")) == {2: b"ab"}


def test_a_lead_keeps_at_most_the_limit():
    got = leads_of(opened(1), c2s(1, b"x" * (LEAD_LIMIT - 1)), c2s(1, b"yz"), c2s(1, b"more"))
    assert got == {1: b"x" * (LEAD_LIMIT - 1) + b"y"}


def test_leads_of_interleaved_connections_stay_apart():
    got = leads_of(opened(1), opened(2), c2s(2, b"two"), c2s(1, b"one"), s2c(1, b"!"), c2s(1, b"late"))
    assert got == {1: b"one", 2: b"two"}


def test_a_recording_cut_short_keeps_the_lead_seen_so_far():
    assert leads_of(opened(1), c2s(1, b"half a req")) == {1: b"half a req"}


# -- claims: choosing an established recording by its client's first bytes ---------


def recorded(*leads) -> tuple[list, Matcher]:
    recordings = [opened(i + 1, 40000 + i) for i in range(len(leads))]
    return recordings, Matcher(recordings, {i + 1: lead for i, lead in enumerate(leads)})


def claim(matcher: Matcher, port: int = 50000) -> Claim:
    got = matcher.open((CLIENT, port), (SERVER, 80))
    assert isinstance(got, Claim)
    return got


def test_connections_opened_in_another_order_get_the_recording_of_what_they_send():
    (alpha, beta, gamma), matcher = recorded(b"alpha\n", b"beta\n", b"gamma\n")
    first, second, third = claim(matcher, 1), claim(matcher, 2), claim(matcher, 3)
    assert first.settle(b"gamma\n") == gamma
    assert second.settle(b"alpha\n") == alpha
    assert third.settle(b"beta\n") == beta
    assert matcher.unused() == []


def test_a_claim_waits_while_its_bytes_could_still_become_a_lead():
    _, matcher = recorded(b"GET /one HTTP/1.1\r\n\r\n", b"GET /two HTTP/1.1\r\n\r\n")
    pending = claim(matcher)
    assert pending.settle(b"GET /t") is None
    assert pending.settle(b"GET /two HTTP/1.1\r\n\r\n").conn == 2


def test_bytes_that_no_recording_sent_settle_on_the_first_recording_left():
    (first, _), matcher = recorded(b"ab", b"cd")
    assert claim(matcher).settle(b"zz") == first


def test_a_client_that_says_more_than_a_lead_still_matches_it():
    (_, second), matcher = recorded(b"ab", b"cd")
    assert claim(matcher).settle(b"cdef") == second


def test_the_longest_matching_lead_wins():
    (_, longer), matcher = recorded(b"ab", b"abcd")
    assert claim(matcher).settle(b"abcd") == longer


def test_equal_leads_are_given_out_in_order_of_opening():
    (first, second), matcher = recorded(b"same", b"same")
    assert [claim(matcher, 1).settle(b"same"), claim(matcher, 2).settle(b"same")] == [first, second]


def test_a_server_that_spoke_first_settles_a_claim_before_the_client_says_anything():
    (banner, _), matcher = recorded(None, None)
    assert claim(matcher).settle(b"") == banner


def test_a_claim_without_bytes_waits_when_the_recorded_client_spoke_first():
    _, matcher = recorded(b"hello", b"bye")
    assert claim(matcher).settle(b"") is None


def test_a_client_closing_in_silence_gets_a_silent_recording():
    (_, silent, _), matcher = recorded(b"hello", b"", b"bye")
    assert claim(matcher).settle(b"", final=True) == silent


def test_final_settles_on_the_first_recording_left_when_nothing_fits():
    (first, _), matcher = recorded(b"hello", b"bye")
    assert claim(matcher).settle(b"hel", final=True) == first


def test_a_settled_claim_keeps_its_recording():
    (first, second), matcher = recorded(b"a", b"b")
    pending = claim(matcher)
    assert pending.settle(b"b") == second
    assert pending.settle(b"a", final=True) == second
    assert claim(matcher, 2).settle(b"zzz", final=True) == first


def test_failed_attempts_are_given_out_at_the_syn_in_order_of_opening():
    refused, ok = opened(1, outcome=Outcome.REFUSED), opened(2)
    matcher = Matcher([refused, ok], {2: b"x"})
    assert matcher.open((CLIENT, 1), (SERVER, 80)) == refused
    assert claim(matcher, 2).settle(b"x") == ok


def test_open_returns_none_once_a_key_is_used_up():
    _, matcher = recorded(b"a")
    claim(matcher, 1)
    assert matcher.open((CLIENT, 2), (SERVER, 80)) is None


@given(st.permutations(range(12)), st.lists(st.integers(0, 3), min_size=12, max_size=12))
def test_any_opening_order_of_distinct_requests_gets_every_recording_right(order, cuts):
    leads = [b"request %d;" % i for i in range(12)]
    recordings, matcher = recorded(*leads)
    claims = [claim(matcher, 50000 + i) for i in range(12)]
    got = {}
    for position, i in enumerate(order):
        pending = claims[position]
        lead = leads[i]
        # The bytes arrive in pieces; a piece that cannot decide yet must not settle.
        for end in sorted({len(lead) - cut for cut in range(cuts[position] + 1)}):
            settled = pending.settle(lead[:end])
        got[i] = settled
    assert got == {i: recordings[i] for i in range(12)}
    assert matcher.unused() == []
