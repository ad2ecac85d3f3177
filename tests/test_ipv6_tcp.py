"""IPv6 through the proxy and the sessions: TCP as over IPv4 (real peers, refusals kept, recorded and
replayed), UDP over IPv6, and both families recorded and replayed without privileges."""

from __future__ import annotations

import errno
import shutil
import socket
import subprocess
import sys

import pytest

from pytest_netplayground import Sandbox
from pytest_netplayground.cassette import Cassette
from pytest_netplayground.core.addressing6 import default_subnet6
from pytest_netplayground.core.events import ConnectionOpened, Outcome
from tests.support import unprivileged
from tests.support.unprivileged import run_unprivileged

pytestmark = pytest.mark.root

NEEDS_CURL = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
PORT = 8000


def exchange(client, server_listener) -> tuple[tuple, tuple, bytes, bytes]:
    """(peer the server saw, peer the client saw, bytes each received) for one short exchange."""
    accepted, peer = server_listener.accept()
    client.sendall(b"hello")
    got_by_server = accepted.recv(100)
    accepted.sendall(b"world")
    got_by_client = client.recv(100)
    seen_by_client = client.getpeername()
    accepted.close()
    return peer, seen_by_client, got_by_server, got_by_client


def test_a_connection_over_ipv6_sees_the_real_addresses_on_both_sides(sandbox):
    server, client_host = sandbox.add_host("server"), sandbox.add_host("client")
    listener = server.listen(PORT, "::")
    listener.settimeout(5)
    client = client_host.socket(socket.AF_INET6)
    client.settimeout(5)
    client.connect((server.address6, PORT))
    peer, seen, got_by_server, got_by_client = exchange(client, listener)
    assert (peer[0], peer[1]) == (client_host.address6, client.getsockname()[1])
    assert seen[:2] == (server.address6, PORT)
    assert (got_by_server, got_by_client) == (b"hello", b"world")
    assert sandbox.stats()["pipes"] >= 1


def test_a_server_bound_on_any6_is_reached_over_ipv4_and_ipv6(sandbox):
    server, client_host = sandbox.add_host("server"), sandbox.add_host("client")
    listener = server.listen(PORT, "::")  # dual stack: IPv4 peers appear as ::ffff:a.b.c.d
    listener.settimeout(5)
    peers = []
    for family, address in ((socket.AF_INET, server.address), (socket.AF_INET6, server.address6)):
        client = client_host.socket(family)
        client.settimeout(5)
        client.connect((address, PORT))
        peer, _, got_by_server, got_by_client = exchange(client, listener)
        peers.append(peer[0])
        assert (got_by_server, got_by_client) == (b"hello", b"world")
    assert peers == [f"::ffff:{client_host.address}", client_host.address6]


def test_a_name_resolves_to_ipv6_first_and_python_connects_over_it(sandbox):
    server, client_host = sandbox.add_host("server"), sandbox.add_host("client")
    listener = server.listen(PORT, "::")
    code = f"import socket; s = socket.create_connection(('server', {PORT}), timeout=5); print(s.getpeername()[0])"
    result = client_host.run([sys.executable, "-c", code], timeout=15, text=True)
    assert result.stdout.strip() == server.address6, result.stderr
    listener.close()


def test_a_closed_port_over_ipv6_is_refused_at_once(sandbox):
    server, client_host = sandbox.add_host("server"), sandbox.add_host("client")
    server.listen(PORT + 1, "::")  # something runs there, but not on PORT
    client = client_host.socket(socket.AF_INET6)
    client.settimeout(5)
    assert client.connect_ex((server.address6, PORT)) == errno.ECONNREFUSED


def test_an_unowned_address_of_the_prefix_refuses_tcp_as_unreachable(sandbox):
    client_host = sandbox.add_host()
    client = client_host.socket(socket.AF_INET6)
    client.settimeout(5)
    unowned = default_subnet6(sandbox.subnet).host_address(99)
    assert client.connect_ex((unowned, PORT)) == errno.EHOSTUNREACH


# -- curl -6 against python's http.server bound on :: ---------------------------


def _serve(server, directory):
    server.spawn(
        [sys.executable, "-m", "http.server", str(PORT), "--bind", "::"],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server.wait_for_port(PORT, timeout=10)


def _curl(client_host, server) -> bytes:
    url = f"http://[{server.address6}]:{PORT}/hello.txt"
    result = client_host.run(["curl", "-6", "-sS", "--max-time", "5", url], timeout=15)
    assert result.returncode == 0, result.stderr
    return result.stdout


@NEEDS_CURL
def test_curl_over_ipv6_is_recorded_and_replays_with_the_server_absent_and_present(tmp_path):
    (tmp_path / "hello.txt").write_text("hello over IPv6\n")
    cassette = tmp_path / "v6.jsonl"
    with Sandbox(mode="record", cassette=cassette) as sb:
        server, client_host = sb.add_host("server"), sb.add_host("client")
        _serve(server, tmp_path)
        assert _curl(client_host, server) == b"hello over IPv6\n"
    [opened] = [e for e in Cassette(cassette).events() if isinstance(e, ConnectionOpened)]
    assert (str(opened.server), opened.client.host, opened.outcome) == (
        f"[{server.address6}]:{PORT}",
        client_host.address6,
        Outcome.ESTABLISHED,
    )
    assert f'"server": "[{server.address6}]:{PORT}"'.encode() in cassette.read_bytes()

    with Sandbox(mode="replay", cassette=cassette) as sb:  # the server absent: the cassette answers
        server, client_host = sb.add_host("server"), sb.add_host("client")
        assert _curl(client_host, server) == b"hello over IPv6\n"
    assert sb.divergences.ok, sb.divergences.format()

    (tmp_path / "hello.txt").write_text("changed, but the cassette answers\n")
    with Sandbox(mode="replay", cassette=cassette) as sb:  # the server present: it gets the recorded request
        server, client_host = sb.add_host("server"), sb.add_host("client")
        _serve(server, tmp_path)
        assert _curl(client_host, server) == b"hello over IPv6\n"
    assert not sb.divergences.ok  # the live server's different answer is reported
    assert "s2c" in sb.divergences.format()


def _rootless_record_and_replay(cassette: str) -> dict:
    results = {}
    for mode in ("record", "replay"):
        with Sandbox(mode=mode, cassette=cassette) as sb:
            server, client_host = sb.add_host("server"), sb.add_host("client")
            client = client_host.socket(socket.AF_INET6)
            client.settimeout(5)
            if mode == "record":
                listener = server.listen(PORT, "::")
                listener.settimeout(5)
                client.connect((server.address6, PORT))
                results[mode] = exchange(client, listener)[3]
            else:
                client.connect((server.address6, PORT))
                client.sendall(b"hello")
                results[mode] = client.recv(100)
            client.close()
        results[mode + " ok"] = sb.divergences.ok if mode == "replay" else True
    return results


def test_tcp_over_ipv6_records_and_replays_for_an_unprivileged_user():
    # The unprivileged child cannot read the interpreter's files: load what it uses first.
    import pytest_netplayground.cassette  # noqa: F401
    import pytest_netplayground.core.packets6  # noqa: F401
    import pytest_netplayground.core.router6  # noqa: F401

    with unprivileged.user_dir() as directory:
        result = run_unprivileged(_rootless_record_and_replay, f"{directory}/v6.jsonl")
    assert (result["record"], result["replay"], result["replay ok"]) == (b"world", b"world", True)


def test_udp_over_ipv6_is_recorded_and_the_cassette_answers_for_an_absent_server(tmp_path):
    from pytest_netplayground.core.events import Datagram, UdpFlow

    cassette = tmp_path / "udp6.jsonl"

    def ask(client_host, server_host) -> bytes:
        client = client_host.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        client.settimeout(5)
        client.connect((server_host.address6, 5353))
        client.send(b"\x12\x34 AAAA server")
        return client.recv(100)

    with Sandbox(mode="record", cassette=cassette) as sb:
        server_host, client_host = sb.add_host("server"), sb.add_host("client")
        server = server_host.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        server.bind(("::", 5353))
        server.settimeout(5)
        client = client_host.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        client.settimeout(5)
        client.sendto(b"\x12\x34 AAAA server", (server_host.address6, 5353))
        question, peer = server.recvfrom(100)
        server.sendto(b"\x12\x34\x81\x80 fd00::1", peer)
        assert client.recv(100) == b"\x12\x34\x81\x80 fd00::1"
    records = list(Cassette(cassette).records())
    [flow] = [r for r in records if isinstance(r, UdpFlow)]
    assert (flow.client.host, str(flow.server)) == (client_host.address6, f"[{server_host.address6}]:5353")
    assert [r.data for r in records if isinstance(r, Datagram)] == [question, b"\x12\x34\x81\x80 fd00::1"]

    with Sandbox(mode="replay", cassette=cassette) as sb:
        server_host, client_host = sb.add_host("server"), sb.add_host("client")
        assert ask(client_host, server_host) == b"\x12\x34\x81\x80 fd00::1"


def _rootless_udp(cassette: str) -> dict:
    """A question over IPv4 and one over IPv6, recorded with the server, then replayed without it."""
    answers = {}
    for mode in ("record", "replay"):
        with Sandbox(mode=mode, cassette=cassette) as sb:
            server_host, client_host = sb.add_host("server"), sb.add_host("client")
            for family, address in ((socket.AF_INET, server_host.address), (socket.AF_INET6, server_host.address6)):
                if mode == "record":
                    server = server_host.socket(family, socket.SOCK_DGRAM)
                    server.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 5353))
                    server.settimeout(5)
                client = client_host.socket(family, socket.SOCK_DGRAM)
                client.settimeout(5)
                client.connect((address, 5353))
                client.send(b"question over " + address.encode())
                if mode == "record":
                    question, peer = server.recvfrom(100)
                    server.sendto(b"answer to " + question, peer)
                answers[(mode, family)] = client.recv(100)
        answers[mode + " ok"] = sb.divergences.ok if mode == "replay" else True
    return answers


def test_udp_over_both_families_records_and_replays_for_an_unprivileged_user():
    import pytest_netplayground.cassette  # noqa: F401
    import pytest_netplayground.core.packets6  # noqa: F401
    import pytest_netplayground.runtime.udp_tap  # noqa: F401

    with unprivileged.user_dir() as directory:
        result = run_unprivileged(_rootless_udp, f"{directory}/udp.jsonl")
    for family in (socket.AF_INET, socket.AF_INET6):
        assert result[("record", family)].startswith(b"answer to question over ")
        assert result[("replay", family)] == result[("record", family)]
    assert result["replay ok"]
