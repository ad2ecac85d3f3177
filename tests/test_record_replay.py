"""Record and replay: a cassette holds what each side said, and replay says it again."""

from __future__ import annotations

import bisect
import itertools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pytest_netplayground import CassetteMissing, ConnectionKey, Endpoint, Sandbox
from pytest_netplayground.cassette import Cassette, CassetteWriter
from pytest_netplayground.core.codec import End
from pytest_netplayground.core.divergence import (
    ByteMismatch,
    Stall,
    UnrecordedConnection,
    UnusedRecording,
)
from pytest_netplayground.core.events import (
    Closed,
    ConnectionOpened,
    Data,
    Direction,
    HalfClosed,
    Header,
    ListenDelay,
    Outcome,
)
from tests.support import leaks
from tests.support.leaks import running

pytestmark = pytest.mark.root

PORT = 9000
SERVER = ("10.0.0.1", PORT)


# -- helpers -------------------------------------------------------------------


def two_hosts(sb: Sandbox):
    """The server host (10.0.0.1) and the client host (10.0.0.2)."""
    return sb.add_host("server"), sb.add_host("client")


def read_to_eof(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def read_exactly(sock: socket.socket, size: int, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise AssertionError(f"end of stream after {len(data)} of {size} bytes: {data!r}")
        data += chunk
    return data


def arrival_times(
    sock: socket.socket, read_size: int = 65536, timeout: float = 10.0
) -> list[tuple[int, float]]:
    """(bytes received so far, monotonic time) after each read, until end of stream."""
    sock.settimeout(timeout)
    arrivals = []
    total = 0
    while True:
        chunk = sock.recv(read_size)
        now = time.monotonic()
        if not chunk:
            return arrivals
        total += len(chunk)
        arrivals.append((total, now))


def when_reached(arrivals: list[tuple[int, float]], offsets: list[int]) -> list[float]:
    """For each stream offset, when the read that completed it returned."""
    totals = [total for total, _ in arrivals]
    return [arrivals[bisect.bisect_left(totals, offset)][1] for offset in offsets]


def data_events(path: Path, direction: Direction, **cassette_options) -> list[Data]:
    return [
        e
        for e in Cassette(path, **cassette_options).events()
        if isinstance(e, Data) and e.direction is direction
    ]


def recorded_bytes(path: Path, direction: Direction, **cassette_options) -> bytes:
    return b"".join(e.data for e in data_events(path, direction, **cassette_options))


def nothing_to_read_within(sock: socket.socket, seconds: float) -> bool:
    readable, _, _ = select.select([sock], [], [], seconds)
    return not readable


REQUEST = b"GET /index.html HTTP/1.0\r\n\r\n"
RESPONSE = b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def record_request_response(path: Path, *, pause_before_request: float = 0.0) -> None:
    """Record one exchange: the client sends REQUEST, the server answers RESPONSE and closes."""
    with running("record", path) as sb:
        server, client = two_hosts(sb)
        listener = server.listen(PORT)
        conn = client.connect(SERVER)
        accepted, _ = listener.accept()
        time.sleep(pause_before_request)
        conn.sendall(REQUEST)
        assert read_exactly(accepted, len(REQUEST)) == REQUEST
        accepted.sendall(RESPONSE)
        accepted.close()
        assert read_to_eof(conn) == RESPONSE
        conn.close()


def write_good_cassette(path: Path) -> bytes:
    """A complete cassette from an earlier run; returns its bytes."""
    with CassetteWriter(path, Header("10.0.0.0/24", started=1732170000.0, tool_version="0.1.0")) as writer:
        writer.write(ConnectionOpened(0.001, 0, ("10.0.0.2", 40000), SERVER))
        writer.write(Data(0.002, 0, Direction.C2S, b"the good recording"))
        writer.write(Closed(0.003, 0))
        writer.commit(0.004)
    return path.read_bytes()


@pytest.fixture
def cassette(tmp_path) -> Path:
    return tmp_path / "recording.jsonl"


# -- recording -------------------------------------------------------------------


def test_record_writes_every_step_of_a_connection_to_the_cassette(cassette):
    with running("record", cassette) as sb:
        server, client = two_hosts(sb)
        listener = server.listen(PORT)
        conn = client.connect(SERVER)
        client_end = conn.getsockname()
        accepted, _ = listener.accept()
        conn.sendall(b"hello")
        assert read_exactly(accepted, 5) == b"hello"
        accepted.sendall(b"world")
        assert read_exactly(conn, 5) == b"world"
        conn.shutdown(socket.SHUT_WR)
        assert read_to_eof(accepted) == b""
        accepted.close()
        assert read_to_eof(conn) == b""
        conn.close()
    assert sb.cassette_written == str(cassette)
    assert not Path(str(cassette) + ".partial").exists()

    header, listened, opened, up, down, shut_up, shut_down, closed, end = Cassette(cassette).records()
    assert isinstance(header, Header)
    # The server's first accept, timed from the first socket in its host, comes before its connection.
    assert isinstance(listened, ListenDelay) and listened.server == Endpoint(*SERVER)
    assert [h.address for h in header.hosts] == ["10.0.0.1", "10.0.0.2"]
    assert opened == ConnectionOpened(
        opened.t, 0, Endpoint(*client_end), Endpoint(*SERVER), Outcome.ESTABLISHED
    )
    assert (up.conn, up.direction, up.data) == (0, Direction.C2S, b"hello")
    assert (down.conn, down.direction, down.data) == (0, Direction.S2C, b"world")
    assert (type(shut_up), shut_up.direction) == (HalfClosed, Direction.C2S)
    assert (type(shut_down), shut_down.direction) == (HalfClosed, Direction.S2C)
    assert isinstance(closed, Closed) and closed.conn == 0
    assert isinstance(end, End)
    times = [r.t for r in (opened, up, down, shut_up, shut_down, closed, end)]
    assert times == sorted(times)


UP = os.urandom(64 * 1024)
DOWN = os.urandom(64 * 1024)


def what_the_processes_see(sb: Sandbox) -> dict:
    server, client = two_hosts(sb)
    listener = server.listen(PORT)
    conn = client.connect(SERVER)
    accepted, peer = listener.accept()
    seen = {
        "server sees the client's own address": peer == conn.getsockname(),
        "client address": peer[0],
        "client sees the server at": conn.getpeername(),
        "server is at": accepted.getsockname(),
    }
    conn.sendall(UP)
    conn.shutdown(socket.SHUT_WR)
    seen["server received"] = read_to_eof(accepted) == UP
    accepted.sendall(DOWN)
    accepted.close()
    seen["client received"] = read_to_eof(conn) == DOWN
    conn.close()
    return seen


def test_recording_changes_nothing_the_processes_see(cassette):
    with running("live") as sb:
        live = what_the_processes_see(sb)
    with running("record", cassette) as sb:
        recorded = what_the_processes_see(sb)
    assert (
        recorded
        == live
        == {
            "server sees the client's own address": True,
            "client address": "10.0.0.2",
            "client sees the server at": SERVER,
            "server is at": SERVER,
            "server received": True,
            "client received": True,
        }
    )
    assert recorded_bytes(cassette, Direction.C2S) == UP
    assert recorded_bytes(cassette, Direction.S2C) == DOWN


# -- replaying -------------------------------------------------------------------

RANDOM_SERVER = textwrap.dedent(
    f"""
    import os, socket
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("", {PORT}))
    listener.listen()
    conn, _ = listener.accept()
    conn.sendall(os.urandom(200_000))
    conn.close()
    """
)


def fetch_from_random_server(sb: Sandbox) -> bytes:
    server, client = two_hosts(sb)
    program = server.spawn([sys.executable, "-c", RANDOM_SERVER])
    server.wait_for_port(PORT)
    conn = client.connect(SERVER)
    received = read_to_eof(conn)
    conn.close()
    assert program.wait(timeout=10) == 0
    return received


def test_replay_gives_the_client_the_recorded_bytes_not_the_servers_new_ones(cassette):
    with running("record", cassette) as sb:
        first = fetch_from_random_server(sb)
    assert len(first) == 200_000
    assert recorded_bytes(cassette, Direction.S2C) == first

    with running("replay", cassette) as sb:
        again = fetch_from_random_server(sb)
    assert again == first
    server_side = [
        i for i in sb.divergences.items if isinstance(i, ByteMismatch) and i.direction is Direction.S2C
    ]
    assert len(server_side) == 1, sb.divergences.format()
    assert "s2c: bytes differ at offset" in sb.divergences.format()


def test_replay_stands_in_for_an_absent_server(cassette):
    record_request_response(cassette)
    with running("replay", cassette) as sb:
        _, client = two_hosts(sb)  # nothing runs in the server host
        conn = client.connect(SERVER)
        conn.sendall(REQUEST)
        assert read_to_eof(conn) == RESPONSE
        conn.close()
    assert sb.divergences.ok, sb.divergences.format()


def test_connection_refused_when_recorded_is_refused_on_replay(cassette):
    with running("record", cassette) as sb:
        _, client = two_hosts(sb)
        with pytest.raises(ConnectionRefusedError):
            client.connect(SERVER)
    [opened] = [e for e in Cassette(cassette).events() if isinstance(e, ConnectionOpened)]
    assert opened.outcome is Outcome.REFUSED

    with running("replay", cassette) as sb:
        server, client = two_hosts(sb)
        listener = server.listen(PORT)  # listening now, yet the recording decides
        with pytest.raises(ConnectionRefusedError):
            client.connect(SERVER)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert sb.divergences.ok, sb.divergences.format()


def test_connection_without_a_recording_is_refused_and_reported(cassette):
    with running("record", cassette) as sb:
        two_hosts(sb)
    with running("replay", cassette) as sb:
        server, client = two_hosts(sb)
        server.listen(PORT)
        with pytest.raises(ConnectionRefusedError):
            client.connect(SERVER)
    [item] = sb.divergences.items
    assert isinstance(item, UnrecordedConnection)
    assert (item.client.host, item.server) == ("10.0.0.2", Endpoint(*SERVER))
    assert "no recording matches it" in sb.divergences.format()


def test_recorded_connection_never_opened_on_replay_is_reported(cassette):
    record_request_response(cassette)
    with running("replay", cassette) as sb:
        two_hosts(sb)
    [item] = sb.divergences.items
    assert isinstance(item, UnusedRecording)
    assert (item.conn, item.key, item.ordinal) == (0, ConnectionKey("10.0.0.2", *SERVER), 1)
    assert "recorded but never opened on replay" in sb.divergences.format()


def test_concurrent_connections_of_one_key_each_replay_their_own_recording(cassette):
    with running("record", cassette) as sb:
        server, client = two_hosts(sb)
        listener = server.listen(PORT)
        first = client.connect(SERVER)
        first_accepted, _ = listener.accept()
        second = client.connect(SERVER)
        second_accepted, _ = listener.accept()
        # Both open at once; the second speaks first.
        for conn, accepted, name in ((second, second_accepted, b"second"), (first, first_accepted, b"first")):
            conn.sendall(b"request on the " + name)
            assert read_exactly(accepted, 15 + len(name)) == b"request on the " + name
            accepted.sendall(b"reply on the " + name)
            accepted.close()
            assert read_to_eof(conn) == b"reply on the " + name
            conn.close()

    with running("replay", cassette) as sb:
        _, client = two_hosts(sb)
        first = client.connect(SERVER)
        second = client.connect(SERVER)
        second.sendall(b"request on the second")
        assert read_to_eof(second) == b"reply on the second"
        first.sendall(b"request on the first")
        assert read_to_eof(first) == b"reply on the first"
        first.close()
        second.close()
    assert sb.divergences.ok, sb.divergences.format()


def exchange(client, request: bytes) -> bytes:
    """One connection: send ``request``, half-close, read the reply to its end."""
    conn = client.connect(SERVER)
    try:
        conn.sendall(request)
        conn.shutdown(socket.SHUT_WR)
        return read_to_eof(conn)
    finally:
        conn.close()


def record_exchanges(path: Path, requests: list[bytes]) -> None:
    """Record one connection per request, one after another, each answered "reply to <request>"."""
    with running("record", path) as sb:
        server, client = two_hosts(sb)
        listener = server.listen(PORT)
        for request in requests:
            conn = client.connect(SERVER)
            accepted, _ = listener.accept()
            conn.sendall(request)
            conn.shutdown(socket.SHUT_WR)
            assert read_to_eof(accepted) == request
            accepted.sendall(b"reply to " + request)
            accepted.close()
            assert read_to_eof(conn) == b"reply to " + request
            conn.close()


def test_connections_of_one_key_opened_in_another_order_replay_by_what_they_send(cassette):
    requests = [b"request %d" % i for i in range(4)]
    record_exchanges(cassette, requests)
    with running("replay", cassette) as sb:
        _, client = two_hosts(sb)
        replies = {request: exchange(client, request) for request in reversed(requests)}
    assert replies == {request: b"reply to " + request for request in requests}
    assert sb.divergences.ok, sb.divergences.format()


def test_a_connection_saying_what_nobody_recorded_replays_the_first_recording_left(cassette):
    record_exchanges(cassette, [b"first", b"second"])
    with running("replay", cassette) as sb:
        _, client = two_hosts(sb)
        assert exchange(client, b"second") == b"reply to second"
        assert exchange(client, b"changed") == b"reply to first"
    [mismatch] = sb.divergences.items
    assert isinstance(mismatch, ByteMismatch)
    assert (mismatch.conn, mismatch.direction, mismatch.offset) == (0, Direction.C2S, 0)


# -- pacing ----------------------------------------------------------------------

CHUNKS = [b"chunk %d\n" % i for i in range(5)]
GAP = 0.2


@pytest.fixture(scope="module")
def paced_stream(tmp_path_factory) -> Path:
    """A server-first stream of five chunks, 200 ms apart."""
    path = tmp_path_factory.mktemp("paced") / "paced.jsonl"
    with running("record", path) as sb:
        server, client = two_hosts(sb)
        listener = server.listen(PORT)
        conn = client.connect(SERVER)
        accepted, _ = listener.accept()
        accepted.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i, chunk in enumerate(CHUNKS):
            if i:
                time.sleep(GAP)
            accepted.sendall(chunk)
        accepted.close()
        assert read_to_eof(conn) == b"".join(CHUNKS)
        conn.close()
    assert [e.data for e in data_events(path, Direction.S2C)] == CHUNKS, "each chunk must be its own record"
    return path


def replay_stream(path: Path, **options) -> tuple[float, list[float]]:
    """Replay with the server absent: (when connect returned, when each recorded chunk arrived)."""
    ends = list(itertools.accumulate(len(e.data) for e in data_events(path, Direction.S2C)))
    with running("replay", path, **options) as sb:
        _, client = two_hosts(sb)
        conn = client.connect(SERVER)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connected = time.monotonic()
        arrivals = arrival_times(conn, read_size=256)
        conn.close()
    assert sb.divergences.ok, sb.divergences.format()
    assert arrivals and arrivals[-1][0] == ends[-1]
    return connected, when_reached(arrivals, ends)


def recorded_offsets(path: Path) -> list[float]:
    times = [e.t for e in data_events(path, Direction.S2C)]
    return [t - times[0] for t in times]


def test_flood_delivers_a_paced_recording_at_once(paced_stream):
    connected, arrived = replay_stream(paced_stream, pace="flood")
    recorded_duration = recorded_offsets(paced_stream)[-1]
    assert recorded_duration >= 4 * GAP * 0.9
    assert arrived[-1] - connected < recorded_duration / 8


@pytest.mark.parametrize("speed", [1.0, 4.0])
def test_recorded_pacing_reproduces_the_gaps_divided_by_speed(paced_stream, speed):
    _, arrived = replay_stream(paced_stream, pace="recorded", speed=speed)
    offsets = [t - arrived[0] for t in arrived]
    expected = [t / speed for t in recorded_offsets(paced_stream)]
    assert offsets == pytest.approx(expected, abs=0.03)


def test_causal_replay_sends_the_response_only_after_the_request(cassette):
    record_request_response(cassette, pause_before_request=0.3)
    with running("replay", cassette, pace="causal") as sb:
        _, client = two_hosts(sb)
        conn = client.connect(SERVER)
        # Longer than the recorded pause: a replay paced by the clock would answer by now.
        assert nothing_to_read_within(conn, 0.5), "the response came before the request"
        conn.sendall(REQUEST)
        assert read_to_eof(conn) == RESPONSE
        conn.close()
    assert sb.divergences.ok, sb.divergences.format()


GREETING = b"220 ready\r\n"
QUIT = b"QUIT\r\n"
BYE = b"221 bye\r\n"


def greeting_exchange(client, listener: socket.socket | None) -> None:
    """The server speaks first; ``listener`` is None when no server runs."""
    conn = client.connect(SERVER)
    accepted = None
    if listener is not None:
        accepted, _ = listener.accept()
        accepted.sendall(GREETING)
    assert read_exactly(conn, len(GREETING)) == GREETING
    conn.sendall(QUIT)
    if accepted is not None:
        assert read_exactly(accepted, len(QUIT)) == QUIT
        accepted.sendall(BYE)
        accepted.close()
    assert read_to_eof(conn) == BYE
    conn.close()


@pytest.fixture(scope="module")
def greeting_cassette(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("greeting") / "greeting.jsonl"
    with running("record", path) as sb:
        server, client = two_hosts(sb)
        greeting_exchange(client, server.listen(PORT))
    return path


@pytest.mark.parametrize("server_runs", [False, True], ids=["server absent", "server live"])
@pytest.mark.parametrize("pace", ["causal", "flood", "recorded"])
def test_server_first_protocol_replays_in_every_pacing(greeting_cassette, pace, server_runs):
    with running("replay", greeting_cassette, pace=pace) as sb:
        server, client = two_hosts(sb)
        greeting_exchange(client, server.listen(PORT) if server_runs else None)
    assert sb.divergences.ok, sb.divergences.format()


def test_recorded_pacing_keeps_the_recorded_gaps_instead_of_flooding(cassette):
    count, interval = 200, 0.005
    with running("record", cassette) as sb:
        server, client = two_hosts(sb)
        listener = server.listen(PORT)
        conn = client.connect(SERVER)
        accepted, _ = listener.accept()
        accepted.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        due = time.monotonic()
        for i in range(count):
            accepted.sendall(b"%04d" % i * 8)
            due += interval
            time.sleep(max(0.0, due - time.monotonic()))
        accepted.close()
        assert len(read_to_eof(conn)) == count * 32
        conn.close()
    recorded = data_events(cassette, Direction.S2C)
    assert len(recorded) >= count * 0.9, "the chunks should mostly be recorded one by one"

    _, arrived = replay_stream(cassette, pace="recorded", speed=1.0)
    offsets = recorded_offsets(cassette)
    # How close it keeps to the clock is for a benchmark; here: it does not flood.
    assert arrived[-1] - arrived[0] >= 0.9 * (offsets[-1] - offsets[0])


# -- the divergence report ---------------------------------------------------------


def test_report_shows_where_and_how_a_changed_request_differs(cassette):
    record_request_response(cassette)
    changed = b"GET /admin.html HTTP/1.0\r\n\r\n"
    with running("replay", cassette) as sb:
        _, client = two_hosts(sb)
        conn = client.connect(SERVER)
        conn.sendall(changed)
        assert read_to_eof(conn) == RESPONSE
        conn.close()
    [item] = sb.divergences.items
    assert isinstance(item, ByteMismatch)
    assert (item.direction, item.offset) == (Direction.C2S, 5)
    text = sb.divergences.format()
    assert "c2s: bytes differ at offset 5" in text
    expected_line = next(line for line in text.splitlines() if "expected:" in line)
    actual_line = next(line for line in text.splitlines() if "actual:" in line)
    assert "GET /index.html" in expected_line
    assert "GET /admin.html" in actual_line


def test_causal_replay_reports_a_stall_when_the_client_never_asks_then_plays_the_rest(cassette):
    record_request_response(cassette)
    with running("replay", cassette, pace="causal", stall_timeout=0.5) as sb:
        _, client = two_hosts(sb)
        conn = client.connect(SERVER)
        assert nothing_to_read_within(conn, 0.4)
        # Past the stall the rest is played out: the client is not left waiting.
        conn.settimeout(10)
        assert read_to_eof(conn) == RESPONSE
        conn.close()
    stalls = [i for i in sb.divergences.items if isinstance(i, Stall)]
    assert len(stalls) == 1, sb.divergences.format()
    assert stalls[0].direction is Direction.C2S
    assert stalls[0].waited >= 0.5
    assert "stalled" in sb.divergences.format()


@pytest.mark.parametrize("server_runs", [False, True], ids=["server absent", "server live"])
def test_a_shorter_request_than_recorded_is_answered_after_the_settle_time_and_reported(cassette, server_runs):
    record_request_response(cassette)
    shorter = b"GET /i.html HTTP/1.0\r\n\r\n"
    with running("replay", cassette, pace="causal", stall_timeout=30) as sb:
        server, client = two_hosts(sb)
        listener = server.listen(PORT) if server_runs else None
        conn = client.connect(SERVER)
        conn.sendall(shorter)
        conn.settimeout(10)  # far below the stall timeout: the turn ends by going quiet
        assert read_to_eof(conn) == RESPONSE
        conn.close()
        if listener is not None:
            accepted, _ = listener.accept()
            assert read_exactly(accepted, len(REQUEST)) == REQUEST
            accepted.sendall(RESPONSE)
            accepted.close()
    (found,) = [d for d in sb.divergences if d.key.server_port == PORT]
    assert found.direction is Direction.C2S
    assert found.offset == len(b"GET /i")
    assert not [d for d in sb.divergences if isinstance(d, Stall)]


def test_a_client_that_goes_away_mid_replay_ends_the_connection_and_the_sandbox_closes(cassette):
    record_request_response(cassette)
    with running("replay", cassette, pace="causal", stall_timeout=0.5) as sb:
        _, client = two_hosts(sb)
        conn = client.connect(SERVER)
        conn.sendall(REQUEST[:4])
        conn.close()
    assert any(d.direction is Direction.C2S for d in sb.divergences if hasattr(d, "direction"))


# -- cassettes that are missing, cut short or abandoned ------------------------------

KILLED_RECORDER = textwrap.dedent(
    f"""
    import json, sys, time
    from pytest_netplayground import Sandbox

    sb = Sandbox(mode="record", cassette=sys.argv[1]).start()
    server, client = sb.add_host(), sb.add_host()
    listener = server.listen({PORT})
    conn = client.connect(("10.0.0.1", {PORT}))
    accepted, _ = listener.accept()
    print(json.dumps({{"supervisor": sb.supervisor_pid, "namespaces": sb.namespace_inodes()}}), flush=True)
    for i in range(1000):
        accepted.sendall(b"chunk %03d\\n" % i)
        conn.recv(100)
        time.sleep(0.02)
    """
)


def test_recording_killed_half_way_keeps_a_partial_file_that_replays(cassette):
    good = write_good_cassette(cassette)
    partial = Path(str(cassette) + ".partial")
    recorder = subprocess.Popen(
        [sys.executable, "-c", KILLED_RECORDER, str(cassette)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        made = json.loads(recorder.stdout.readline())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if partial.exists() and len(data_events(partial, Direction.S2C, tolerate_truncation=True)) >= 3:
                break
            time.sleep(0.01)
        else:
            pytest.fail("the recording never reached three chunks")
    finally:
        recorder.send_signal(signal.SIGKILL)
        recorder.wait(10)
        recorder.stdout.close()
    assert not leaks.wait_until_gone(made["namespaces"], [made["supervisor"]])

    assert cassette.read_bytes() == good
    assert partial.exists()
    kept = Cassette(partial, tolerate_truncation=True)
    chunks = [e.data for e in data_events(partial, Direction.S2C, tolerate_truncation=True)]
    assert len(chunks) >= 3
    assert chunks == [b"chunk %03d\n" % i for i in range(len(chunks))]
    events = list(kept.events())
    assert isinstance(events[0], ConnectionOpened)
    assert {e.conn for e in events} == {0}
    assert kept.complete is False, "a killed recording has no end marker"

    with running("replay", partial) as sb:
        _, client = two_hosts(sb)
        conn = client.connect(SERVER)
        received = read_exactly(conn, len(b"".join(chunks)))
        conn.close()
    assert received == b"".join(chunks)


def test_replay_of_a_missing_cassette_says_where_and_how_to_record_it(tmp_path):
    missing = tmp_path / "never-recorded.jsonl"
    sb = Sandbox(mode="replay", cassette=missing)
    with pytest.raises(CassetteMissing) as info:
        sb.start()
    message = str(info.value)
    assert str(missing) in message
    assert f"netplay record -f {missing}" in message


def abandon_with_close(sb: Sandbox, body) -> None:
    body(sb)
    sb.close("abort")


def abandon_with_exception(sb: Sandbox, body) -> None:
    class Failure(Exception):
        pass

    with pytest.raises(Failure):
        with sb:
            body(sb)
            raise Failure


@pytest.mark.parametrize("abandon", [abandon_with_close, abandon_with_exception], ids=["abort", "exception"])
def test_abandoned_recording_leaves_the_existing_cassette_untouched(cassette, abandon):
    good = write_good_cassette(cassette)

    def talk(sb):
        server, client = two_hosts(sb)
        listener = server.listen(PORT)
        conn = client.connect(SERVER)
        conn.sendall(b"a recording that fails")
        accepted, _ = listener.accept()
        assert read_exactly(accepted, 22) == b"a recording that fails"
        conn.close()
        accepted.close()

    sb = Sandbox(mode="record", cassette=cassette).start()
    abandon(sb, talk)
    assert cassette.read_bytes() == good
    assert sb.cassette_written == str(cassette) + ".partial"
    kept = recorded_bytes(Path(sb.cassette_written), Direction.C2S, tolerate_truncation=True)
    assert kept == b"a recording that fails"


LATE_SERVER = """
import socket, sys, time
time.sleep(float(sys.argv[1]))
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", 7300))
listener.listen()
conn, _ = listener.accept()
conn.sendall(b"banner\\n")
conn.close()
print("served", flush=True)
"""


def _late_server_exchange(sb, delay: float) -> tuple[bytes, object]:
    server, client = sb.add_host(), sb.add_host()
    proc = server.spawn([sys.executable, "-c", LATE_SERVER, str(delay)], stdout=subprocess.PIPE)
    conn = client.connect(("10.0.0.1", 7300), timeout=10)
    data = b""
    while chunk := conn.recv(100):
        data += chunk
    conn.close()
    return data, proc


def test_replay_waits_for_a_server_starting_in_its_host(tmp_path):
    cassette = tmp_path / "late.netplay"
    with Sandbox(mode="record", cassette=cassette) as sb:
        server, client = sb.add_host(), sb.add_host()
        proc = server.spawn([sys.executable, "-c", LATE_SERVER, "0"], stdout=subprocess.PIPE)
        server.wait_for_port(7300)
        conn = client.connect(("10.0.0.1", 7300), timeout=10)
        assert conn.recv(100) == b"banner\n"
        conn.close()
        assert proc.wait(10) == 0
    with Sandbox(mode="replay", cassette=cassette) as sb:
        # Later than recorded, but within the stand-in's margin (LISTEN_MARGIN, 0.5 s).
        data, proc = _late_server_exchange(sb, delay=0.25)
        assert data == b"banner\n"
        # The live server, not the cassette, answered: it got its connection.
        out, _ = proc.communicate(timeout=10)
        assert out == b"served\n"
    assert sb.divergences.ok, sb.divergences.format()


def test_a_live_server_that_closes_early_on_replay_does_not_cut_the_client_off(tmp_path):
    """The recorded client bytes the replay writes to a server that already went away fail;
    only that leg closes, and the client still gets the whole recorded conversation."""
    cassette = tmp_path / "early.jsonl"

    def converse(sb, server_closes_at_once: bool) -> bytes:
        server, client = two_hosts(sb)
        listener = server.listen(PORT)
        conn = client.connect(SERVER)
        accepted, _ = listener.accept()
        got = b""
        if server_closes_at_once:
            accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            accepted.close()  # a reset: the replay's writes to it fail from now on
        for request in (b"one\n", b"two\n", b"three\n"):
            conn.sendall(request)
            if not server_closes_at_once:
                assert read_exactly(accepted, len(request)) == request
                accepted.sendall(b"re: " + request)
            got += read_exactly(conn, len(b"re: " + request))
        conn.shutdown(socket.SHUT_WR)
        if not server_closes_at_once:
            assert read_to_eof(accepted) == b""
            accepted.close()
        got += read_to_eof(conn)
        return got

    with running("record", cassette) as sb:
        recorded = converse(sb, server_closes_at_once=False)
    with running("replay", cassette, stall_timeout=1) as sb:
        replayed = converse(sb, server_closes_at_once=True)
    assert replayed == recorded == b"re: one\nre: two\nre: three\n"
    assert not sb.divergences.ok  # the server's early end is reported, not hidden
    assert "s2c" in sb.divergences.format()
