"""Cassette codec: exact format, round trips, and errors for every kind of bad input."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_netplayground.core import codec_base, decoding
from pytest_netplayground.core.codec import (
    MAX_LINE,
    Decoder,
    End,
    decode_record,
    encode_end,
    encode_event,
    encode_header,
    encode_record,
    is_text,
)
from pytest_netplayground.core.events import (
    FORMAT_VERSION,
    Closed,
    ConnectionOpened,
    Data,
    Direction,
    HalfClosed,
    Header,
    HostInfo,
    Outcome,
    Reset,
)
from pytest_netplayground.errors import CassetteFormatError

# ---------------------------------------------------------------- strategies

times = st.integers(min_value=0, max_value=10**15).map(lambda us: us / 1e6)
conns = st.integers(min_value=0, max_value=10**6)
ipv4 = st.integers(min_value=0, max_value=2**32 - 1).map(
    lambda n: ".".join(str((n >> shift) & 0xFF) for shift in (24, 16, 8, 0))
)
endpoints = st.tuples(ipv4, st.integers(min_value=0, max_value=65535))
directions = st.sampled_from(list(Direction))

# Printable text plus the three whitespace controls a text protocol uses.
printable_text = st.text(
    alphabet=st.one_of(
        st.characters(blacklist_categories=("Cc", "Cs")),
        st.sampled_from("\t\r\n"),
    )
)


@st.composite
def subnets(draw):
    prefix = draw(st.integers(min_value=8, max_value=30))
    base = draw(st.integers(min_value=0, max_value=2**32 - 1)) >> (32 - prefix) << (32 - prefix)
    dotted = ".".join(str((base >> shift) & 0xFF) for shift in (24, 16, 8, 0))
    return f"{dotted}/{prefix}"


headers = st.builds(
    Header,
    subnet=subnets(),
    hosts=st.lists(st.builds(HostInfo, address=ipv4, name=st.text(), command=st.text()), max_size=4),
    started=st.integers(min_value=0, max_value=4 * 10**15).map(lambda us: us / 1e6),
    tool_version=st.text(max_size=20),
)

payloads = st.one_of(st.binary(max_size=300), printable_text.map(lambda s: s.encode("utf-8")))

events = st.one_of(
    st.builds(
        ConnectionOpened,
        t=times,
        conn=conns,
        client=endpoints,
        server=endpoints,
        outcome=st.sampled_from(list(Outcome)),
    ),
    st.builds(Data, t=times, conn=conns, direction=directions, data=payloads),
    st.builds(HalfClosed, t=times, conn=conns, direction=directions),
    st.builds(Reset, t=times, conn=conns, direction=directions),
    st.builds(Closed, t=times, conn=conns),
)

HEADER = Header(
    subnet="10.0.0.0/24",
    hosts=(HostInfo("10.0.0.1", "server", "python -m http.server 80"), HostInfo("10.0.0.2", "client", "")),
    started=1732170000.123456,
    tool_version="0.1.0",
)


def opened(conn: int = 0, t: float = 0.001234) -> ConnectionOpened:
    return ConnectionOpened(t, conn, ("10.0.0.2", 40000 + conn), ("10.0.0.1", 80))


@st.composite
def cassettes(draw):
    """A structurally valid cassette: header, events on opened connections, maybe an end marker."""
    header = draw(headers)
    records: list = [header]
    open_conns: list[int] = []
    for _ in range(draw(st.integers(min_value=0, max_value=12))):
        if not open_conns or draw(st.booleans()):
            conn = len(open_conns)
            open_conns.append(conn)
            records.append(
                draw(
                    st.builds(
                        ConnectionOpened,
                        t=times,
                        conn=st.just(conn),
                        client=endpoints,
                        server=endpoints,
                        outcome=st.sampled_from(list(Outcome)),
                    )
                )
            )
        else:
            conn = draw(st.sampled_from(open_conns))
            records.append(
                draw(
                    st.one_of(
                        st.builds(Data, t=times, conn=st.just(conn), direction=directions, data=payloads),
                        st.builds(HalfClosed, t=times, conn=st.just(conn), direction=directions),
                        st.builds(Reset, t=times, conn=st.just(conn), direction=directions),
                        st.builds(Closed, t=times, conn=st.just(conn)),
                    )
                )
            )
    if draw(st.booleans()):
        records.append(End(draw(times)))
    return records


def decode_in_pieces(data: bytes, cuts: list[int]) -> tuple[Decoder, list]:
    decoder = Decoder()
    records = []
    previous = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts) + [len(data)]:
        records += decoder.feed(data[previous:cut])
        previous = cut
    records += decoder.finish()
    return decoder, records


# ---------------------------------------------------------------- exact format


def test_header_line_has_fixed_key_order_and_readable_separators():
    line = encode_header(HEADER)
    assert line == (
        b'{"netplay_cassette": 2, "tool_version": "0.1.0", "subnet": "10.0.0.0/24", '
        b'"started": 1732170000.123456, "hosts": [{"address": "10.0.0.1", "name": "server", '
        b'"command": "python -m http.server 80"}, {"address": "10.0.0.2", "name": "client", "command": ""}]}\n'
    )


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            opened(),
            (
                b'{"t": 0.001234, "ev": "open", "conn": 0, "client": "10.0.0.2:40000", '
                b'"server": "10.0.0.1:80", "outcome": "established"}\n'
            ),
        ),
        (
            ConnectionOpened(2.5, 3, ("10.0.0.2", 40003), ("10.0.0.1", 81), Outcome.REFUSED),
            (
                b'{"t": 2.500000, "ev": "open", "conn": 3, "client": "10.0.0.2:40003", '
                b'"server": "10.0.0.1:81", "outcome": "refused"}\n'
            ),
        ),
        (
            Data(0.002, 0, Direction.C2S, b"GET / HTTP/1.1\r\n"),
            b'{"t": 0.002000, "ev": "data", "conn": 0, "dir": "c2s", "text": "GET / HTTP/1.1\\r\\n"}\n',
        ),
        (
            Data(0.003, 0, Direction.S2C, b"\x00\xff\x01"),
            b'{"t": 0.003000, "ev": "data", "conn": 0, "dir": "s2c", "b64": "AP8B"}\n',
        ),
        (HalfClosed(0.004, 0, Direction.C2S), b'{"t": 0.004000, "ev": "shut", "conn": 0, "dir": "c2s"}\n'),
        (Reset(0.005, 0, Direction.S2C), b'{"t": 0.005000, "ev": "reset", "conn": 0, "dir": "s2c"}\n'),
        (Closed(0.006, 0), b'{"t": 0.006000, "ev": "close", "conn": 0}\n'),
    ],
)
def test_event_lines(event, expected):
    assert encode_event(event) == expected
    assert decode_record(expected) == event


def test_end_marker():
    assert encode_end(12.25) == b'{"t": 12.250000, "ev": "end"}\n'
    assert decode_record(encode_end(12.25)) == End(12.25)
    assert encode_record(End(1.0)) == encode_end(1.0)


def test_times_are_rounded_to_microseconds():
    line = encode_event(Closed(1.23456789, 0))
    assert b'"t": 1.234568,' in line
    assert decode_record(line).t == 1.234568


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_encoder_rejects_times_that_cannot_be_read_back(bad):
    with pytest.raises(ValueError, match="finite, non-negative"):
        encode_event(Closed(bad, 0))


def test_negative_zero_is_written_as_zero():
    assert encode_event(Closed(-0.0, 0)).startswith(b'{"t": 0.000000,')


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"plain ascii", True),
        (b"tabs\tand\r\nnewlines", True),
        ("caf\u00e9 \u2603".encode(), True),
        (b"", True),
        (b"\x00", False),
        (b"esc \x1b[0m", False),
        (b"del \x7f", False),
        ("c1 \u0085".encode(), False),
        (b"\xff\xfe", False),
        (b"\xed\xa0\x80", False),  # an encoded surrogate is not valid UTF-8
    ],
)
def test_text_or_base64_choice(data, text):
    assert is_text(data) is text
    obj = json.loads(encode_event(Data(0, 0, Direction.C2S, data)))
    assert ("text" in obj) is text
    assert ("b64" in obj) is not text
    if not text:
        assert base64.b64decode(obj["b64"]) == data


def test_lines_are_ascii_even_for_non_ascii_text():
    line = encode_event(Data(0, 0, Direction.C2S, "h\u00e9llo \U0001f600".encode()))
    line.decode("ascii")
    assert decode_record(line).data == "h\u00e9llo \U0001f600".encode()


def test_encoder_refuses_a_line_the_decoder_would_reject(monkeypatch):
    monkeypatch.setattr(codec_base, "MAX_LINE", 200)
    encode_event(Data(0, 0, Direction.C2S, b"x" * 100))
    with pytest.raises(ValueError, match="split Data payloads"):
        encode_event(Data(0, 0, Direction.C2S, b"x" * 300))


# ---------------------------------------------------------------- round trips


@given(headers)
def test_header_round_trip(header):
    line = encode_header(header)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_record(line) == header


@given(events)
def test_event_round_trip(event):
    line = encode_event(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    line.decode("ascii")
    assert decode_record(line) == event


@given(st.binary(), directions)
def test_arbitrary_binary_round_trip(data, direction):
    event = Data(0.5, 1, direction, data)
    assert decode_record(encode_event(event)) == event


@given(printable_text)
def test_printable_text_is_stored_as_text(text):
    line = encode_event(Data(0, 0, Direction.S2C, text.encode("utf-8")))
    assert json.loads(line)["text"] == text


@given(cassettes(), st.lists(st.integers(min_value=0), max_size=6))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_stream_round_trip_in_arbitrary_pieces(records, cuts):
    blob = b"".join(encode_record(r) for r in records)
    decoder, decoded = decode_in_pieces(blob, cuts)
    assert decoded == records
    assert decoder.header == records[0]
    assert decoder.complete is isinstance(records[-1], End)
    assert decoder.offset == len(blob)
    assert decoder.pending == b""


def test_decoder_reports_where_each_record_starts():
    lines = [encode_header(HEADER), encode_event(opened()), encode_event(Closed(1, 0))]
    decoder = Decoder()
    decoder.receive(b"".join(lines))
    spans = []
    while decoder.next_record() is not None:
        spans.append((decoder.last_offset, decoder.last_length))
    assert spans == [
        (0, len(lines[0])),
        (len(lines[0]), len(lines[1])),
        (len(lines[0]) + len(lines[1]), len(lines[2])),
    ]


def test_decoder_keeps_the_partial_trailing_line():
    head = encode_header(HEADER)
    line = encode_event(opened())
    decoder = Decoder()
    assert decoder.feed(head + line[:10]) == [HEADER]
    assert decoder.pending == line[:10]
    assert decoder.offset == len(head)
    assert decoder.feed(line[10:]) == [opened()]
    assert decoder.pending == b""


def test_crlf_line_endings_are_tolerated():
    blob = encode_header(HEADER).replace(b"\n", b"\r\n") + encode_event(opened()).replace(b"\n", b"\r\n")
    assert Decoder().feed(blob) == [HEADER, opened()]


# ---------------------------------------------------------------- errors


def first_error(blob: bytes) -> CassetteFormatError:
    decoder = Decoder()
    with pytest.raises(CassetteFormatError) as info:
        decoder.feed(blob)
        decoder.finish()
    return info.value


def test_unknown_version_says_what_was_found_and_what_to_do():
    err = first_error(b'{"netplay_cassette": 7, "subnet": "10.0.0.0/24"}\n')
    assert err.offset == 0
    assert "version 7" in str(err)
    assert f"reads versions 1, {FORMAT_VERSION}" in str(err)
    assert "upgrade" in str(err)


@pytest.mark.parametrize(
    "first_line",
    [
        b"hello world\n",
        b"\x89PNG\r\n\x1a\n",
        b"[1, 2, 3]\n",
        encode_event(opened()),
        encode_end(1.0),
        b"\n",
    ],
)
def test_a_first_line_that_is_not_a_header(first_line):
    err = first_error(first_line)
    assert "not a Net Playground cassette" in str(err)
    assert err.offset == 0


def test_foreign_binary_file_is_rejected_before_any_newline():
    decoder = Decoder()
    with pytest.raises(CassetteFormatError, match="not a Net Playground cassette"):
        decoder.feed(b"\x7fELF\x02\x01\x01" + b"\x00" * 1000)


def test_empty_input():
    err = first_error(b"")
    assert "empty file" in str(err) and "not a Net Playground cassette" in str(err)


HEAD = encode_header(HEADER)
OPEN = encode_event(opened())


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        (b"{not json}\n", "not valid JSON"),
        (b"\xff\xfe{}\n", "not UTF-8"),
        (b'"just a string"\n', "expected a JSON object"),
        (b'{"t": 1, "ev": "dance", "conn": 0}\n', "unknown event type ev='dance'; expected one of \"open\""),
        (b'{"t": 1, "conn": 0}\n', 'no "ev" field'),
        (b'{"ev": "close", "conn": 0}\n', 'missing field "t"'),
        (
            b'{"t": "soon", "ev": "close", "conn": 0}\n',
            "field \"t\" = 'soon'; expected a non-negative number",
        ),
        (b'{"t": NaN, "ev": "close", "conn": 0}\n', "not valid JSON"),
        (b'{"t": -1, "ev": "close", "conn": 0}\n', 'field "t" = -1'),
        (b'{"t": true, "ev": "close", "conn": 0}\n', 'field "t" = True'),
        (b'{"t": 1, "ev": "close", "conn": "0"}\n', "field \"conn\" = '0'; expected a non-negative integer"),
        (b'{"t": 1, "ev": "close", "conn": 0.5}\n', 'field "conn" = 0.5'),
        (
            b'{"t": 1, "ev": "shut", "conn": 0, "dir": "up"}\n',
            'field "dir" = \'up\'; expected one of "c2s", "s2c"',
        ),
        (b'{"t": 1, "ev": "data", "conn": 0, "dir": "c2s"}\n', 'exactly one of the fields "text" and "b64"'),
        (b'{"t": 1, "ev": "data", "conn": 0, "dir": "c2s", "text": "a", "b64": "YQ=="}\n', "found both"),
        (b'{"t": 1, "ev": "data", "conn": 0, "dir": "c2s", "b64": "not base64!"}\n', "bad base64"),
        (b'{"t": 1, "ev": "data", "conn": 0, "dir": "c2s", "b64": "YQ"}\n', "bad base64"),
        (b'{"t": 1, "ev": "data", "conn": 0, "dir": "c2s", "text": "\\ud800"}\n', "unpaired surrogate"),
        (b'{"t": 1, "ev": "data", "conn": 0, "dir": "c2s", "text": 5}\n', 'field "text" = 5'),
        (
            (
                b'{"t": 1, "ev": "open", "conn": 1, "client": "10.0.0.2", "server": "10.0.0.1:80", '
                b'"outcome": "established"}\n'
            ),
            "field \"client\" = '10.0.0.2'; expected an address and port",
        ),
        (
            (
                b'{"t": 1, "ev": "open", "conn": 1, "client": "10.0.0.2:99999", "server": "10.0.0.1:80", '
                b'"outcome": "established"}\n'
            ),
            'field "client"',
        ),
        (
            (
                b'{"t": 1, "ev": "open", "conn": 1, "client": "10.0.0.2:1", "server": "999.0.0.1:80", '
                b'"outcome": "established"}\n'
            ),
            'field "server"',
        ),
        (
            (
                b'{"t": 1, "ev": "open", "conn": 1, "client": "10.0.0.2:1", "server": "10.0.0.1:80", '
                b'"outcome": "maybe"}\n'
            ),
            'field "outcome"',
        ),
        (b'{"t": 1, "ev": "close", "conn": 5}\n', "connection 5, which was never opened"),
        (OPEN, "connection 0 is opened twice"),
        (HEAD, "a second header"),
        (b"[" * 100_000 + b"\n", "not valid JSON"),
        (b'{"t": 1' + b"0" * 5000 + b', "ev": "close", "conn": 0}\n', "not valid JSON"),
        (b"\n", "empty line"),
    ],
)
def test_bad_line_after_the_header(line, fragment):
    err = first_error(HEAD + OPEN + line)
    assert fragment in str(err)
    assert err.offset == len(HEAD) + len(OPEN)
    assert str(err).startswith(f"at byte {len(HEAD) + len(OPEN)}: ")


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        (b'{"netplay_cassette": "1"}\n', "field \"netplay_cassette\" = '1'; expected an integer"),
        (
            b'{"netplay_cassette": 1, "tool_version": "x", "subnet": "10.0.0.1/24", "started": 0, "hosts": []}\n',
            'field "subnet"',
        ),
        (
            b'{"netplay_cassette": 1, "tool_version": "x", "subnet": "10.0.0.0/24", "started": 0}\n',
            'missing field "hosts"',
        ),
        (
            (
                b'{"netplay_cassette": 1, "tool_version": "x", "subnet": "10.0.0.0/24", "started": 0, '
                b'"hosts": [{"name": "a"}]}\n'
            ),
            'header host #0 record is missing field "address"',
        ),
        (
            (
                b'{"netplay_cassette": 1, "tool_version": "x", "subnet": "10.0.0.0/24", "started": 0, '
                b'"hosts": [3]}\n'
            ),
            'field "hosts"',
        ),
    ],
)
def test_bad_header(header, fragment):
    err = first_error(header)
    assert fragment in str(err)
    assert err.offset == 0


def test_nothing_may_follow_the_end_marker():
    err = first_error(HEAD + OPEN + encode_end(1) + encode_event(Closed(2, 0)))
    assert "after the end marker" in str(err)
    assert err.offset == len(HEAD) + len(OPEN) + len(encode_end(1))


def test_truncated_record_names_its_offset():
    blob = HEAD + OPEN + encode_event(Closed(1, 0))[:-5]
    decoder = Decoder()
    assert decoder.feed(blob) == [HEADER, opened()]
    assert decoder.pending == encode_event(Closed(1, 0))[:-5]
    with pytest.raises(
        CassetteFormatError, match="truncated record: .*expected a newline-terminated JSON record"
    ):
        decoder.finish()
    assert decoder.offset == len(HEAD) + len(OPEN)
    with pytest.raises(CassetteFormatError) as info:
        decoder.finish()
    assert info.value.offset == len(HEAD) + len(OPEN)


def test_a_decoder_stays_failed_after_an_error():
    decoder = Decoder()
    with pytest.raises(CassetteFormatError):
        decoder.feed(b"garbage\n")
    with pytest.raises(CassetteFormatError, match="not a Net Playground cassette"):
        decoder.feed(HEAD)


def test_records_before_a_bad_line_are_available_one_by_one():
    decoder = Decoder()
    decoder.receive(HEAD + OPEN + b"oops\n")
    assert decoder.next_record() == HEADER
    assert decoder.next_record() == opened()
    with pytest.raises(CassetteFormatError):
        decoder.next_record()


def test_overlong_partial_line_fails_as_soon_as_it_exceeds_the_limit():
    decoder = Decoder(max_line=1000)
    decoder.feed(HEAD + b'{"t": ' + b"1" * 900)
    with pytest.raises(CassetteFormatError, match="longer than the 1000-byte limit") as info:
        decoder.feed(b"1" * 200)
    assert info.value.offset == len(HEAD)
    assert decoder.buffered <= 1000 + 200 + 6


def test_overlong_complete_line_is_rejected():
    decoder = Decoder(max_line=200)
    decoder.feed(HEAD[:0])
    with pytest.raises(CassetteFormatError, match="longer than the 200-byte limit"):
        decoder.feed(HEAD + OPEN + encode_event(Data(0, 0, Direction.C2S, b"x" * 300)))


def test_default_limit_is_sixteen_mebibytes():
    assert MAX_LINE == 16 * 1024 * 1024
    decoder = Decoder()
    decoder.feed(HEAD)
    chunk = b"a" * (1024 * 1024)
    with pytest.raises(CassetteFormatError, match="limit"):
        for _ in range(17):
            decoder.feed(chunk)
    assert decoder.buffered <= MAX_LINE + len(chunk)


# ---------------------------------------------------------------- fuzzing


def only_format_errors(blob: bytes, cuts: list[int]) -> list | None:
    try:
        return decode_in_pieces(blob, cuts)[1]
    except CassetteFormatError as exc:
        assert exc.offset is not None
        assert 0 <= exc.offset <= len(blob)
        assert str(exc).startswith(f"at byte {exc.offset}: ")
        return None


@given(st.binary(max_size=2000), st.lists(st.integers(min_value=0), max_size=4))
def test_arbitrary_bytes_raise_only_format_errors(blob, cuts):
    only_format_errors(blob, cuts)


@given(
    st.lists(
        st.sampled_from(
            [
                b"{",
                b"}",
                b'"',
                b":",
                b",",
                b"\n",
                b"[",
                b"]",
                b"1",
                b"-",
                b"e",
                b".",
                b'"ev"',
                b'"t"',
                b'"conn"',
                b'"netplay_cassette"',
                b'"data"',
                b'"open"',
                b"\\u",
                b"true",
                b"null",
                b" ",
            ]
        ),
        max_size=80,
    ),
    st.lists(st.integers(min_value=0), max_size=4),
)
def test_json_like_garbage_raises_only_format_errors(tokens, cuts):
    only_format_errors(HEAD + b"".join(tokens), cuts)


mutations = st.one_of(
    st.tuples(st.just("flip"), st.integers(min_value=0), st.integers(min_value=1, max_value=255)),
    st.tuples(st.just("delete"), st.integers(min_value=0), st.integers(min_value=1, max_value=40)),
    st.tuples(st.just("insert"), st.integers(min_value=0), st.binary(min_size=1, max_size=10)),
    st.tuples(st.just("truncate"), st.integers(min_value=0), st.just(0)),
)


def mutate(blob: bytes, mutation) -> bytes:
    kind, where, arg = mutation
    where = where % (len(blob) + 1)
    if kind == "flip":
        if where == len(blob):
            return blob
        return blob[:where] + bytes([blob[where] ^ arg]) + blob[where + 1 :]
    if kind == "delete":
        return blob[:where] + blob[where + arg :]
    if kind == "insert":
        return blob[:where] + arg + blob[where:]
    return blob[:where]


@given(
    cassettes(), st.lists(mutations, min_size=1, max_size=3), st.lists(st.integers(min_value=0), max_size=3)
)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_mutated_cassettes_raise_only_format_errors(records, changes, cuts):
    blob = b"".join(encode_record(r) for r in records)
    for change in changes:
        blob = mutate(blob, change)
    only_format_errors(blob, cuts)


@given(cassettes(), st.integers(min_value=0))
def test_truncation_loses_only_the_last_line(records, cut):
    lines = [encode_record(r) for r in records]
    blob = b"".join(lines)
    cut = cut % (len(blob) + 1)
    decoder = Decoder()
    decoded = decoder.feed(blob[:cut])
    boundaries = [0]
    for line in lines:
        boundaries.append(boundaries[-1] + len(line))
    complete = max(i for i, b in enumerate(boundaries) if b <= cut)
    assert decoded == records[:complete]
    assert decoder.offset == boundaries[complete]
    if cut == boundaries[complete] and complete > 0:
        decoder.finish()
    else:
        with pytest.raises(CassetteFormatError) as info:
            decoder.finish()
        assert info.value.offset == boundaries[complete]


@pytest.mark.parametrize("field", [b"t", b"ev", b"conn", b"dir", b"text"])
def test_deeply_nested_values_near_the_recursion_limit(field):
    for depth in range(900, 1010, 3):
        nested = b"[" * depth + b"]" * depth
        line = b'{"t": 1, "ev": "data", "conn": 0, "dir": "c2s", "text": "x", "%s": %s}\n' % (field, nested)
        err = first_error(HEAD + OPEN + line)
        assert err.offset == len(HEAD) + len(OPEN)
        assert len(str(err)) < 300


def json_path(line: bytes):
    """What the general decoder makes of a line, or the error it raises."""
    try:
        return decode_record(b" " + line)  # a leading space: JSON still, never the fast path
    except CassetteFormatError:
        return CassetteFormatError


@given(events, st.lists(mutations, max_size=2))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_the_fast_reading_of_a_line_never_differs_from_the_json_reading(event, changes):
    line = encode_event(event).rstrip(b"\n")
    for change in changes:
        line = mutate(line, change)
    fast = decoding._decode_fast(line)
    if fast is not None:
        assert fast == json_path(line)


@pytest.mark.parametrize(
    "event",
    [
        Data(1.5, 3, Direction.C2S, b"plain text"),
        Data(1.5, 3, Direction.S2C, bytes(range(256))),
        HalfClosed(2.0, 3, Direction.C2S),
        Reset(2.0, 3, Direction.S2C),
        Closed(2.5, 3),
    ],
    ids=["text", "binary", "shut", "reset", "close"],
)
def test_the_lines_written_most_are_read_without_the_json_parser(event):
    assert decoding._decode_fast(encode_event(event).rstrip(b"\n")) == event


# ---------------------------------------------------------------- IPv6 (format version 2)

HEADER6 = Header(
    subnet="10.0.0.0/24",
    subnet6="fd00:1::/64",
    hosts=(HostInfo("10.0.0.1", "server", "", "fd00:1::1"), HostInfo("10.0.0.2", "client", "", "fd00:1::2")),
    started=1732170000.5,
    tool_version="0.2.0",
)


def test_ipv6_endpoints_are_written_in_brackets_and_read_back():
    event = ConnectionOpened(0.5, 0, ("fd00:1::2", 40000), ("fd00:1::1", 80))
    line = encode_event(event)
    assert b'"client": "[fd00:1::2]:40000", "server": "[fd00:1::1]:80"' in line
    assert Decoder().feed(encode_header(HEADER6) + line) == [HEADER6, event]


def test_the_header_carries_subnet6_and_each_hosts_ipv6_address():
    line = encode_header(HEADER6)
    assert b'"subnet6": "fd00:1::/64"' in line and b'"address6": "fd00:1::2"' in line
    assert decode_record(line) == HEADER6


def test_a_version_1_cassette_still_reads():
    blob = (
        b'{"netplay_cassette": 1, "tool_version": "0.1.0", "subnet": "10.0.0.0/24", "started": 1.5, '
        b'"hosts": [{"address": "10.0.0.1", "name": "server", "command": ""}]}\n'
        b'{"t": 0.1, "ev": "open", "conn": 0, "client": "10.0.0.2:40000", "server": "10.0.0.1:80", '
        b'"outcome": "established"}\n'
    )
    header, event = Decoder().feed(blob)
    assert (header.version, header.subnet6, header.hosts[0].address6) == (1, "", "")
    assert event == ConnectionOpened(0.1, 0, ("10.0.0.2", 40000), ("10.0.0.1", 80))


@pytest.mark.parametrize(
    "server",
    ["fd00:1::1:80", "[10.0.0.1]:80", "[fd00:1::zz]:80", "[fd00:1::1]:99999", "[fd00:1::1]"],
    ids=["unbracketed", "bracketed-ipv4", "bad-ipv6", "bad-port", "no-port"],
)
def test_a_malformed_ipv6_endpoint_is_named_with_what_was_expected(server):
    line = (
        b'{"t": 1, "ev": "open", "conn": 1, "client": "[fd00:1::2]:4000", "server": "'
        + server.encode()
        + b'", "outcome": "established"}\n'
    )
    err = first_error(encode_header(HEADER6) + line)
    assert f"field \"server\" = '{server}'" in str(err)
    assert 'like "10.0.0.1:80" or "[fd00::1]:80"' in str(err)
