"""How `drive()` judges each connection: as recorded, differing, refused, stalled, refused as recorded.

The cassettes are written by hand; the server is a socket the test listens on
inside the sandbox's host and answers from a thread.
"""

from __future__ import annotations

import socket
import threading

import pytest

from pytest_netplayground import drive
from pytest_netplayground.cassette import CassetteWriter
from pytest_netplayground.core.divergence import ByteMismatch
from pytest_netplayground.core.drive_report import Verdict
from pytest_netplayground.core.events import Closed, ConnectionOpened, Data, Direction, HalfClosed, Header

pytestmark = pytest.mark.root
C2S, S2C = Direction.C2S, Direction.S2C


def write(path, events) -> str:
    with CassetteWriter(path, Header("10.0.0.0/24", started=1732170000.0, tool_version="0.1.0")) as writer:
        for event in events:
            writer.write(event)
        writer.commit(1.0)
    return str(path)


def ping(conn: int, port: int, t: float = 0.01) -> list:
    return [
        ConnectionOpened(t, conn, ("10.0.0.2", 40000 + conn), ("10.0.0.1", port)),
        Data(t + 0.001, conn, C2S, b"ping %d\n" % conn),
        Data(t + 0.002, conn, S2C, b"pong %d\n" % conn),
        HalfClosed(t + 0.003, conn, C2S),
        HalfClosed(t + 0.004, conn, S2C),
        Closed(t + 0.005, conn),
    ]


def serve(listener: socket.socket, count: int, answer, peers: list) -> threading.Thread:
    """Accept ``count`` connections; answer each request with ``answer(request)``, then close."""

    def run() -> None:
        for _ in range(count):
            sock, peer = listener.accept()
            with sock:
                peers.append(peer)
                request = sock.recv(100)
                sock.sendall(answer(request))
                sock.shutdown(socket.SHUT_WR)
                sock.recv(100)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_answers_as_recorded_are_identical_and_a_changed_one_differs_at_its_offset(sandbox, tmp_path):
    cassette = write(tmp_path / "pings.traffic", ping(0, 7000) + ping(1, 7000, t=0.02))
    server = sandbox.add_host()
    listener = server.listen(7000)
    peers: list = []
    thread = serve(
        listener, 2, lambda request: request.replace(b"ping", b"pong").replace(b"pong 1", b"pong X"), peers
    )
    report = drive(sandbox, cassette, stall_timeout=5)
    thread.join(5)
    listener.close()
    first, second = report.results
    assert first.verdict is Verdict.IDENTICAL, report.format()
    assert second.verdict is Verdict.DIFFERS
    (found,) = second.divergences
    assert isinstance(found, ByteMismatch) and (found.direction, found.offset) == (S2C, 5)
    assert sorted(peers) == [("10.0.0.2", 40000), ("10.0.0.2", 40001)]
    assert first.live.first_byte is not None and first.recorded.first_byte == pytest.approx(0.002)


def test_a_connection_refused_as_recorded_is_identical_and_one_refused_now_fails(sandbox, tmp_path):
    refused = [
        ConnectionOpened(0.01, 0, ("10.0.0.2", 40000), ("10.0.0.1", 9), outcome="refused"),
        Closed(0.01, 0),
    ]
    cassette = write(tmp_path / "refused.traffic", refused + ping(1, 8000, t=0.02))
    report = drive(sandbox, cassette)
    as_recorded, now_refused = report.results
    assert as_recorded.verdict is Verdict.IDENTICAL
    assert now_refused.failure == "refused (recorded: established)"
    assert not report.ok


def test_a_server_that_never_answers_stalls_and_the_drive_still_ends(sandbox, tmp_path):
    cassette = write(tmp_path / "silent.traffic", ping(0, 7001))
    listener = sandbox.add_host().listen(7001)  # never accepted: the kernel completes the handshake
    report = drive(sandbox, cassette, stall_timeout=0.5)
    listener.close()
    (result,) = report.results
    assert result.verdict is Verdict.FAILED
    assert result.failure.startswith("stalled")
    assert result.live.first_byte is None


def test_a_server_that_stops_reading_is_given_up(sandbox, tmp_path):
    big = 16 << 20  # more than the kernel's buffers and the proxy's high-water mark hold
    events = [
        ConnectionOpened(0.01, 0, ("10.0.0.2", 40000), ("10.0.0.1", 7002)),
        *(Data(0.02, 0, C2S, b"x" * (1 << 20)) for _ in range(big >> 20)),
        Data(0.03, 0, S2C, b"ok"),
        Closed(0.04, 0),
    ]
    cassette = write(tmp_path / "big.traffic", events)
    listener = sandbox.add_host().listen(7002)  # never accepted, never read
    report = drive(sandbox, cassette, stall_timeout=0.3)
    listener.close()
    (result,) = report.results
    assert result.verdict is Verdict.FAILED
    assert result.failure.startswith("no progress for 0.9 s: the server read none of")


def test_connections_recorded_over_ipv6_are_driven_from_their_recorded_ipv6_peers(sandbox, tmp_path):
    server, client = sandbox.add_host(), sandbox.add_host()
    path = tmp_path / "pings6.traffic"
    header = Header("10.0.0.0/24", subnet6=str(sandbox.subnet6), started=1732170000.0, tool_version="0.1.0")
    with CassetteWriter(path, header) as writer:
        writer.write(ConnectionOpened(0.01, 0, (client.address6, 40000), (server.address6, 7000)))
        writer.write(Data(0.011, 0, C2S, b"ping 0\n"))
        writer.write(Data(0.012, 0, S2C, b"pong 0\n"))
        writer.write(HalfClosed(0.013, 0, C2S))
        writer.write(HalfClosed(0.014, 0, S2C))
        writer.write(Closed(0.015, 0))
        writer.commit(1.0)
    listener = server.listen(7000, "::")
    peers: list = []
    thread = serve(listener, 1, lambda request: request.replace(b"ping", b"pong"), peers)
    report = drive(sandbox, str(path), stall_timeout=5)
    thread.join(5)
    listener.close()
    assert [r.verdict for r in report.results] == [Verdict.IDENTICAL], report.format()
    assert [peer[:2] for peer in peers] == [(client.address6, 40000)]
