"""Divergence values and the report a failing replay shows."""

from __future__ import annotations

import pytest

from pytest_netplayground.core.addressing import ConnectionKey, Endpoint
from pytest_netplayground.core.divergence import (
    ByteMismatch,
    DivergenceReport,
    ExtraBytes,
    MissingBytes,
    MissingReset,
    Stall,
    UnexpectedReset,
    UnrecordedConnection,
    UnusedRecording,
    ordinal_word,
)
from pytest_netplayground.core.events import Direction

C2S, S2C = Direction.C2S, Direction.S2C
WEB = ConnectionKey("10.0.0.2", "10.0.0.1", 80)
DB = ConnectionKey("10.0.0.2", "10.0.0.3", 5432)

REQUEST = b"GET /index.html HTTP/1.1\r\nHost: example\r\n\r\n"
CHANGED = REQUEST.replace(b"index", b"admin")


def mismatch(conn=3, key=WEB, ordinal=2, direction=C2S, expected=REQUEST, actual=CHANGED, offset=5):
    return ByteMismatch(conn, key, ordinal, direction, offset, expected[:53], actual[:53])


def unused(conn=9, ordinal=1):
    return UnusedRecording(conn, WEB, ordinal)


@pytest.mark.parametrize(
    ("n", "word"),
    [
        (1, "1st"),
        (2, "2nd"),
        (3, "3rd"),
        (4, "4th"),
        (11, "11th"),
        (12, "12th"),
        (13, "13th"),
        (21, "21st"),
        (102, "102nd"),
        (111, "111th"),
    ],
)
def test_ordinal_word(n, word):
    assert ordinal_word(n) == word


def test_snippet_offset_defaults_to_16_bytes_before_the_difference():
    assert mismatch(offset=40).snippet_offset == 24
    assert mismatch(offset=5).snippet_offset == 0


def test_empty_report_is_ok():
    report = DivergenceReport()
    assert report.ok
    assert len(report) == 0
    assert str(report) == "replay matched the recording: no divergences"


def test_report_with_findings_is_not_ok_and_counts_them():
    report = DivergenceReport([mismatch(), unused()])
    assert not report.ok
    assert len(report) == 2
    assert list(report) == [mismatch(), unused()]


def test_report_truthiness_is_that_of_a_collection_of_findings():
    assert bool(DivergenceReport([unused()])) is True
    assert bool(DivergenceReport()) is False


def test_by_connection_groups_in_connection_order_with_unrecorded_last():
    unrecorded = UnrecordedConnection(Endpoint("10.0.0.2", 41000), Endpoint("10.0.0.1", 81))
    a, b, c = unused(conn=9), mismatch(conn=3), MissingReset(3, WEB, 2, S2C)
    report = DivergenceReport([unrecorded, a, b, c])
    assert report.by_connection() == {3: (b, c), 9: (a,), None: (unrecorded,)}


def test_summary_counts_divergences_and_connections():
    report = DivergenceReport([mismatch(conn=3), MissingReset(3, WEB, 2, S2C), unused(conn=9)])
    assert report.format().splitlines()[0] == "3 divergences in 2 connections"


def test_summary_is_singular_for_one():
    assert str(DivergenceReport([unused()])).splitlines()[0] == "1 divergence in 1 connection"


def test_each_unrecorded_connection_counts_as_a_connection():
    a = UnrecordedConnection(Endpoint("10.0.0.2", 41000), Endpoint("10.0.0.1", 81))
    b = UnrecordedConnection(Endpoint("10.0.0.2", 41001), Endpoint("10.0.0.1", 81))
    assert str(DivergenceReport([a, b])).splitlines()[0] == "2 divergences in 2 connections"


def test_changed_http_request_line_reads_well():
    lines = DivergenceReport([mismatch()]).format().splitlines()
    assert lines[0] == "1 divergence in 1 connection"
    assert lines[1] == "#3 10.0.0.2 -> 10.0.0.1:80 (2nd of that key), c2s: bytes differ at offset 5"
    expected, actual = lines[2:4]
    assert expected.startswith("    expected: 47 45 54 20 2f 69 6e 64 65 78")
    assert expected.endswith("GET /index.html HTTP/")
    assert actual.startswith("    actual:   47 45 54 20 2f 61 64 6d 69 6e")
    assert actual.endswith("GET /admin.html HTTP/")
    assert len(lines) == 5


def test_carets_point_at_the_first_differing_byte_in_hex_and_text():
    expected, actual, carets = DivergenceReport([mismatch()]).format().splitlines()[2:5]
    hex_column = expected.index("69 6e 64")  # "ind", byte 5 onwards
    text_column = expected.index("GET /index") + 5
    assert carets.index("^^") == hex_column
    assert carets.rindex("^") == text_column
    assert actual[hex_column : hex_column + 2] == "61"
    assert actual[text_column] == "a"


def test_hex_view_starts_eight_bytes_before_a_late_difference():
    expected = bytes(range(48, 48 + 64))
    actual = expected[:16] + b"!" + expected[17:]
    item = ByteMismatch(1, WEB, 1, C2S, offset=100, expected=expected, actual=actual, snippet_offset=84)
    row = DivergenceReport([item]).format().splitlines()[2]
    assert row.startswith("    expected: 38 39 3a")  # stream offset 92 is snippet index 8
    assert row.endswith("89:;<=>?@ABCDEFGHIJKLMNO")


def test_unprintable_bytes_show_as_dots_in_the_text_column():
    item = ByteMismatch(1, WEB, 1, S2C, offset=2, expected=b"ok\r\n", actual=b"ok\n\x00")
    expected, actual = DivergenceReport([item]).format().splitlines()[2:4]
    assert expected.endswith("6f 6b 0d 0a  ok..")
    assert actual.endswith("6f 6b 0a 00  ok..")


def test_extra_bytes_line_and_view():
    item = ExtraBytes(
        4,
        WEB,
        1,
        S2C,
        offset=19,
        sent=24,
        expected=b"200 OK\r\n",
        actual=b"200 OK\r\nextra",
        snippet_offset=11,
    )
    lines = DivergenceReport([item]).format().splitlines()
    assert lines[1] == (
        "#4 10.0.0.2 -> 10.0.0.1:80 (1st of that key), s2c: extra bytes: the server sent 24 bytes, "
        "19 were recorded"
    )
    assert lines[3].endswith("200 OK..extra")
    assert lines[4].rindex("^") == lines[3].index("extra")


def test_missing_bytes_line():
    item = MissingBytes(4, WEB, 1, C2S, sent=30, recorded=100, expected=b"x" * 64, actual=b"x" * 16)
    assert item.offset == 30
    line = DivergenceReport([item]).format().splitlines()[1]
    assert line.endswith("c2s: missing bytes: the client sent 30 of 100 recorded bytes")


def test_reset_lines_name_the_side():
    report = DivergenceReport([UnexpectedReset(2, DB, 1, C2S), MissingReset(2, DB, 1, S2C)])
    lines = report.format().splitlines()
    assert lines[1] == (
        "#2 10.0.0.2 -> 10.0.0.3:5432 (1st of that key), "
        "c2s: the client reset the connection; the recorded client did not"
    )
    assert lines[2].endswith("s2c: the recorded server reset the connection; the live server did not")


def test_stall_line_says_how_long_and_what_for():
    item = Stall(5, WEB, 3, C2S, "44 bytes c2s from the client (0 so far) before replaying 19 bytes s2c", 5.0)
    line = DivergenceReport([item]).format().splitlines()[1]
    assert line == (
        "#5 10.0.0.2 -> 10.0.0.1:80 (3rd of that key), c2s: stalled 5.0 s waiting for "
        "44 bytes c2s from the client (0 so far) before replaying 19 bytes s2c"
    )


def test_unused_recording_line():
    line = str(DivergenceReport([unused(conn=9, ordinal=2)])).splitlines()[1]
    assert line == "#9 10.0.0.2 -> 10.0.0.1:80 (2nd of that key), recorded but never opened on replay"


def test_unrecorded_connection_line_names_both_endpoints():
    item = UnrecordedConnection(Endpoint("10.0.0.2", 41000), Endpoint("10.0.0.1", 81))
    assert item.key == ConnectionKey("10.0.0.2", "10.0.0.1", 81)
    line = str(DivergenceReport([item])).splitlines()[1]
    assert line == (
        "10.0.0.2:41000 -> 10.0.0.1:81, opened on replay but no recording matches it; it was refused"
    )


def test_findings_of_one_connection_are_listed_together():
    report = DivergenceReport([mismatch(conn=3), unused(conn=1), MissingReset(3, WEB, 2, S2C)])
    headers = [line.split(",")[0].split()[0] for line in report.format().splitlines()[1:] if line[0] == "#"]
    assert headers == ["#1", "#3", "#3"]
