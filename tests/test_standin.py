"""Stand-in timing: a replayed connection waits for a live server only as long as it took to listen
when recorded."""

from __future__ import annotations

import socket
import sys
import textwrap
import time

import pytest

from pytest_netplayground import Endpoint
from pytest_netplayground.cassette import Cassette
from pytest_netplayground.core.standin import FALLBACK_PATIENCE, LISTEN_MARGIN
from pytest_netplayground.runtime.sandbox import PIPE
from tests.support.leaks import running

pytestmark = pytest.mark.root

PORT = 9100
SERVER = ("10.0.0.1", PORT)
GREETING = b"hello from the server\n"
CONNECTIONS = 3

# Greets each client, reads until it closes, says so on stdout; exits after
# argv[2] connections. Sleeps argv[1] seconds before it listens.
SERVER_SCRIPT = textwrap.dedent(
    f"""
    import socket, sys, time
    time.sleep(float(sys.argv[1]))
    listener = socket.create_server(("", {PORT}))
    for _ in range(int(sys.argv[2])):
        conn, _ = listener.accept()
        conn.sendall({GREETING!r})
        while conn.recv(4096):
            pass
        conn.close()
        print("served", flush=True)
    """
)


def greeted(client, timeout: float = 10.0) -> float:
    """Connect, read the greeting, close; returns seconds from connect() to the greeting's first byte."""
    start = time.monotonic()
    conn = client.connect(SERVER, timeout=timeout)
    try:
        conn.settimeout(timeout)
        first = conn.recv(1)
        elapsed = time.monotonic() - start
        rest = b""
        while len(first + rest) < len(GREETING):
            rest += conn.recv(4096)
        assert first + rest == GREETING
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(4096):
            pass
    finally:
        conn.close()
    return elapsed


def record(path, server_delay: float, connections: int) -> float:
    """Record ``connections`` greetings; returns the listen delay the cassette noted."""
    with running("record", path) as sb:
        server, client = sb.add_host("server"), sb.add_host("client")
        proc = server.spawn([sys.executable, "-c", SERVER_SCRIPT, str(server_delay), str(connections)])
        server.wait_for_port(PORT, timeout=10 + server_delay)
        for _ in range(connections):
            greeted(client)
        assert proc.wait(timeout=10) == 0
    delays = Cassette(path).index().notes.listen_delays
    assert set(delays) == {Endpoint(*SERVER)}, delays
    delay = delays[Endpoint(*SERVER)]
    assert server_delay <= delay < server_delay + 10
    return delay


def test_a_placeholder_in_the_server_host_costs_at_most_the_recorded_listen_delay(tmp_path):
    cassette = tmp_path / "greet.jsonl"
    delay = record(cassette, 0.0, CONNECTIONS)
    with running("replay", cassette) as sb:
        server, client = sb.add_host("server"), sb.add_host("client")
        server.spawn(["sleep", "100"])  # what a command line needs for a host it does not run
        times = [greeted(client) for _ in range(CONNECTIONS)]
    assert sb.divergences.ok, sb.divergences.format()
    # The first connection waits at most until the recorded server had listened (plus
    # the margin); then the cassette stands in at once. Bounds on behaviour, with slack
    # for a loaded machine, not a benchmark.
    assert times[0] < delay + LISTEN_MARGIN + 0.5, times
    assert max(times[1:]) < 0.5, times
    assert sum(times) < CONNECTIONS * FALLBACK_PATIENCE - 1.0, times


def test_once_the_recorded_listen_delay_has_passed_every_connect_is_answered_at_once(tmp_path):
    cassette = tmp_path / "greet.jsonl"
    delay = record(cassette, 0.0, CONNECTIONS)
    with running("replay", cassette) as sb:
        server, client = sb.add_host("server"), sb.add_host("client")
        server.spawn(["sleep", "100"])
        time.sleep(delay + LISTEN_MARGIN)
        times = [greeted(client) for _ in range(CONNECTIONS)]
    assert sb.divergences.ok, sb.divergences.format()
    assert max(times) < 0.5, times


def test_a_server_that_starts_slowly_within_its_recorded_delay_is_used_live(tmp_path):
    cassette = tmp_path / "slow.jsonl"
    record(cassette, 1.0, 1)
    with running("replay", cassette) as sb:
        server, client = sb.add_host("server"), sb.add_host("client")
        proc = server.spawn([sys.executable, "-c", SERVER_SCRIPT, "1.0", "1"], stdout=PIPE)
        greeted(client)  # connects at once: the SYN waits for the server to listen
        out, _ = proc.communicate(timeout=10)
    assert out == b"served\n"
    assert sb.divergences.ok, sb.divergences.format()
