"""What a recording does not cover: notes in the cassette, older UDP counts, TLS explained, stand-in waits."""

from __future__ import annotations

import pytest

from pytest_netplayground.cassette import Cassette, CassetteWriter
from pytest_netplayground.core.addressing import ConnectionKey, Endpoint
from pytest_netplayground.core.codec import Decoder, decode_record, encode_event, encode_record
from pytest_netplayground.core.coverage import starts_tls_record, udp_line
from pytest_netplayground.core.divergence import (
    ByteMismatch,
    DivergenceReport,
    MissingBytes,
    UdpNotReplayed,
)
from pytest_netplayground.core.events import (
    ConnectionOpened,
    Data,
    Direction,
    Header,
    ListenDelay,
    UdpSeen,
)
from pytest_netplayground.core.render import render_conversations
from pytest_netplayground.core.standin import FALLBACK_PATIENCE, LISTEN_MARGIN, stand_in_deadline
from pytest_netplayground.errors import CassetteFormatError

HEADER = Header("10.0.0.0/24", started=1.0)
DNS = Endpoint("10.0.0.1", 53)
WEB = Endpoint("10.0.0.1", 443)
CLIENT = Endpoint("10.0.0.2", 40000)
KEY = ConnectionKey("10.0.0.2", "10.0.0.1", 443)
CLIENT_HELLO = bytes.fromhex("160301020001") + b"\x00\x01\xfc\x03\x03" + bytes(range(32))


# -- the records ------------------------------------------------------------------


@pytest.mark.parametrize("note", [ListenDelay(1.5, DNS, 0.25), UdpSeen(2.0, "10.0.0.2", DNS, 12)])
def test_notes_round_trip(note):
    line = encode_record(note)
    assert line == encode_event(note)
    assert decode_record(line) == note


def test_note_lines_read_as_json_a_person_can_follow():
    assert encode_record(UdpSeen(2.0, "10.0.0.2", DNS, 12)) == (
        b'{"t": 2.000000, "ev": "udp", "client": "10.0.0.2", "server": "10.0.0.1:53", "datagrams": 12}\n'
    )
    assert encode_record(ListenDelay(1.5, DNS, 0.25)) == (
        b'{"t": 1.500000, "ev": "listen", "server": "10.0.0.1:53", "delay": 0.250000}\n'
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"t": 1, "ev": "udp", "client": "x", "server": "10.0.0.1:53", "datagrams": 1}', '"client"'),
        (b'{"t": 1, "ev": "udp", "client": "10.0.0.2", "server": "10.0.0.1:53", "datagrams": -1}', "datag"),
        (b'{"t": 1, "ev": "udp", "client": "10.0.0.2", "server": "10.0.0.1:53", "datagrams": true}', "datag"),
        (b'{"t": 1, "ev": "listen", "server": "10.0.0.1", "delay": 0.1}', '"server"'),
        (b'{"t": 1, "ev": "listen", "server": "10.0.0.1:53", "delay": -0.1}', '"delay"'),
    ],
)
def test_bad_notes_are_format_errors_naming_the_field(line, message):
    with pytest.raises(CassetteFormatError, match=message):
        decode_record(line, offset=7)


def test_notes_name_no_connection_and_may_come_anywhere_after_the_header():
    records = [
        HEADER,
        ListenDelay(0.1, WEB, 0.1),
        ConnectionOpened(0.1, 0, CLIENT, WEB),
        UdpSeen(0.2, "10.0.0.2", DNS, 3),
    ]
    decoder = Decoder()
    assert decoder.feed(b"".join(encode_record(r) for r in records)) == records


def write_cassette(path, records, commit=True):
    with CassetteWriter(path, HEADER) as writer:
        for record in records:
            writer.write(record)
        if commit:
            writer.commit(3.0)
    return Cassette(path)


def test_a_cassette_index_gathers_the_notes_and_events_skip_them(tmp_path):
    opened = ConnectionOpened(0.1, 0, CLIENT, WEB)
    data = Data(0.2, 0, Direction.C2S, b"hi")
    cassette = write_cassette(
        tmp_path / "c.jsonl",
        [
            ListenDelay(0.1, WEB, 0.08),
            opened,
            ListenDelay(0.15, WEB, 0.5),
            data,
            UdpSeen(0.3, "10.0.0.2", DNS, 4),
        ],
    )
    index = cassette.index()
    assert index.notes.listen_delays == {WEB: 0.08}  # the first note of a server is the one that counts
    assert index.notes.udp == [UdpSeen(0.3, "10.0.0.2", DNS, 4)]
    assert list(cassette.events()) == [opened, data]
    assert list(cassette.iter_connection(0)) == [opened, data]
    assert len(index.connections[0]) == 1


def test_a_cassette_without_notes_indexes_as_before(tmp_path):
    cassette = write_cassette(tmp_path / "c.jsonl", [ConnectionOpened(0.1, 0, CLIENT, WEB)])
    assert cassette.index().notes.listen_delays == {}
    assert cassette.index().notes.udp == []


def test_udp_line_names_each_flow_of_an_older_cassette():
    assert udp_line([UdpSeen(4.0, "10.0.0.2", DNS, 12)]) == (
        "UDP not recorded: 12 datagrams between 10.0.0.2 and 10.0.0.1:53"
    )
    assert udp_line(()) == ""


def test_render_names_udp_and_does_not_call_a_udp_only_recording_clean():
    text = render_conversations(HEADER, [HEADER, UdpSeen(0.5, "10.0.0.2", DNS, 12), _end()])
    assert "UDP not recorded: 12 datagrams between 10.0.0.2 and 10.0.0.1:53" in text
    footer = text.rstrip().splitlines()[-1]
    assert footer == "0 connections; 12 UDP datagrams seen but not recorded; the recording finished cleanly"


def test_render_shows_listen_delays():
    text = render_conversations(HEADER, [HEADER, ListenDelay(0.5, WEB, 0.125), _end()])
    assert "10.0.0.1:443  0.125s" in text
    assert text.rstrip().endswith("0 connections; the recording finished cleanly")


def _end():
    from pytest_netplayground.core.codec import End

    return End(1.0)


# -- the report -------------------------------------------------------------------


def test_udp_on_replay_is_a_divergence_named_as_such():
    report = DivergenceReport([UdpNotReplayed("10.0.0.2", DNS, 3)])
    assert not report.ok
    text = report.format()
    assert text.splitlines()[0] == "1 divergence in 0 connections and 1 UDP flow"
    assert "UDP 10.0.0.2 -> 10.0.0.1:53, UDP not replayed: 3 datagrams went live" in text


def test_tls_records_are_recognised():
    assert starts_tls_record(CLIENT_HELLO)
    assert starts_tls_record(b"\x16\x03\x04")
    assert not starts_tls_record(b"\x16\x03\x05")
    assert not starts_tls_record(b"\x17\x03\x03")  # application data, not a handshake
    assert not starts_tls_record(b"GET / HTTP/1.1\r\n")
    assert not starts_tls_record(b"\x16\x03")


def test_a_difference_in_a_recorded_tls_handshake_is_explained():
    live = CLIENT_HELLO[:11] + bytes(32)
    item = ByteMismatch(0, KEY, 1, Direction.C2S, 11, CLIENT_HELLO, live)
    text = " ".join(DivergenceReport([item]).format().split())
    assert "c2s: bytes differ at offset 11" in text
    assert "The recorded client bytes are a TLS handshake" in text
    assert "cannot be replayed byte for byte" in text
    assert "Record it again with TLS interception" in text


def test_deep_in_a_stream_the_report_relies_on_what_the_replayer_found():
    item = MissingBytes(
        0, KEY, 1, Direction.S2C, sent=900, recorded=1400, expected=b"x" * 64, actual=b"x" * 16
    )
    assert "TLS" not in DivergenceReport([item]).format()
    text = DivergenceReport([item], tls={(0, Direction.S2C)}).format()
    assert "The recorded server bytes are a TLS handshake" in text
    assert text.count("TLS handshake") == 1


def test_a_plain_difference_says_nothing_of_tls():
    item = ByteMismatch(0, KEY, 1, Direction.C2S, 5, b"GET /index.txt", b"GET /i.txt")
    assert "TLS" not in DivergenceReport([item]).format()


def test_the_tls_advice_is_given_once_per_connection():
    items = [
        ByteMismatch(0, KEY, 1, Direction.C2S, 11, CLIENT_HELLO, CLIENT_HELLO[:11] + bytes(32)),
        ByteMismatch(0, KEY, 1, Direction.S2C, 11, CLIENT_HELLO, CLIENT_HELLO[:11] + bytes(32)),
    ]
    assert DivergenceReport(items).format().count("cannot be replayed byte for byte") == 1


# -- stand-in patience ------------------------------------------------------------


def test_a_recorded_listen_delay_bounds_the_wait_from_the_hosts_start():
    assert stand_in_deadline({WEB: 0.3}, WEB, host_since=100.0, now=100.1) == 100.0 + 0.3 + LISTEN_MARGIN
    # Long past that moment, a connection is not kept waiting at all.
    assert stand_in_deadline({WEB: 0.3}, WEB, host_since=100.0, now=130.0) < 130.0


def test_a_server_the_recording_never_saw_accept_is_stood_in_for_at_once():
    assert stand_in_deadline({WEB: 0.3}, DNS, host_since=100.0, now=100.1) == 100.1


def test_a_cassette_without_listen_delays_falls_back_to_a_fixed_wait():
    assert stand_in_deadline({}, WEB, host_since=100.0, now=100.1) == 100.1 + FALLBACK_PATIENCE
