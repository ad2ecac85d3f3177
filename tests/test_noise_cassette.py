"""Learned noise in cassette files: records, index, learning from two recordings, show."""

from __future__ import annotations

import pytest

from pytest_netplayground.cassette import Cassette, CassetteWriter
from pytest_netplayground.cli import main
from pytest_netplayground.core.codec import Decoder, decode_record, encode_end, encode_header, encode_record
from pytest_netplayground.core.events import Closed, ConnectionOpened, Data, Direction, Header, HostInfo
from pytest_netplayground.core.noise import LearnedNoise
from pytest_netplayground.errors import CassetteFormatError
from pytest_netplayground.learning import commit_with_noise, run_path

HEADER = Header("10.0.0.0/24", (HostInfo("10.0.0.1", "server"), HostInfo("10.0.0.2", "client")), 1.0)
S2C, C2S = Direction.S2C, Direction.C2S


def recording(date: str) -> list:
    return [
        ConnectionOpened(0.1, 0, ("10.0.0.2", 40000), ("10.0.0.1", 8000)),
        Data(0.2, 0, C2S, b"GET / HTTP/1.0\r\n\r\n"),
        Data(0.3, 0, S2C, f"HTTP/1.0 200 OK\r\nDate: {date}\r\n\r\n".encode()),
        Closed(0.4, 0),
    ]


def write(path, events, noise=()) -> None:
    with CassetteWriter(path, HEADER) as writer:
        for event in events:
            writer.write(event)
        for item in noise:
            writer.write(item)
        writer.commit(1.0)


def test_noise_records_round_trip_and_stay_out_of_the_events(tmp_path):
    noise = (LearnedNoise(0, S2C, 0, [(23, 52)]), LearnedNoise(0, C2S, 0, [(0, 0), (4, 5)]))
    path = tmp_path / "a.netplay"
    write(path, recording("x"), noise)
    cassette = Cassette(path)
    assert cassette.index().noise == noise
    assert list(cassette.events()) == recording("x")
    assert [r for r in cassette.records() if isinstance(r, LearnedNoise)] == list(noise)
    assert list(cassette.iter_connection(0)) == recording("x")
    lines = path.read_bytes().splitlines()
    assert lines[-3] == b'{"ev": "noise", "conn": 0, "dir": "s2c", "turn": 0, "spans": [[23, 52]]}'
    assert lines[-1].startswith(b'{"t": 1.000000, "ev": "end"')


def test_a_cassette_without_noise_reads_as_before(tmp_path):
    path = tmp_path / "old.netplay"
    write(path, recording("x"))
    assert Cassette(path).index().noise == ()


@pytest.mark.parametrize(
    "line, words",
    [
        (b'{"ev": "noise", "conn": 0, "dir": "up", "turn": 0, "spans": []}', '"dir"'),
        (b'{"ev": "noise", "conn": 0, "dir": "s2c", "turn": -1, "spans": []}', '"turn"'),
        (b'{"ev": "noise", "conn": 0, "dir": "s2c", "turn": 0, "spans": [[5, 2]]}', '"spans"'),
        (b'{"ev": "noise", "conn": 0, "dir": "s2c", "turn": 0}', '"spans" missing'),
    ],
)
def test_malformed_noise_records_are_format_errors(line, words):
    with pytest.raises(CassetteFormatError, match=words):
        decode_record(line, offset=7)


def test_noise_for_a_connection_never_opened_is_rejected():
    decoder = Decoder()
    data = encode_header(HEADER) + encode_record(LearnedNoise(3, S2C, 0, [(0, 1)])) + encode_end(1.0)
    with pytest.raises(CassetteFormatError, match="connection 3, which was never opened"):
        decoder.feed(data)


def test_commit_with_noise_keeps_the_first_recording_and_adds_what_differed(tmp_path):
    path = tmp_path / "t.netplay"
    write(path, recording("old cassette"))
    first, second = run_path(path, 1), run_path(path, 2)
    write(first, recording("Mon, 01 Jan 2024 12:00:01 GMT"))
    write(second, recording("Mon, 01 Jan 2024 12:00:02 GMT"))
    noise = commit_with_noise(first, [second], path)
    assert not first.exists() and not second.exists()
    cassette = Cassette(path)
    assert list(cassette.events()) == recording("Mon, 01 Jan 2024 12:00:01 GMT")
    assert cassette.index().noise == noise
    reply = recording("Mon, 01 Jan 2024 12:00:01 GMT")[2].data
    assert [reply[s:e] for n in noise for s, e in n.spans] == [b"Mon, 01 Jan 2024 12:00:01 GMT"]
    assert cassette.complete


def test_commit_with_noise_refuses_a_cut_short_recording_and_keeps_the_cassette(tmp_path):
    path = tmp_path / "t.netplay"
    write(path, recording("old cassette"))
    before = path.read_bytes()
    first, second = run_path(path, 1), run_path(path, 2)
    write(first, recording("a"))
    with CassetteWriter(second, HEADER) as writer:
        writer.write(recording("b")[0])
        writer.keep_as(second)  # no end marker
    with pytest.raises(Exception, match="cut short"):
        commit_with_noise(first, [second], path)
    assert path.read_bytes() == before


def test_show_marks_noise_regions_with_their_recorded_text(tmp_path, capsys):
    path = tmp_path / "t.netplay"
    reply = recording("Mon, 01 Jan 2024 12:00:01 GMT")[2].data
    start = reply.index(b"Mon")
    write(path, recording("Mon, 01 Jan 2024 12:00:01 GMT"), [LearnedNoise(0, S2C, 0, [(start, start + 29)])])
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"~ noise: server turn 0, bytes {start}-{start + 29}: Mon, 01 Jan 2024 12:00:01 GMT" in out
