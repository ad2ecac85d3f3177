"""Faults measured over many datagrams, and replays of a cassette under faults and toxics."""

from __future__ import annotations

import math
import time

import pytest

from tests.support.leaks import running
from tests.test_faults_live import _send_and_receive, _udp_pair
from tests.test_record_replay import (
    REQUEST,
    RESPONSE,
    SERVER,
    read_to_eof,
    record_request_response,
    two_hosts,
)

pytestmark = pytest.mark.root

LATENCY = 0.05


def test_ten_percent_loss_over_ten_thousand_datagrams_lands_in_the_binomial_band(sandbox):
    a, b, ua, ub = _udp_pair(sandbox)
    sandbox.link(a, b).set(loss=0.1, direction="b->a")
    n, p = 10_000, 0.1
    received = _send_and_receive(ua, ub, n)
    lost = n - len(set(received))
    spread = 5 * math.sqrt(n * p * (1 - p))  # 5 sigma: 150 datagrams
    assert n * p - spread <= lost <= n * p + spread, f"lost {lost} of {n} (seed {sandbox.seed})"
    # Every datagram missing was dropped by the fault, none by a kernel.
    assert sandbox.fault_state()["dropped"]["fault: loss"] == lost


def test_a_replay_under_latency_gives_the_recorded_bytes_and_no_divergence(tmp_path):
    cassette = tmp_path / "recording.jsonl"
    record_request_response(cassette)
    with running("replay", cassette) as sb:
        server, client = two_hosts(sb)  # nothing runs in the server host: the cassette stands in
        sb.link(server, client).set(latency=LATENCY)
        start = time.monotonic()
        conn = client.connect(SERVER, timeout=5)
        conn.sendall(REQUEST)
        assert read_to_eof(conn) == RESPONSE
        elapsed = time.monotonic() - start
        conn.close()
    assert sb.divergences.ok, sb.divergences.format()
    # The SYN and the request each cross the link toward the server; the stand-in's answers
    # come from the proxy, which no host sends, so they are not delayed.
    assert elapsed >= 0.9 * 2 * LATENCY


def test_a_replay_under_a_slicer_gives_the_recorded_bytes_in_pieces(tmp_path):
    cassette = tmp_path / "recording.jsonl"
    record_request_response(cassette)
    with running("replay", cassette) as sb:
        server, client = two_hosts(sb)
        sb.link(server, client).set(slicer=(4, "5ms"), direction="a->b")  # what the server side sends
        conn = client.connect(SERVER, timeout=5)
        conn.sendall(REQUEST)
        conn.settimeout(5)
        reads, got = 0, b""
        while chunk := conn.recv(65536):
            reads += 1
            got += chunk
        conn.close()
    assert got == RESPONSE
    assert reads >= len(RESPONSE) // 4 // 2, f"{reads} reads of {len(RESPONSE)} bytes"
    assert sb.divergences.ok, sb.divergences.format()


def test_a_recording_under_limit_data_holds_what_the_client_got(tmp_path):
    from pytest_netplayground.core.events import Direction
    from tests.test_record_replay import recorded_bytes

    cassette = tmp_path / "recording.jsonl"
    with running("record", cassette) as sb:
        server, client = two_hosts(sb)
        sb.link(server, client).set(limit_data=100, direction="a->b")
        listener = server.listen(SERVER[1])
        conn = client.connect(SERVER, timeout=5)
        accepted, _ = listener.accept()
        conn.sendall(REQUEST)
        accepted.sendall(b"r" * 1000)
        conn.settimeout(5)
        got = b""
        with pytest.raises(ConnectionResetError):
            while chunk := conn.recv(65536):
                got += chunk
        conn.close()
        accepted.close()
    assert got == b"r" * 100
    assert recorded_bytes(cassette, Direction.S2C) == got
    assert recorded_bytes(cassette, Direction.C2S) == REQUEST
