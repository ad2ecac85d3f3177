"""Toxics on live proxied TCP connections: stall, half-close, limit_data, slicer."""

from __future__ import annotations

import errno
import socket
import time

import pytest

from pytest_netplayground import ConfigError

pytestmark = pytest.mark.root


def _connected(sandbox):
    a, b = sandbox.add_host(), sandbox.add_host()
    listener = a.listen(9000)
    client = b.connect(("10.0.0.1", 9000))
    server, _ = listener.accept()
    for sock in (client, server):
        sock.settimeout(5)
    (connection,) = sandbox.connections(a)
    return client, server, connection


def _read_until_end(sock) -> tuple[bytes, int | None]:
    """What ``sock`` reads until end of file or an error, and the error's number."""
    got = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError as exc:
            return bytes(got), exc.errno
        if not chunk:
            return bytes(got), None
        got += chunk


def test_stall_holds_bytes_until_cleared(sandbox):
    client, server, connection = _connected(sandbox)
    assert connection.stall()
    client.sendall(b"held")
    server.settimeout(0.5)
    with pytest.raises(socket.timeout):
        server.recv(100)
    server.sendall(b"also held")
    client.settimeout(0.3)
    with pytest.raises(socket.timeout):
        client.recv(100)
    assert connection.clear()
    server.settimeout(5)
    client.settimeout(5)
    assert server.recv(100) == b"held"
    assert client.recv(100) == b"also held"
    client.sendall(b"and on")
    assert server.recv(100) == b"and on"


def test_stall_one_direction_holds_an_end_of_file_too(sandbox):
    client, server, connection = _connected(sandbox)
    connection.stall("c2s")
    client.sendall(b"bye")
    client.shutdown(socket.SHUT_WR)
    server.sendall(b"still flowing")
    assert client.recv(100) == b"still flowing"
    server.settimeout(0.3)
    with pytest.raises(socket.timeout):
        server.recv(100)
    connection.clear("c2s")
    server.settimeout(5)
    assert _read_until_end(server) == (b"bye", None)


def test_limit_data_gives_exactly_n_bytes_then_resets_both(sandbox):
    client, server, connection = _connected(sandbox)
    assert connection.limit_data(1000, direction="s2c")
    server.sendall(b"x" * 5000)
    got, error = _read_until_end(client)
    assert len(got) == 1000
    assert error == errno.ECONNRESET
    server.settimeout(5)
    with pytest.raises(ConnectionResetError):
        server.recv(10)
        server.sendall(b"y" * 100)
        server.recv(10)


def test_limit_data_per_link_holds_for_new_connections(sandbox):
    a, b = sandbox.add_host(), sandbox.add_host()
    sandbox.link(a, b).set(limit_data=300, direction="a->b")  # what a (the server) sends to b
    assert sandbox.fault_state()["applied"] == ["h1->h2: limit_data=300"]
    assert sandbox.fault_state()["links"] == ["0->1: limit_data=300"]
    listener = a.listen(9000)
    client = b.connect(("10.0.0.1", 9000))
    server, _ = listener.accept()
    client.settimeout(5)
    client.sendall(b"q" * 2000)  # the other direction has no limit
    server.settimeout(5)
    received = 0
    while received < 2000:
        received += len(server.recv(65536))
    server.sendall(b"a" * 1000)
    got, error = _read_until_end(client)
    assert (len(got), error) == (300, errno.ECONNRESET)
    sandbox.link(a, b).clear()
    again = b.connect(("10.0.0.1", 9000))
    accepted, _ = listener.accept()
    accepted.sendall(b"a" * 1000)
    accepted.close()
    again.settimeout(5)
    assert _read_until_end(again) == (b"a" * 1000, None)


def test_slicer_makes_the_receiver_see_many_small_reads(sandbox):
    client, server, connection = _connected(sandbox)
    payload = bytes(range(256)) * 8  # 2048 bytes
    assert connection.slice(64, delay="2ms", direction="s2c")
    start = time.monotonic()
    server.sendall(payload)
    server.shutdown(socket.SHUT_WR)
    reads, got = 0, bytearray()
    while chunk := client.recv(65536):
        reads += 1
        got += chunk
    elapsed = time.monotonic() - start
    assert bytes(got) == payload
    assert reads >= 16, f"{reads} reads: the pieces were not kept apart"
    assert elapsed >= 31 * 0.002 * 0.9  # 32 pieces, 31 pauses


def test_half_close_gives_the_client_end_of_file_while_it_can_still_send(sandbox):
    client, server, connection = _connected(sandbox)
    server.sendall(b"last words")
    assert client.recv(100) == b"last words"
    assert connection.half_close("s2c")
    assert client.recv(100) == b"", "the client reads end of file"
    server.sendall(b"dropped")
    client.sendall(b"still heard")
    assert server.recv(100) == b"still heard"


def test_toxics_are_refused_with_their_names(sandbox):
    client, server, connection = _connected(sandbox)
    with pytest.raises(ConfigError, match="unknown toxic 'stal'"):
        connection.set(stal=True)
    with pytest.raises(ConfigError, match="direction: expected"):
        connection.stall("up")
    connection.reset()
    assert not connection.stall(), "an ended connection takes no toxics"


def _toxics_rootless() -> dict:
    from pytest_netplayground import Sandbox

    with Sandbox(seed=5) as sb:
        client, server, connection = _connected(sb)
        connection.stall("c2s")
        client.sendall(b"held")
        server.settimeout(0.3)
        try:
            server.recv(10)
            stalled = False
        except socket.timeout:
            stalled = True
        connection.clear()
        server.settimeout(5)
        released = server.recv(10)
        connection.slice(8, delay="1ms", direction="s2c")
        server.sendall(b"s" * 256)
        reads, got = 0, b""
        while len(got) < 256:
            got += client.recv(65536)
            reads += 1
        connection.half_close("c2s")
        half_closed = server.recv(10)
        connection.limit_data(100, direction="s2c")
        server.sendall(b"l" * 500)
        limited, error = _read_until_end(client)
    return {"stalled": stalled, "released": released, "reads": reads, "sliced": got,
            "half_closed": half_closed, "limited": len(limited), "error": error}


def test_toxics_work_for_an_unprivileged_user():
    import pytest_netplayground.runtime.supervisor  # noqa: F401  (the child cannot read the files)
    from tests.support.unprivileged import run_unprivileged

    result = run_unprivileged(_toxics_rootless)
    assert result["stalled"] and result["released"] == b"held"
    assert result["sliced"] == b"s" * 256 and result["reads"] >= 8
    assert result["half_closed"] == b"", "the server read end of file"
    assert (result["limited"], result["error"]) == (100, errno.ECONNRESET)


def test_toxics_given_for_the_whole_run_hold_for_its_connections():
    from tests.support import leaks

    with leaks.running(faults={"h1->h2": {"limit_data": 200}}, seed=3) as sb:
        a, b = sb.add_host(), sb.add_host()
        listener = a.listen(9000)
        client = b.connect(("10.0.0.1", 9000))
        server, _ = listener.accept()
        client.settimeout(5)
        server.sendall(b"x" * 1000)
        got, error = _read_until_end(client)
        assert (len(got), error) == (200, errno.ECONNRESET)
        assert sb.fault_state()["applied"] == ["h1->h2: limit_data=200"]
