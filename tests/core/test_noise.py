import re
import struct

import pytest

from pytest_netplayground.core.events import ConnectionOpened, Data, Direction, HostInfo
from pytest_netplayground.core.noise import (
    IgnoreRule,
    LearnedNoise,
    Noise,
    compare,
    diff_spans,
    learn,
    resolve_check,
)
from pytest_netplayground.errors import ConfigError

C2S, S2C = Direction.C2S, Direction.S2C
OPENED = ConnectionOpened(0.0, 0, ("10.0.0.2", 40000), ("10.0.0.1", 8000))


def http_response(date: str, body: bytes = b"hello\n", length: int | None = None) -> bytes:
    length = len(body) if length is None else length
    return (
        b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6 Python/3.11.2\r\n"
        + f"Date: {date}\r\n".encode()
        + f"Content-Length: {length}\r\n\r\n".encode()
        + body
    )


def backend_start(pid: int, secret: int) -> bytes:
    """A PostgreSQL server's answer to a trusted startup: AuthenticationOk,
    one ParameterStatus, BackendKeyData (process id and secret), ReadyForQuery."""
    status = b"server_version\x0015.5\x00"
    return (
        b"R" + struct.pack("!ii", 8, 0)
        + b"S" + struct.pack("!i", 4 + len(status)) + status
        + b"K" + struct.pack("!iiI", 12, pid, secret)
        + b"Z" + struct.pack("!i", 5) + b"I"
    )


# --------------------------------------------------------------------------- rules


def test_parse_plain_and_scoped_rules():
    plain = IgnoreRule.parse("Date: [^\\r]*")
    assert (plain.pattern.pattern, plain.port, plain.direction) == (b"Date: [^\\r]*", None, None)
    scoped = IgnoreRule.parse("5432:s2c:K.{12}")
    assert (scoped.pattern.pattern, scoped.port, scoped.direction) == (b"K.{12}", 5432, S2C)
    assert IgnoreRule.parse("c2s:x").direction is C2S and IgnoreRule.parse("c2s:x").port is None
    assert IgnoreRule.parse({"pattern": "id=\\d+", "port": "80", "direction": "c2s"}) == IgnoreRule(
        re.compile(b"id=\\d+"), 80, C2S
    )
    assert str(scoped) == "5432:s2c:K.{12}"


@pytest.mark.parametrize(
    "bad, words",
    [
        ("Date: [", "Date: ["),
        ("80:s2c:", "empty"),
        ({"pattern": "x", "port": 70000}, "70000"),
        ({"pattern": "x", "direction": "up"}, "c2s or s2c"),
        ({"regex": "x"}, "pattern, port and direction"),
        (42, "regex string or a dict"),
    ],
)
def test_bad_rules_are_config_errors_naming_the_value(bad, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        IgnoreRule.parse(bad)


def test_a_rule_applies_only_to_its_port_and_direction():
    noise = Noise(ignore=("5432:s2c:K",))
    pg = ConnectionOpened(0.0, 0, ("10.0.0.2", 40000), ("10.0.0.1", 5432))
    assert noise.comparator(pg, S2C, 0) is not None
    assert noise.comparator(pg, C2S, 0) is None
    assert noise.comparator(OPENED, S2C, 0) is None


# --------------------------------------------------------------------------- comparing


def test_date_header_differing_in_content_and_length_is_ignored():
    noise = Noise(ignore=[IgnoreRule.parse("Date: [^\\r]*")])
    compare_turn = noise.comparator(OPENED, S2C, 0)
    recorded = http_response("Mon, 01 Jan 2024 12:00:01 GMT")
    assert compare_turn(recorded, http_response("Tue, 2 Jan 2024 9:13:55 GMT")) is None
    assert compare_turn(recorded, recorded) is None


def test_a_difference_outside_the_rule_is_reported_at_its_live_offset():
    compare_turn = Noise(ignore=["Date: [^\\r]*"]).comparator(OPENED, S2C, 0)
    recorded = http_response("Mon, 01 Jan 2024 12:00:01 GMT", b"hello\n")
    live = http_response("Tuesday, 02 Jan 2024 12:00:01 GMT", b"hellO\n")
    assert compare_turn(recorded, live) == live.index(b"hellO") + 4
    shorter = http_response("Mon, 01 Jan 2024 12:00:01 GMT", b"hell")
    assert compare_turn(recorded, shorter) == shorter.index(b"Content-Length") + len("Content-Length: ")


def test_without_rules_the_comparator_is_exact():
    assert Noise().comparator(OPENED, S2C, 0) is None
    assert compare(b"abc", b"abd") == 2
    assert compare(b"abc", b"abcd") == 3
    assert compare(b"abcd", b"ab") == 2


def test_learned_spans_accept_anything_of_any_length_there():
    recorded = b"A" * 5 + b"noise1" + b"BBB" + b"n2" + b"CC"
    spans = ((5, 11), (14, 16))
    noise = Noise(learned=[LearnedNoise(0, S2C, 1, spans)])
    compare_turn = noise.comparator(OPENED, S2C, 1)
    assert noise.comparator(OPENED, S2C, 0) is None and noise.comparator(OPENED, C2S, 1) is None
    assert compare_turn(recorded, b"AAAAA" + b"other noise, longer" + b"BBB" + b"CC") is None
    assert compare_turn(recorded, b"AAAAA" + b"BBB" + b"xxxxxxxx" + b"CC") is None
    live = b"AAAAAxyzBBxCC"
    assert compare_turn(recorded, live) == 10  # "BBB" never comes: they part after its longest start, "BB"
    live = b"AAAAAxBBByCCextra"
    assert compare_turn(recorded, live) == len(live) - len(b"extra")
    assert compare_turn(recorded, b"AAAAxBBBCC") == 4


def test_learned_spans_and_rules_together():
    recorded = http_response("Mon, 01 Jan 2024 12:00:01 GMT", b'{"id": 17}')
    start = recorded.index(b"17")
    noise = Noise(ignore=["Date: [^\\r]*"], learned=[LearnedNoise(0, S2C, 0, [(start, start + 2)])])
    live = http_response("Tue, 02 Jan 2024 08:00:00 GMT", b'{"id": 123456}', length=10)
    assert noise.comparator(OPENED, S2C, 0)(recorded, live) is None
    wrong = http_response("Tue, 02 Jan 2024 08:00:00 GMT", b'{"ID": 123456}', length=10)
    assert noise.comparator(OPENED, S2C, 0)(recorded, wrong) == wrong.index(b"ID")


def test_postgres_backend_key_data_as_learned_noise():
    first, second = backend_start(4242, 0xDEADBEEF), backend_start(4250, 0x01234567)
    spans = diff_spans(first, second)
    key = first.index(b"K") + 5
    assert all(key <= start and end <= key + 8 for start, end in spans)
    noise = Noise(learned=[LearnedNoise(0, S2C, 0, spans)])
    pg = ConnectionOpened(0.0, 0, ("10.0.0.2", 40000), ("10.0.0.1", 5432))
    later = backend_start(4251, 0x0BADF00D)
    # Two runs' secrets may share a byte by chance; the replay's may not: the
    # learned region is then narrower than the field, which a rule covers.
    result = noise.comparator(pg, S2C, 0)(first, later)
    assert result is None or key <= result < key + 8
    rule = Noise(ignore=[IgnoreRule.parse(b"(?s)K\\x00\\x00\\x00\\x0c.{8}")])
    assert rule.comparator(pg, S2C, 0)(first, later) is None
    assert rule.comparator(pg, S2C, 0)(first, later.replace(b"15.5", b"16.1")) == first.index(b"15.5") + 1


# --------------------------------------------------------------------------- learning


def test_diff_spans_cover_a_whole_date_value():
    first = http_response("Mon, 01 Jan 2024 12:00:01 GMT")
    second = http_response("Mon, 01 Jan 2024 12:00:02 GMT")
    spans = diff_spans(first, second)
    assert [first[s:e] for s, e in spans] == [b"Mon, 01 Jan 2024 12:00:01 GMT"]
    live = http_response("Wed, 31 Dec 2025 23:59:59 GMT")
    assert compare(first, live, spans=spans) is None
    assert diff_spans(first, first) == ()


def test_diff_spans_of_large_differing_middles_is_one_span():
    first = b"head\n" + b"\xff" * 40000 + b"\ntail"
    second = b"head\n" + b"\xfe" * 50000 + b"\ntail"
    assert diff_spans(first, second) == ((5, 40005),)


def _recording(date: str, pid: int) -> list:
    return [
        ConnectionOpened(0.0, 0, ("10.0.0.2", 40000), ("10.0.0.1", 8000)),
        ConnectionOpened(0.1, 1, ("10.0.0.2", 40001), ("10.0.0.1", 5432)),
        Data(0.2, 0, C2S, b"GET / HTTP/1.0\r\n\r\n"),
        Data(0.3, 0, S2C, http_response(date)[:20]),
        Data(0.3, 0, S2C, http_response(date)[20:]),
        Data(0.4, 1, C2S, b"startup"),
        Data(0.5, 1, S2C, backend_start(pid, pid * 7919)),
        Data(0.6, 1, C2S, b"query"),
        Data(0.7, 1, S2C, b"answer"),
    ]


def test_learn_pairs_connections_and_turns_and_returns_first_recording_spans():
    first = _recording("Mon, 01 Jan 2024 12:00:01 GMT", 4242)
    second = _recording("Mon, 01 Jan 2024 12:00:03 GMT", 4243)
    # The second recording's connections opened in another order, with other ports.
    second = [e for e in second if isinstance(e, ConnectionOpened)][::-1] + second[2:]
    second[0] = ConnectionOpened(0.0, 1, ("10.0.0.2", 50001), ("10.0.0.1", 5432))
    second[1] = ConnectionOpened(0.0, 0, ("10.0.0.2", 50000), ("10.0.0.1", 8000))
    learned = learn(first, second)
    assert [(n.conn, n.direction, n.turn) for n in learned] == [(0, S2C, 0), (1, S2C, 0)]
    http = http_response("Mon, 01 Jan 2024 12:00:01 GMT")
    assert [http[s:e] for s, e in learned[0].spans] == [b"Mon, 01 Jan 2024 12:00:01 GMT"]
    pg = backend_start(4242, 4242 * 7919)
    key = pg.index(b"K") + 5
    assert all(key <= s and e <= key + 8 for s, e in learned[1].spans)


def test_a_turn_missing_from_the_second_recording_is_noise_as_a_whole():
    first = _recording("x", 1)
    second = first[:-1]
    assert learn(first, second) == (LearnedNoise(1, S2C, 1, [(0, len(b"answer"))]),)
    assert learn(first, first) == ()


# --------------------------------------------------------------------------- checking


def test_check_by_name_or_address_decides_which_sides_count():
    hosts = [HostInfo("10.0.0.1", "server"), HostInfo("10.0.0.2", "client")]
    only_client = Noise(checked=resolve_check(["client"], hosts))
    assert only_client.is_checked(OPENED, C2S) and not only_client.is_checked(OPENED, S2C)
    only_server = Noise(checked=resolve_check(["10.0.0.1"], hosts))
    assert only_server.is_checked(OPENED, S2C) and not only_server.is_checked(OPENED, C2S)
    everyone = Noise(checked=resolve_check([], hosts))
    assert everyone.is_checked(OPENED, S2C) and everyone.is_checked(OPENED, C2S)
    nobody = Noise(checked=resolve_check(["ghost"], hosts))
    assert not nobody.is_checked(OPENED, S2C) and not nobody.is_checked(OPENED, C2S)
