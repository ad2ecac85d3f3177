"""Follow-TCP-stream style rendering of cassettes."""

from __future__ import annotations

from pytest_netplayground.core.codec import Decoder, End, encode_event, encode_header
from pytest_netplayground.core.events import (
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
from pytest_netplayground.core.render import escape_text, hexdump, render_connection, render_conversations

HEADER = Header(
    subnet="10.0.0.0/24",
    hosts=(HostInfo("10.0.0.1", "server", "python -m http.server 80"), HostInfo("10.0.0.2", "client", "")),
    started=1732170000.123456,
    tool_version="0.1.0",
)

EVENTS = [
    ConnectionOpened(0.001234, 0, ("10.0.0.2", 40000), ("10.0.0.1", 80)),
    Data(0.002, 0, Direction.C2S, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ConnectionOpened(0.0025, 1, ("10.0.0.2", 40001), ("10.0.0.1", 81), Outcome.REFUSED),
    Data(0.003, 0, Direction.S2C, bytes(range(20))),
    HalfClosed(0.004, 0, Direction.C2S),
    Reset(0.005, 0, Direction.S2C),
    Closed(0.006, 0),
    Closed(0.0025, 1),
    End(0.01),
]

EXPECTED = """\
Cassette of subnet 10.0.0.0/24, recorded 2024-11-21 06:20:00.123456 UTC by Net Playground 0.1.0
Hosts:
  10.0.0.1  server  python -m http.server 80
  10.0.0.2  client

#0 10.0.0.2:40000 -> 10.0.0.1:80 established  [client -> server]
  0.001234s  opened
  0.002000s  client --> server  27 bytes
      GET / HTTP/1.1\\r\\n
      Host: x\\r\\n
      \\r\\n
  0.003000s  client <-- server  20 bytes
      0000  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f  |................|
      0010  10 11 12 13                                      |....|
  0.004000s  client --> server  FIN: client shut down writing
  0.005000s  client <-- server  RST: server reset the connection
  0.006000s  closed
  = 27 bytes client -> server, 20 bytes server -> client, 0.004766s

#1 10.0.0.2:40001 -> 10.0.0.1:81 refused  [client -> server]
  0.002500s  opened
  0.002500s  closed
  = 0 bytes client -> server, 0 bytes server -> client, 0.000000s

2 connections; the recording finished cleanly
"""


def test_whole_cassette_rendering():
    assert render_conversations(HEADER, EVENTS) == EXPECTED


def test_rendering_straight_from_decoded_bytes():
    blob = encode_header(HEADER) + b"".join(encode_event(e) for e in EVENTS[:-1])
    records = Decoder().feed(blob)
    text = render_conversations(records[0], records, complete=False)
    assert text.startswith("Cassette of subnet 10.0.0.0/24")
    assert text.endswith("2 connections; no end marker: the recording was cut short\n")


def test_connections_are_grouped_even_when_interleaved():
    text = render_conversations(HEADER, EVENTS)
    first, second = text.index("#0 "), text.index("#1 ")
    assert first < text.index("GET /") < text.index("RST:") < second


def test_headings_name_the_hosts_the_header_names_and_only_those():
    header = Header(subnet="10.0.0.0/24", hosts=(HostInfo("10.0.0.1", "db"), HostInfo("10.0.0.2", "")))
    opened = ConnectionOpened(0.0, 0, ("10.0.0.2", 40000), ("10.0.0.1", 5432))
    text = render_conversations(header, [opened, Closed(0.1, 0)])
    assert "#0 10.0.0.2:40000 -> 10.0.0.1:5432 established  [10.0.0.2 -> db]\n" in text
    nameless = render_conversations(Header(subnet="10.0.0.0/24"), [opened, Closed(0.1, 0)])
    assert "#0 10.0.0.2:40000 -> 10.0.0.1:5432 established\n" in nameless


def test_text_escapes_make_invisible_characters_visible():
    assert escape_text("a\tb\\c\r\n") == "a\\tb\\\\c\\r\\n"
    assert escape_text("zero\u200bwidth") == "zero\\u200bwidth"
    assert escape_text("caf\u00e9") == "caf\u00e9"


def test_long_text_lines_are_wrapped_to_the_width():
    opened = EVENTS[0]
    text = render_connection(0, opened, [Data(0.1, 0, Direction.C2S, b"x" * 500 + b"\n")], width=60)
    body = [line for line in text.splitlines() if line.startswith("      x")]
    assert len(body) > 5
    assert all(len(line) <= 60 for line in body)
    assert "".join(line.strip() for line in body) == "x" * 500 + "\\n"


def test_hexdump_rows():
    assert hexdump(b"AB\x00\xffz") == ["0000  41 42 00 ff 7a" + " " * 33 + "  |AB..z|"]
    rows = hexdump(bytes(range(256)) * 300, width=80)
    assert rows[0].startswith("00000000  00 01 02")  # wider offsets past 64 KiB
    assert len(rows) == 256 * 300 // 16


def test_hexdump_narrows_to_fit_the_width():
    rows = hexdump(bytes(32), width=50, indent="  ")
    assert all(len(row) <= 50 for row in rows)
    assert len(rows) == 4  # eight bytes per row


def test_binary_payload_is_a_hexdump_and_text_is_not():
    text = render_connection(0, EVENTS[0], [Data(0.1, 0, Direction.S2C, b"\x1b[31mred")])
    assert "1b 5b 33 31 6d 72 65 64" in text
    assert "|.[31mred|" in text


def test_events_of_a_connection_whose_opening_is_missing():
    text = render_connection(7, None, [Data(1.0, 7, Direction.C2S, b"hi"), Closed(1.5, 7)])
    assert text.splitlines()[0] == "#7 (opening not recorded)"
    assert text.splitlines()[-1] == "  = 2 bytes client -> server, 0 bytes server -> client, 0.500000s"


def test_an_unfinished_connection_says_so():
    text = render_connection(0, EVENTS[0], [Data(1.0, 0, Direction.C2S, b"hi")])
    assert text.endswith("still open when the recording stopped")


def test_summary_counts_bytes_each_way():
    events = [Data(0.1 * i, 0, Direction.C2S if i % 2 else Direction.S2C, b"x" * i) for i in range(1, 6)]
    text = render_connection(0, EVENTS[0], events + [Closed(1.0, 0)])
    assert text.splitlines()[-1] == "  = 9 bytes client -> server, 6 bytes server -> client, 0.998766s"


def test_a_full_record_stream_without_end_marker_was_cut_short():
    blob = encode_header(HEADER) + b"".join(encode_event(e) for e in EVENTS[:-1])
    records = Decoder().feed(blob)
    assert render_conversations(HEADER, records).endswith("no end marker: the recording was cut short\n")
    assert render_conversations(HEADER, records[1:]).endswith("2 connections\n")


def test_the_header_shows_each_hosts_ipv6_address_beside_its_ipv4_one():
    from pytest_netplayground.core.events import HostInfo
    from pytest_netplayground.core.render import render_header

    header = Header(
        subnet="10.0.0.0/24",
        subnet6="fd00:1::/64",
        hosts=(HostInfo("10.0.0.1", "server", "nginx", "fd00:1::1"),),
        started=1732170000.0,
    )
    text = render_header(header)
    assert "Cassette of subnet 10.0.0.0/24 and fd00:1::/64, recorded" in text
    assert "  10.0.0.1  fd00:1::1  server  nginx" in text
