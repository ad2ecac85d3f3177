"""TLS bridges: two of them back to back in memory, and against real openssl programs on loopback."""

from __future__ import annotations

import pickle
import socket
import ssl
import subprocess
import time

import pytest

from pytest_netplayground.core.tls_hello import NEED_MORE, ClientHello, parse_client_hello
from pytest_netplayground.errors import TlsError, TlsUntrusted
from pytest_netplayground.runtime.tls_authority import CertificateAuthority
from pytest_netplayground.runtime.tls_bridge import TlsBridge, client_context


@pytest.fixture(scope="module")
def authority(tmp_path_factory):
    return CertificateAuthority.load_or_create(str(tmp_path_factory.mktemp("tls") / "ca"))


def shuttle(client: TlsBridge, server: TlsBridge, rounds: int = 10) -> None:
    """Carry ciphertext both ways until neither side has anything to say."""
    for _ in range(rounds):
        to_server, to_client = client.pending_ciphertext(), server.pending_ciphertext()
        if not to_server and not to_client:
            return
        if to_server:
            server.feed_ciphertext(to_server)
        if to_client:
            client.feed_ciphertext(to_client)
    raise AssertionError("the bridges kept talking")


def test_back_to_back_both_ways_with_alpn(authority):
    context = client_context(authority.cert_pem, alpn=["h2", "http/1.1"])
    client = TlsBridge.client("api.test", "server api.test", context=context)
    first = client.pending_ciphertext()
    parsed = parse_client_hello(first)
    assert (
        isinstance(parsed, ClientHello)
        and parsed.server_name == "api.test"
        and parsed.alpn == ("h2", "http/1.1")
    )
    server = TlsBridge.server(authority, parsed.server_name, "client 10.0.0.2:5000", alpn=["h2"])
    client.write_plaintext(b"early request")  # held until the handshake is done
    server.feed_ciphertext(first)
    shuttle(client, server)
    assert client.handshake_done and server.handshake_done
    assert client.alpn == server.alpn == "h2"
    assert client.version == server.version == "TLSv1.3"
    assert server.read_plaintext() == b"early request"
    server.write_plaintext(b"x" * 200_000)
    shuttle(client, server)
    assert client.read_plaintext() == b"x" * 200_000
    assert client.read_plaintext() == b""


def test_close_notify_is_seen_by_the_peer(authority):
    client = TlsBridge.client("a.test", "server", context=client_context(authority.cert_pem))
    server = TlsBridge.server(authority, "a.test", "client")
    shuttle(client, server)
    client.write_plaintext(b"bye")
    client.close()
    assert client.close_sent
    shuttle(client, server)
    assert server.read_plaintext() == b"bye"
    assert server.peer_closed and not server.truncated
    server.close()
    shuttle(client, server)
    assert client.peer_closed and not client.truncated
    with pytest.raises(TlsError, match="closed"):
        client.write_plaintext(b"more")


def test_tcp_ending_without_close_notify_is_marked_truncated(authority):
    client = TlsBridge.client("a.test", "server", context=client_context(authority.cert_pem))
    server = TlsBridge.server(authority, "a.test", "client")
    shuttle(client, server)
    server.write_plaintext(b"last words")
    client.feed_ciphertext(server.pending_ciphertext())
    client.feed_eof()
    assert client.read_plaintext() == b"last words"
    assert client.peer_closed and client.truncated


def test_a_client_that_does_not_trust_the_ca_is_reported(authority):
    client = TlsBridge.client("a.test", "server a.test", context=client_context())  # the system's trust only
    server = TlsBridge.server(authority, "a.test", "client 10.0.0.2:41000")
    server.feed_ciphertext(client.pending_ciphertext())
    with pytest.raises(TlsError, match="does not verify"):
        client.feed_ciphertext(server.pending_ciphertext())
    with pytest.raises(TlsUntrusted, match="10.0.0.2:41000.*does not trust the sandbox CA") as caught:
        server.feed_ciphertext(client.pending_ciphertext())
    assert caught.value.alert == "unknown_ca"
    assert server.error is caught.value
    with pytest.raises(TlsUntrusted):  # the bridge stays failed
        server.feed_ciphertext(b"")
    carried = pickle.loads(pickle.dumps(caught.value))  # as it crosses the control channel
    assert (type(carried), str(carried), carried.alert) == (TlsUntrusted, str(caught.value), "unknown_ca")


def test_a_tls12_client_refusal_is_reported_too(authority):
    context = client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    client = TlsBridge.client("a.test", "server", context=context)
    server = TlsBridge.server(authority, "a.test", "client")
    server.feed_ciphertext(client.pending_ciphertext())
    with pytest.raises(TlsError):
        client.feed_ciphertext(server.pending_ciphertext())
    with pytest.raises(TlsUntrusted):
        server.feed_ciphertext(client.pending_ciphertext())


def test_a_server_with_another_name_is_refused_by_a_verifying_client(authority):
    client = TlsBridge.client("wanted.test", "server", context=client_context(authority.cert_pem))
    server = TlsBridge.server(authority, "other.test", "client")
    with pytest.raises(TlsError, match="does not verify.*mismatch"):
        shuttle(client, server)


def test_not_verifying_accepts_any_certificate(authority):
    client = TlsBridge.client("wanted.test", "server", context=client_context(verify=False))
    server = TlsBridge.server(authority, "other.test", "client")
    shuttle(client, server)
    assert client.handshake_done


def test_garbage_from_the_peer_is_a_tls_error_naming_it(authority):
    server = TlsBridge.server(authority, "a.test", "client 10.0.0.9:1")
    with pytest.raises(TlsError, match="client 10.0.0.9:1"):
        server.feed_ciphertext(b"GET / HTTP/1.1\r\n\r\n")


def test_a_peer_leaving_during_the_handshake_is_an_error(authority):
    server = TlsBridge.server(authority, "a.test", "client 10.0.0.9:1")
    with pytest.raises(TlsError, match="closed the connection during the TLS handshake"):
        server.feed_eof()


# -- against openssl on loopback --------------------------------------------------------


def pump(sock: socket.socket, bridge: TlsBridge, until, deadline: float) -> bytes:
    """Move bytes between a socket and a bridge until ``until(plaintext so far)`` holds; that plaintext.
    Fails at the deadline: nothing here waits for ever."""
    sock.setblocking(False)
    received = b""
    while not until(received):
        assert time.monotonic() < deadline, f"timed out; received {received!r}"
        out = bridge.pending_ciphertext()
        if out:
            sock.sendall(out)
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        if not data:
            bridge.feed_eof()
        else:
            bridge.feed_ciphertext(data)
        received += bridge.read_plaintext()
        if not data:
            break
    out = bridge.pending_ciphertext()
    if out:
        sock.setblocking(True)
        sock.sendall(out)
    return received


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.needs("openssl")
def test_openssl_s_client_talks_to_a_server_bridge(authority, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_bytes(authority.cert_pem)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(10)
        port = listener.getsockname()[1]
        command = [
            "openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "web.test",
            "-verify_hostname", "web.test", "-verify_return_error", "-CAfile", str(ca), "-alpn", "http/1.1",
            "-quiet",
        ]  # fmt: skip
        client = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            conn, _ = listener.accept()
            deadline = time.monotonic() + 10
            with conn:
                conn.settimeout(10)
                hello = b""
                parsed = NEED_MORE
                while parsed is NEED_MORE:
                    chunk = conn.recv(65536)
                    assert chunk, f"s_client left before its hello: {client.stderr.read1()!r}"
                    hello += chunk
                    parsed = parse_client_hello(hello)
                assert isinstance(parsed, ClientHello) and parsed.alpn == ("http/1.1",)
                assert parsed.server_name == "web.test"
                bridge = TlsBridge.server(authority, parsed.server_name, "openssl s_client", alpn=parsed.alpn)
                bridge.feed_ciphertext(hello)
                client.stdin.write(b"ping from s_client\n")
                client.stdin.flush()
                assert pump(conn, bridge, lambda got: b"\n" in got, deadline) == b"ping from s_client\n"
                assert bridge.alpn == "http/1.1"
                bridge.write_plaintext(b"pong from the bridge\n")
                bridge.close()
                conn.sendall(bridge.pending_ciphertext())
            out, err = client.communicate(timeout=10)
        finally:
            client.kill()
            client.wait()
    assert b"pong from the bridge\n" in out, err


@pytest.mark.needs("openssl")
def test_a_client_bridge_talks_to_openssl_s_server(authority, tmp_path):
    leaf = authority.leaf("db.test")
    (tmp_path / "cert.pem").write_bytes(leaf.cert_pem)
    (tmp_path / "key.pem").write_bytes(leaf.key_pem)
    port = _free_port()
    command = [
        "openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(tmp_path / "cert.pem"),
        "-key", str(tmp_path / "key.pem"), "-alpn", "h2", "-rev", "-naccept", "1",
    ]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=1)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline and server.poll() is None, "s_server did not start"
                time.sleep(0.05)
        with sock:
            context = client_context(authority.cert_pem, alpn=["h2", "http/1.1"])
            bridge = TlsBridge.client("db.test", f"server 127.0.0.1:{port}", context=context)
            pump(sock, bridge, lambda got: bridge.handshake_done, deadline)
            assert bridge.alpn == "h2"
            bridge.write_plaintext(b"hello\n")
            assert pump(sock, bridge, lambda got: b"\n" in got, deadline) == b"olleh\n"  # -rev reverses lines
    finally:
        server.kill()
        server.wait()
