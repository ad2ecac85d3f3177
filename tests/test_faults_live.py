"""Faults on the wire between live hosts: latency, rate, loss, partitions, resets."""

from __future__ import annotations

import errno
import hashlib
import math
import shutil
import socket
import threading
import time

import pytest

from pytest_netplayground import ConfigError
from tests.support import leaks

pytestmark = pytest.mark.root

LATENCY = 0.05


def _udp_pair(sandbox):
    a, b = sandbox.add_host(), sandbox.add_host()
    ua = a.udp_socket(("10.0.0.1", 5000))
    ub = b.udp_socket(("10.0.0.2", 5000))
    return a, b, ua, ub


def _udp_rtt(ua, ub) -> float:
    """The best of five request/answer round trips from b to a and back."""
    best = math.inf
    ua.settimeout(5)
    ub.settimeout(5)
    for _ in range(5):
        start = time.monotonic()
        ub.sendto(b"x", ("10.0.0.1", 5000))
        data, peer = ua.recvfrom(100)
        ua.sendto(data, peer)
        ub.recvfrom(100)
        best = min(best, time.monotonic() - start)
    return best


def test_latency_adds_to_each_direction_of_a_round_trip(sandbox):
    a, b, ua, ub = _udp_pair(sandbox)
    sandbox.link(a, b).set(latency=LATENCY)
    assert _udp_rtt(ua, ub) >= 0.9 * 2 * LATENCY
    sandbox.link(a, b).clear()
    assert _udp_rtt(ua, ub) < LATENCY, "clearing the link took the latency away"


def test_one_way_latency_by_name(sandbox):
    a, b, ua, ub = _udp_pair(sandbox)
    sandbox.link("h1", "10.0.0.2").set(latency=LATENCY, direction="a->b")
    rtt = _udp_rtt(ua, ub)
    assert 0.9 * LATENCY <= rtt < 2 * LATENCY


@pytest.mark.skipif(shutil.which("ping") is None, reason="needs ping")
def test_ping_round_trip_grows_by_twice_the_latency(sandbox):
    a, b = sandbox.add_host(), sandbox.add_host()
    sandbox.link(a, b).set(latency="40ms")
    out = b.run(["ping", "-c", "3", "-i", "0.2", "-W", "5", "10.0.0.1"], timeout=20).stdout.decode()
    times = [float(word.split("=")[1]) for word in out.split() if word.startswith("time=")]
    assert len(times) == 3, out
    assert min(times) >= 0.9 * 80.0


def test_tcp_request_answer_crosses_the_link_once_each_way(sandbox):
    a, b = sandbox.add_host(), sandbox.add_host()
    listener = a.listen(9000)
    client = b.connect(("10.0.0.1", 9000))
    server, _ = listener.accept()
    sandbox.link(a, b).set(latency=LATENCY)
    start = time.monotonic()
    client.sendall(b"question")
    assert server.recv(100) == b"question"
    server.sendall(b"answer")
    assert client.recv(100) == b"answer"
    assert time.monotonic() - start >= 0.9 * 2 * LATENCY


def _send_and_receive(ua, ub, n: int) -> list[int]:
    """Send ``n`` numbered datagrams from b to a, received as they come (no buffer overflows)."""
    got: list[int] = []
    receiver = threading.Thread(target=lambda: got.extend(_drain(ua)))
    receiver.start()
    for i in range(n):
        ub.sendto(i.to_bytes(4, "big"), ("10.0.0.1", 5000))
        if i % 20 == 19:
            time.sleep(0.001)
    receiver.join(30)
    return got


def _drain(sock, quiet: float = 0.5) -> list[int]:
    sock.settimeout(quiet)
    got = []
    while True:
        try:
            got.append(int.from_bytes(sock.recv(100), "big"))
        except socket.timeout:
            return got


def test_udp_loss_lands_in_the_binomial_band(sandbox):
    a, b, ua, ub = _udp_pair(sandbox)
    sandbox.link(a, b).set(loss=0.3, direction="b->a")
    n = 1000
    received = _send_and_receive(ua, ub, n)
    spread = 5 * math.sqrt(n * 0.3 * 0.7)
    assert n * 0.7 - spread <= len(received) <= n * 0.7 + spread
    assert sandbox.fault_state()["dropped"]["fault: loss"] == n - len(received)


def test_same_seed_drops_the_same_datagrams():
    def lost(seed: int) -> list[int]:
        with leaks.running(seed=seed) as sb:
            a, b, ua, ub = _udp_pair(sb)
            sb.link(a, b).set(loss=0.5)
            return sorted(set(range(200)) - set(_send_and_receive(ua, ub, 200)))

    first = lost(1234)
    assert 50 < len(first) < 150
    assert lost(1234) == first
    assert lost(4321) != first


def test_partition_times_a_connect_out_and_healing_restores_it(sandbox):
    a, b, c = sandbox.add_host(), sandbox.add_host(), sandbox.add_host()
    listener = a.listen(9000)
    live = c.connect(("10.0.0.1", 9000))
    accepted, _ = listener.accept()
    with sandbox.partition([a], [b, c]):
        with pytest.raises(socket.timeout):
            b.connect(("10.0.0.1", 9000), timeout=1.0)
        live.sendall(b"stuck")
        accepted.settimeout(0.5)
        with pytest.raises(socket.timeout):
            accepted.recv(100)  # the live connection stalls
    accepted.settimeout(10)
    assert accepted.recv(100) == b"stuck", "TCP retransmitted once healed"
    again = b.connect(("10.0.0.1", 9000), timeout=5)
    listener.accept()[0].close()
    again.close()
    assert sandbox.fault_state()["dropped"]["fault: partition"] > 0


def test_reset_gives_both_sides_econnreset(sandbox):
    a, b = sandbox.add_host(), sandbox.add_host()
    listener = a.listen(9000)
    client = b.connect(("10.0.0.1", 9000))
    server, _ = listener.accept()
    client.sendall(b"hello")
    assert server.recv(10) == b"hello"
    (connection,) = sandbox.connections(a)
    assert (connection.client.host, connection.client.port) == client.getsockname()
    assert (connection.server.host, connection.server.port) == ("10.0.0.1", 9000)
    assert connection.reset()
    for sock in (client, server):
        sock.settimeout(5)
        with pytest.raises(ConnectionResetError) as info:
            sock.recv(10)
        assert info.value.errno == errno.ECONNRESET
    assert sandbox.connections() == []


def test_tcp_transfer_under_loss_arrives_whole(sandbox):
    a, b = sandbox.add_host(), sandbox.add_host()
    sandbox.link(a, b).set(loss=0.05)
    payload = hashlib.sha256(b"seed").digest() * 8192 * 32  # 8 MiB: over a hundred segments of 64 KiB
    listener = a.listen(9000)
    client = b.connect(("10.0.0.1", 9000), timeout=30)
    server, _ = listener.accept()
    sender = threading.Thread(target=lambda: (client.sendall(payload), client.shutdown(socket.SHUT_WR)))
    sender.start()
    server.settimeout(60)
    got = bytearray()
    while chunk := server.recv(65536):
        got += chunk
    sender.join(60)
    assert bytes(got) == payload
    assert sandbox.fault_state()["dropped"].get("fault: loss", 0) > 0


def test_rate_cap_holds_a_bulk_transfer_back(sandbox):
    a, b = sandbox.add_host(), sandbox.add_host()
    rate = 1_250_000  # 10 Mbit/s
    size = 2_000_000
    sandbox.link(a, b).set(rate="10mbit", direction="b->a")
    listener = a.listen(9000)
    client = b.connect(("10.0.0.1", 9000), timeout=10)
    server, _ = listener.accept()
    sender = threading.Thread(target=lambda: (client.sendall(b"x" * size), client.shutdown(socket.SHUT_WR)))
    start = time.monotonic()
    sender.start()
    server.settimeout(60)
    total = 0
    while chunk := server.recv(65536):
        total += len(chunk)
    elapsed = time.monotonic() - start
    sender.join(60)
    assert total == size
    # A lower bound on time only: the cap must hold the bytes back.
    assert elapsed >= 0.9 * (size - 256 * 1024) / rate


def test_faults_given_for_the_whole_run_apply_as_hosts_come():
    with leaks.running(faults={"h1-h2": {"latency": "50ms"}}, seed=3) as sb:
        a, b, ua, ub = _udp_pair(sb)
        assert _udp_rtt(ua, ub) >= 0.9 * 2 * LATENCY
        state = sb.fault_state()
        assert state["seed"] == 3
        assert state["applied"] == ["h1<->h2: latency=0.05"]


def test_bad_fault_values_are_named(sandbox):
    a, b = sandbox.add_host(), sandbox.add_host()
    with pytest.raises(ConfigError, match="loss: expected a probability"):
        sandbox.link(a, b).set(loss=2)
    with pytest.raises(ConfigError, match="unknown fault 'latncy'"):
        sandbox.link(a, b).set(latncy=1)
    with pytest.raises(ConfigError, match="no host 'h9'"):
        sandbox.link(a, "h9")
    with pytest.raises(ConfigError, match="both sides"):
        sandbox.partition([a], [a, b])


def _faults_rootless() -> dict:
    from pytest_netplayground import Sandbox

    with Sandbox(seed=5) as sb:
        a, b, ua, ub = _udp_pair(sb)
        sb.link(a, b).set(latency=LATENCY)
        rtt = _udp_rtt(ua, ub)
        sb.link(a, b).clear()
        listener = a.listen(9000)
        client = b.connect(("10.0.0.1", 9000))
        server, _ = listener.accept()
        (connection,) = sb.connections()
        connection.reset()
        errors = []
        for sock in (client, server):
            sock.settimeout(5)
            try:
                sock.recv(10)
            except OSError as exc:
                errors.append(exc.errno)
        with sb.partition([a], [b]):
            ub.sendto(b"x", ("10.0.0.1", 5000))
            ua.settimeout(0.3)
            try:
                ua.recv(10)
                partitioned = False
            except socket.timeout:
                partitioned = True
    return {"rtt": rtt, "errors": errors, "partitioned": partitioned}


def test_faults_work_for_an_unprivileged_user():
    import pytest_netplayground.runtime.supervisor  # noqa: F401  (the child cannot read the files)
    from tests.support.unprivileged import run_unprivileged

    result = run_unprivileged(_faults_rootless)
    assert result["rtt"] >= 0.9 * 2 * LATENCY
    assert result["errors"] == [errno.ECONNRESET, errno.ECONNRESET]
    assert result["partitioned"]
