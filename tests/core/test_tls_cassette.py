"""What a cassette says about intercepted TLS: the header's mode, a ``tls`` note per connection,
``netplay show``, and the ``tls`` setting everywhere it is given."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pytest_netplayground.core.codec import Decoder, End, decode_record, encode_event, encode_header
from pytest_netplayground.core.coverage import RunNotes
from pytest_netplayground.core.events import ConnectionOpened, Data, Direction, Header, TlsNote
from pytest_netplayground.core.render import render_conversations
from pytest_netplayground.errors import CassetteFormatError, ConfigError
from pytest_netplayground.settings import check_marker, merge

HEADER = Header("10.0.0.0/24", started=1.5, tool_version="0.1.0", tls="intercept")
OPENED = ConnectionOpened(0.1, 0, ("10.0.0.2", 40000), ("10.0.0.1", 443))


@pytest.mark.parametrize(
    "note",
    [TlsNote(0.2, 0, "api.example.test", "h2"), TlsNote(0.2, 3, None, None), TlsNote(0.2, 1, "10.0.0.1", "http/1.1")],
)
def test_a_tls_note_round_trips_and_reads_as_json(note):
    line = encode_event(note)
    assert decode_record(line) == note
    fields = json.loads(line)
    assert fields["ev"] == "tls" and fields["conn"] == note.conn
    assert fields["sni"] == note.sni and fields["alpn"] == note.alpn


def test_the_header_says_intercept_only_when_it_was():
    assert json.loads(encode_header(HEADER))["tls"] == "intercept"
    plain = Header("10.0.0.0/24", started=1.5)
    assert "tls" not in json.loads(encode_header(plain))  # cassettes without TLS read as before
    assert decode_record(encode_header(HEADER)).tls == "intercept"
    assert decode_record(encode_header(plain)).tls == "off"


def test_a_bad_header_mode_or_note_is_a_format_error():
    header = json.loads(encode_header(HEADER))
    header["tls"] = "sometimes"
    with pytest.raises(CassetteFormatError, match="tls"):
        decode_record(json.dumps(header).encode())
    with pytest.raises(CassetteFormatError, match="sni"):
        decode_record(b'{"t": 0.1, "ev": "tls", "conn": 0, "sni": 7, "alpn": null}')


def test_a_tls_note_of_a_connection_never_opened_is_refused():
    decoder = Decoder()
    decoder.feed(encode_header(HEADER))
    with pytest.raises(CassetteFormatError, match="never opened"):
        decoder.feed(encode_event(TlsNote(0.2, 5, "x", None)))


def test_the_notes_keep_each_connections_tls():
    notes = RunNotes()
    items = [(0, 1, OPENED), (1, 1, TlsNote(0.2, 0, "web", "h2")), (2, 1, Data(0.3, 0, Direction.C2S, b"x"))]
    passed = [record for _, _, record in notes.skim(items)]
    assert passed == [OPENED, Data(0.3, 0, Direction.C2S, b"x")]
    assert notes.tls == {0: TlsNote(0.2, 0, "web", "h2")}


def test_show_marks_a_tls_connection_with_its_sni_and_alpn():
    records = [
        HEADER,
        OPENED,
        TlsNote(0.11, 0, "api.example.test", "h2"),
        Data(0.2, 0, Direction.C2S, b"GET / HTTP/1.1\r\n\r\n"),
        ConnectionOpened(0.3, 1, ("10.0.0.2", 40001), ("10.0.0.1", 80)),
        End(0.5),
    ]
    text = render_conversations(HEADER, records)
    assert "TLS intercepted" in text
    first, second = text.split("#1 ")
    assert "TLS (intercepted, plaintext shown): SNI api.example.test, ALPN h2" in first
    assert "GET / HTTP/1.1" in first
    assert "TLS" not in second


# -- the setting ---------------------------------------------------------------------


def test_the_tls_setting_is_checked_by_one_path_naming_it():
    assert merge([("ini", {"tls": "Intercept"})]).tls == "intercept"
    assert merge([]).tls == "off"
    with pytest.raises(ConfigError, match=r"ini: bad value for 'tls': expected one of off, intercept, got 'on'"):
        merge([("ini", {"tls": "on"})])
    with pytest.raises(ConfigError, match="tls"):
        check_marker((), {"tls": True}, "test_x")
    check_marker((), {"tls": "intercept", "tls_ca_dir": "/tmp/ca"}, "test_x")
    with pytest.raises(ConfigError, match="tls_ca_dir"):
        merge([("marker", {"tls_ca_dir": " "})])


def test_the_cli_refuses_a_bad_tls_mode_naming_the_flag(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pytest_netplayground", "run", "--tls", "maybe", "true"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 2
    assert "argument --tls: invalid choice: 'maybe'" in result.stderr
    assert "Traceback" not in result.stderr
