"""Cassette files: atomic, unbuffered writing and streaming, indexed reading."""

from __future__ import annotations

import errno
import os

import pytest

from pytest_netplayground import cassette as cassette_module
from pytest_netplayground.cassette import Cassette, CassetteWriter, partial_path_for
from pytest_netplayground.core import codec
from pytest_netplayground.core.codec import End, decode_record, encode_end, encode_event, encode_header
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
from pytest_netplayground.errors import CassetteError, CassetteFormatError, CassetteMissing

HEADER = Header(
    subnet="10.0.0.0/24",
    hosts=(HostInfo("10.0.0.1", "server", "serve"), HostInfo("10.0.0.2", "client", "fetch")),
    started=1732170000.5,
    tool_version="0.1.0",
)

EVENTS = [
    ConnectionOpened(0.001, 0, ("10.0.0.2", 40000), ("10.0.0.1", 80)),
    ConnectionOpened(0.002, 1, ("10.0.0.2", 40001), ("10.0.0.1", 80)),
    Data(0.003, 0, Direction.C2S, b"GET / HTTP/1.1\r\n\r\n"),
    Data(0.004, 1, Direction.C2S, b"\x00\x01binary"),
    Data(0.005, 0, Direction.S2C, b"HTTP/1.1 200 OK\r\n\r\nhello"),
    ConnectionOpened(0.006, 2, ("10.0.0.2", 40002), ("10.0.0.1", 81), Outcome.REFUSED),
    HalfClosed(0.007, 0, Direction.C2S),
    Reset(0.008, 1, Direction.S2C),
    Closed(0.009, 0),
    Closed(0.009, 1),
    Closed(0.010, 2),
]


def record(path, events=EVENTS, *, t_end: float = 0.5) -> None:
    with CassetteWriter(path, HEADER) as writer:
        for event in events:
            writer.write(event)
        writer.commit(t_end)


# ---------------------------------------------------------------- writing


def test_commit_writes_the_cassette_atomically(tmp_path):
    path = tmp_path / "rec.jsonl"
    with CassetteWriter(path, HEADER) as writer:
        assert writer.partial_path == tmp_path / "rec.jsonl.partial"
        assert writer.partial_path.exists() and not path.exists()
        for event in EVENTS:
            writer.write(event)
        assert writer.commit(0.5) == path
        assert writer.state == "committed"
    assert not writer.partial_path.exists()
    expected = encode_header(HEADER) + b"".join(encode_event(e) for e in EVENTS) + encode_end(0.5)
    assert path.read_bytes() == expected


def test_an_aborted_recording_leaves_the_good_cassette_untouched(tmp_path):
    path = tmp_path / "rec.jsonl"
    record(path)
    good = path.read_bytes()
    with pytest.raises(RuntimeError, match="test failed"), CassetteWriter(path, HEADER) as writer:
        writer.write(EVENTS[0])
        raise RuntimeError("test failed")
    assert writer.state == "aborted"
    assert path.read_bytes() == good
    partial = Cassette(partial_path_for(path))
    assert list(partial.events()) == [EVENTS[0]]
    assert partial.complete is False


def test_leaving_the_block_without_commit_aborts(tmp_path):
    path = tmp_path / "rec.jsonl"
    with CassetteWriter(path, HEADER) as writer:
        writer.write(EVENTS[0])
    assert writer.state == "aborted"
    assert not path.exists()
    assert writer.abort() == partial_path_for(path)
    with pytest.raises(CassetteError, match="the recording is aborted"):
        writer.write(EVENTS[1])


def test_keep_as_moves_a_failing_run_beside_the_good_cassette(tmp_path):
    path = tmp_path / "rec.jsonl"
    record(path)
    good = path.read_bytes()
    with CassetteWriter(path, HEADER) as writer:
        writer.write(EVENTS[0])
        kept = writer.keep_as(tmp_path / "rec.failed.jsonl", t_end=0.25)
    assert kept == tmp_path / "rec.failed.jsonl"
    assert path.read_bytes() == good
    assert not partial_path_for(path).exists()
    failed = Cassette(kept)
    assert list(failed.events()) == [EVENTS[0]]
    assert failed.complete is True
    with pytest.raises(CassetteError):
        writer.commit(1.0)


def test_keep_as_after_abort(tmp_path):
    writer = CassetteWriter(tmp_path / "a.jsonl", HEADER)
    writer.write(EVENTS[0])
    writer.abort()
    kept = writer.keep_as(tmp_path / "b.jsonl")
    assert not partial_path_for(tmp_path / "a.jsonl").exists()
    assert Cassette(kept).header == HEADER


def test_every_record_is_one_unbuffered_write_and_commit_syncs(tmp_path, monkeypatch):
    writes: list[bytes] = []
    syncs: list[int] = []
    real_write, real_fsync = os.write, os.fsync

    def spy_write(fd, data):
        writes.append(bytes(data))
        return real_write(fd, data)

    def spy_fsync(fd):
        syncs.append(fd)
        return real_fsync(fd)

    monkeypatch.setattr(os, "write", spy_write)
    monkeypatch.setattr(os, "fsync", spy_fsync)
    with CassetteWriter(tmp_path / "rec.jsonl", HEADER) as writer:
        assert writes == [encode_header(HEADER)]  # on disk before any event
        writer.write(EVENTS[2])
        assert writes[-1] == encode_event(EVENTS[2])
        assert syncs == []
        writer.commit(1.0)
    assert writes[-1] == encode_end(1.0)
    assert len(syncs) == 2  # the file, then the directory holding the rename


def test_short_writes_are_completed(tmp_path, monkeypatch):
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))
    record(tmp_path / "rec.jsonl")
    monkeypatch.undo()
    assert list(Cassette(tmp_path / "rec.jsonl").events()) == EVENTS


def test_disk_full_is_a_cassette_error_that_says_what_to_do(tmp_path, monkeypatch):
    writer = CassetteWriter(tmp_path / "rec.jsonl", HEADER)
    real_write = os.write
    target = writer._fd

    def full(fd, data):
        if fd == target:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(CassetteError, match="No space left on device; free some disk space") as info:
        writer.write(EVENTS[0])
    assert str(writer.partial_path) in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.ENOSPC
    assert writer.state == "failed"
    with pytest.raises(CassetteError, match="failed"):
        writer.commit(1.0)


def test_permission_denied_when_creating_the_file(tmp_path, monkeypatch):
    real_open = os.open

    def denied(path, *args, **kwargs):
        if str(path).endswith(".partial"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(CassetteError, match="Permission denied; make .* writable") as info:
        CassetteWriter(tmp_path / "rec.jsonl", HEADER)
    assert "rec.jsonl.partial" in str(info.value)
    assert isinstance(info.value.__cause__, PermissionError)


def test_unwritable_directory_is_reported_before_recording(tmp_path, monkeypatch):
    if os.geteuid() == 0:
        # Root writes anywhere, so make the access check answer as it would for a user.
        monkeypatch.setattr(os, "access", lambda path, mode: False)
    else:
        tmp_path.chmod(0o500)
    try:
        with pytest.raises(CassetteError, match="is not writable by this user"):
            CassetteWriter(tmp_path / "rec.jsonl", HEADER)
    finally:
        tmp_path.chmod(0o700)


def test_missing_directories_are_created(tmp_path):
    path = tmp_path / "a" / "b" / "rec.jsonl"
    record(path)
    assert Cassette(path).header == HEADER


def test_a_file_where_the_directory_should_be(tmp_path):
    (tmp_path / "a").write_text("in the way")
    with pytest.raises(CassetteError, match="cannot create the cassette directory") as info:
        CassetteWriter(tmp_path / "a" / "rec.jsonl", HEADER)
    assert isinstance(info.value.__cause__, OSError)


def test_a_directory_where_the_cassette_should_be(tmp_path):
    (tmp_path / "rec.jsonl").mkdir()
    with pytest.raises(CassetteError, match="it is a directory"):
        CassetteWriter(tmp_path / "rec.jsonl", HEADER)


# ---------------------------------------------------------------- reading


def test_reading_a_committed_cassette(tmp_path):
    path = tmp_path / "rec.jsonl"
    record(path)
    cassette = Cassette(path)
    assert cassette.header == HEADER
    assert cassette.complete is None  # not known before a full pass
    assert list(cassette.events()) == EVENTS
    assert cassette.complete is True
    assert list(cassette) == EVENTS  # iterating again re-reads the file


def test_missing_cassette(tmp_path):
    with pytest.raises(CassetteMissing, match="nope.jsonl does not exist") as info:
        Cassette(tmp_path / "nope.jsonl")
    assert isinstance(info.value, FileNotFoundError)


def simulate_killed_recording(path) -> int:
    """Complete lines, then half of one, as a SIGKILL during a write leaves them."""
    complete = encode_header(HEADER) + b"".join(encode_event(e) for e in EVENTS[:3])
    path.write_bytes(complete + encode_event(EVENTS[3])[:20])
    return len(complete)


def test_a_killed_recording_is_readable_up_to_its_last_complete_record(tmp_path):
    path = tmp_path / "rec.jsonl.partial"
    cut = simulate_killed_recording(path)
    cassette = Cassette(path, tolerate_truncation=True)
    assert list(cassette.events()) == EVENTS[:3]
    assert cassette.truncated_at == cut
    assert cassette.complete is False


def test_truncation_raises_unless_tolerated(tmp_path):
    path = tmp_path / "rec.jsonl"
    cut = simulate_killed_recording(path)
    cassette = Cassette(path)
    events = cassette.events()
    assert [next(events) for _ in range(3)] == EVENTS[:3]
    with pytest.raises(CassetteFormatError, match="truncated record") as info:
        next(events)
    assert info.value.path == str(path)
    assert info.value.offset == cut
    assert str(info.value).startswith(f"{path} at byte {cut}: ")


def test_a_corrupt_complete_line_always_raises(tmp_path):
    path = tmp_path / "rec.jsonl"
    good = encode_header(HEADER) + encode_event(EVENTS[0])
    path.write_bytes(good + b'{"t": 1, "ev": "bogus"}\n' + encode_event(EVENTS[1]))
    cassette = Cassette(path, tolerate_truncation=True)
    with pytest.raises(CassetteFormatError, match="unknown event type") as info:
        list(cassette.events())
    assert info.value.offset == len(good)
    assert str(path) in str(info.value)


def test_a_truncated_header_is_never_tolerated(tmp_path):
    path = tmp_path / "rec.jsonl"
    path.write_bytes(encode_header(HEADER)[:30])
    with pytest.raises(CassetteFormatError, match="truncated record"):
        Cassette(path, tolerate_truncation=True)


def test_not_a_cassette_names_the_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("shopping list\n")
    with pytest.raises(CassetteFormatError, match="not a Net Playground cassette") as info:
        Cassette(path)
    assert info.value.path == str(path)


def test_the_reader_holds_bounded_chunks(tmp_path, monkeypatch):
    path = tmp_path / "big.jsonl"
    events = [EVENTS[0]] + [Data(i / 1000, 0, Direction.S2C, bytes([i % 256]) * 5000) for i in range(400)]
    record(path, events)
    size = path.stat().st_size
    chunk = 4096
    monkeypatch.setattr(cassette_module, "CHUNK_SIZE", chunk)
    held: list[int] = []

    class Spy(codec.Decoder):
        def receive(self, data):
            assert len(data) <= chunk
            super().receive(data)
            held.append(self.buffered)

    monkeypatch.setattr(cassette_module, "Decoder", Spy)
    count = sum(1 for _ in Cassette(path).events())
    assert count == len(events)
    assert len(held) >= size // chunk
    longest = max(len(encode_event(e)) for e in events)
    assert max(held) <= longest + chunk < size // 100


def test_an_endless_line_stops_the_reader_early(tmp_path, monkeypatch):
    path = tmp_path / "garbage.jsonl"
    path.write_bytes(encode_header(HEADER) + b"x" * 3_000_000)
    monkeypatch.setattr(codec, "MAX_LINE", 100_000)
    monkeypatch.setattr(cassette_module, "CHUNK_SIZE", 10_000)
    received: list[int] = []

    class Spy(codec.Decoder):
        def receive(self, data):
            super().receive(data)
            received.append(len(data))

    monkeypatch.setattr(cassette_module, "Decoder", Spy)
    with pytest.raises(CassetteFormatError, match="longer than the 100000-byte limit"):
        list(Cassette(path, tolerate_truncation=True).events())
    assert sum(received) <= 100_000 + 2 * 10_000 + len(encode_header(HEADER))


# ---------------------------------------------------------------- index


def test_index_locates_each_connections_records(tmp_path):
    path = tmp_path / "rec.jsonl"
    record(path)
    cassette = Cassette(path)
    index = cassette.index()
    assert index.complete is True and index.end_time == 0.5
    assert sorted(index.connections) == [0, 1, 2]
    assert index.connections[0].opened == EVENTS[0]
    assert len(index.connections[0]) == 4  # two data, half-close, close
    assert len(index.connections[2]) == 1
    blob = path.read_bytes()
    for entry in index.connections.values():
        for offset, length in entry.spans():
            assert blob[offset - 1 : offset] == b"\n"
            assert blob[offset + length - 1 : offset + length] == b"\n"
            assert decode_record(blob[offset : offset + length]).conn == entry.conn
    assert cassette.index() is index


@pytest.mark.parametrize("conn", [0, 1, 2])
def test_iter_connection_matches_a_filtered_pass(tmp_path, conn):
    path = tmp_path / "rec.jsonl"
    record(path)
    cassette = Cassette(path)
    assert list(cassette.iter_connection(conn)) == [e for e in EVENTS if e.conn == conn]


def test_index_groups_connections_by_key(tmp_path):
    path = tmp_path / "rec.jsonl"
    record(path)
    groups = Cassette(path).index().by_key()
    assert [[e.conn for e in group] for group in groups.values()] == [[0, 1], [2]]


def test_index_memory_is_per_record_not_per_byte(tmp_path):
    path = tmp_path / "rec.jsonl"
    record(path, [EVENTS[0], Data(0.1, 0, Direction.C2S, b"z" * 1_000_000)])
    entry = Cassette(path).index().connections[0]
    assert list(entry.offsets) and entry.offsets.itemsize == 8
    assert entry.lengths[0] > 1_000_000  # the payload stays on disk, only located


def test_index_of_a_truncated_recording(tmp_path):
    path = tmp_path / "rec.jsonl"
    cut = simulate_killed_recording(path)
    index = Cassette(path, tolerate_truncation=True).index()
    assert index.complete is False and index.truncated_at == cut
    assert len(index.connections[0]) == 1


def test_a_cassette_changed_since_it_was_indexed_is_a_located_error(tmp_path):
    path = tmp_path / "rec.jsonl"
    record(path)
    cassette = Cassette(path)
    offset, _ = next(cassette.index().connections[1].spans())
    record(path, [EVENTS[0], EVENTS[1], Data(0.003, 0, Direction.C2S, b"a longer request " * 4), *EVENTS[3:]])
    with pytest.raises(CassetteFormatError, match="has the cassette changed since it was indexed") as info:
        list(cassette.iter_connection(1))
    assert info.value.offset == offset and info.value.path == str(path)


def test_iter_connection_of_an_unknown_connection(tmp_path):
    path = tmp_path / "rec.jsonl"
    record(path)
    with pytest.raises(CassetteError, match="has no connection #9"):
        list(Cassette(path).iter_connection(9))


def test_iter_connection_notices_a_rewritten_file(tmp_path):
    path = tmp_path / "rec.jsonl"
    record(path)
    cassette = Cassette(path)
    cassette.index()
    record(path, [EVENTS[1], EVENTS[0], Data(0.1, 0, Direction.C2S, b"x" * 50)])
    with pytest.raises(CassetteFormatError, match="changed since it was indexed"):
        list(cassette.iter_connection(0))


def test_records_include_header_and_end_marker(tmp_path):
    path = tmp_path / "rec.jsonl"
    record(path, t_end=0.75)
    records = list(Cassette(path).records())
    assert records == [HEADER, *EVENTS, End(0.75)]
