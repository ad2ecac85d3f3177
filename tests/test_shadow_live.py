"""Shadowing live connections: a candidate server gets every client's bytes, its answers are compared."""

from __future__ import annotations

import os
import re
import socket
import threading
import time

import pytest

from pytest_netplayground.cassette import Cassette
from pytest_netplayground.core.divergence import ByteMismatch, Stall
from pytest_netplayground.core.events import ConnectionOpened
from pytest_netplayground.core.shadow_report import ShadowFailed, ShadowOutcome
from tests.support import leaks, servers

pytestmark = pytest.mark.root

PORT = servers.HTTP_SERVER_PORT
DATE = "s2c:Date: [^\r]*"  # the two servers' clocks may tick between their answers
PATHS = ["/index.txt", "/i.txt", "/index.txt", "/missing", "/i.txt"]
# Generous: the shadow's own deadlines end it well before; this only keeps a broken one from hanging.
GIVE_UP = 30.0


def _get(host, path: str) -> bytes:
    """What a python client in ``host`` receives for one request on a connection of its own."""
    sock = host.connect(("10.0.0.1", PORT), timeout=10)
    try:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n".encode())
        got = bytearray()
        while chunk := sock.recv(65536):
            got += chunk
        return bytes(got)
    finally:
        sock.close()


def _without_date(response: bytes) -> bytes:
    return re.sub(rb"Date: [^\r]*", b"Date: -", response)


def _web(sb, tmp_path, changed: dict[str, bytes] | None = None):
    """Primary http.server in h1, the client host h2, a candidate http.server in h3 (with
    ``changed`` files) or, with ``changed`` None, an empty candidate host."""
    web, client, candidate = sb.add_host("web"), sb.add_host("client"), sb.add_host("candidate")
    servers.start_http_server(web, tmp_path / "primary")
    if changed is not None:
        servers.start_http_server(candidate, tmp_path / "candidate")
        for name, body in changed.items():  # served as they are on each request
            path = tmp_path / "candidate" / "www" / name
            path.write_bytes(body)
            os.utime(path, (servers.FIXED_MTIME, servers.FIXED_MTIME))
    return web, client, candidate


def _settled(shadow, give_up: float = GIVE_UP):
    """The shadow's report once no connection is in flight (or after ``give_up`` seconds)."""
    deadline = time.monotonic() + give_up
    report = shadow.report
    while report.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
        report = shadow.report
    return report


def test_a_candidate_that_answers_one_path_differently_is_reported_for_that_connection_only(tmp_path):
    with leaks.running() as sb:
        web, client, _ = _web(sb, tmp_path, changed={"i.txt": b"I\n"})
        shadow = sb.shadow("web:8000", to="candidate", ignore=[DATE])
        answers = [_get(client, path) for path in PATHS]
        report = shadow.stop()
    assert all(answer.startswith(b"HTTP/1.") for answer in answers)
    assert b"\r\n\r\ni\n" in answers[1], "the client got the primary's answer"
    assert (report.mirrored, report.identical, report.differing, report.failed) == (5, 3, 2, 0), report.format()
    differing = report.by_outcome("differing")
    assert [c.conn for c in differing] == [2, 5]
    for connection, answer in zip(differing, (answers[1], answers[4])):
        (finding,) = connection.items
        assert isinstance(finding, ByteMismatch)
        assert finding.offset == answer.index(b"\r\n\r\n") + 4  # the body's first byte
        assert finding.expected.endswith(b"i\n") and finding.actual.endswith(b"I\n")
        assert connection.client.host == "10.0.0.2"
    assert "s2c: bytes differ at offset" in report.format()


def test_an_identical_candidate_leaves_the_client_s_bytes_as_they_were(tmp_path):
    with leaks.running() as sb:
        web, client, _ = _web(sb, tmp_path, changed={})
        before = [_get(client, path) for path in PATHS]
        shadow = sb.shadow(("10.0.0.1", PORT), to=("10.0.0.3", PORT), ignore=[DATE])
        during = [_get(client, path) for path in PATHS]
        report = shadow.stop()
        after = [_get(client, path) for path in PATHS]
    assert [_without_date(a) for a in during] == [_without_date(b) for b in before] == [
        _without_date(a) for a in after
    ]
    assert (report.mirrored, report.identical) == (len(PATHS), len(PATHS)), report.format()
    assert report.ok and report.stopped
    assert all(c.primary_bytes == c.candidate_bytes == len(a) for c, a in zip(report.connections, during))


def test_without_the_ignore_rule_a_differing_date_would_count(tmp_path):
    """The ignore rule is what makes the identical test pass when the seconds tick: a rule that
    cannot match leaves a Date difference visible (forced here by a candidate of another clock)."""
    with leaks.running() as sb:
        web, client, candidate = _web(sb, tmp_path)
        listener = candidate.listen(PORT)
        shadow = sb.shadow("web:8000", to="candidate:8000", ignore=["s2c:no such text"], patience=2)
        answer = _get(client, "/i.txt")
        conn, _ = listener.accept()
        conn.settimeout(10)
        request = conn.recv(65536)
        conn.sendall(_without_date(answer).replace(b"Date: -", b"Date: Thu, 01 Jan 1970 00:00:00 GMT"))
        conn.close()
        report = _settled(shadow)
    assert request.startswith(b"GET /i.txt HTTP/1.1\r\n")
    (connection,) = report.connections
    assert connection.outcome is ShadowOutcome.DIFFERING
    assert connection.items[0].offset == answer.index(b"Date: ") + 6


def test_an_absent_candidate_fails_the_shadow_and_not_the_primary(tmp_path):
    with leaks.running() as sb:
        web, client, _ = _web(sb, tmp_path)  # nothing listens in the candidate's host
        shadow = sb.shadow("web:8000", to="candidate:8000", patience=2)
        answers = [_get(client, path) for path in PATHS[:2]]
        report = _settled(shadow)
    assert all(b"200 OK" in answer for answer in answers)
    assert (report.mirrored, report.failed, report.in_flight) == (2, 2, 0), report.format()
    for connection in report.connections:
        (failure,) = connection.items
        assert isinstance(failure, ShadowFailed) and "refused" in failure.reason


def test_a_stalling_candidate_is_given_up_after_its_patience(tmp_path):
    with leaks.running() as sb:
        web, client, candidate = _web(sb, tmp_path)
        listener = candidate.listen(PORT)  # its kernel accepts; nobody ever reads or answers
        shadow = sb.shadow("web:8000", to="candidate:8000", patience=1)
        answer = _get(client, "/index.txt")
        report = _settled(shadow)
        listener.close()
    assert answer.endswith(servers.WEB_FILES["index.txt"])
    (connection,) = report.connections
    (stall,) = connection.items
    assert isinstance(stall, Stall) and stall.waited == 1
    assert connection.outcome is ShadowOutcome.FAILED and connection.candidate_bytes == 0


def _serve_sink(listener, size: int, got: list) -> None:
    """A primary that reads ``size`` bytes, then answers ``ok`` and closes."""
    conn, _ = listener.accept()
    conn.settimeout(20)
    total = 0
    while total < size:
        chunk = conn.recv(1 << 20)
        if not chunk:
            break
        total += len(chunk)
    got.append(total)
    conn.sendall(b"ok")
    conn.close()


def test_a_candidate_falling_behind_its_buffer_is_dropped_and_the_primary_goes_on():
    size = 32 << 20
    with leaks.running() as sb:
        web, client, candidate = sb.add_host("web"), sb.add_host("client"), sb.add_host("candidate")
        primary, stuck = web.listen(9000), candidate.listen(9000)  # the candidate never reads
        shadow = sb.shadow("web:9000", to="candidate", buffer=64 * 1024)
        got: list = []
        server = threading.Thread(target=_serve_sink, args=(primary, size, got), daemon=True)
        server.start()
        sock = client.connect(("10.0.0.1", 9000), timeout=20)
        sock.sendall(b"x" * size)
        sock.shutdown(socket.SHUT_WR)
        answer = sock.recv(100)
        sock.close()
        server.join(20)
        report = _settled(shadow)
        stuck.close()
    assert got == [size] and answer == b"ok"
    (connection,) = report.connections
    (failure,) = connection.items
    assert isinstance(failure, ShadowFailed) and "fell behind" in failure.reason


def test_the_cassette_records_only_the_primary_s_conversation(tmp_path):
    cassette = tmp_path / "shadowed.netplay"
    with leaks.running("record", cassette) as sb:
        web, client, _ = _web(sb, tmp_path, changed={})
        shadow = sb.shadow("web:8000", to="candidate:8000", ignore=[DATE])
        answers = [_get(client, path) for path in PATHS[:3]]
        report = shadow.stop()
    assert report.identical == 3, report.format()
    recorded = Cassette(str(cassette))
    try:
        opened = [event for event in recorded.events() if isinstance(event, ConnectionOpened)]
    finally:
        recorded.close()
    assert [(o.client.host, str(o.server)) for o in opened] == [("10.0.0.2", "10.0.0.1:8000")] * 3
    assert len(answers) == 3


def _shadow_rootless() -> dict:
    from pytest_netplayground import Sandbox

    with Sandbox() as sb:
        web, client, candidate = sb.add_host("web"), sb.add_host("client"), sb.add_host("candidate")
        primary, other = web.listen(9000), candidate.listen(9000)
        shadow = sb.shadow("web:9000", to="candidate")
        sock = client.connect(("10.0.0.1", 9000))
        sock.sendall(b"question")
        served = []
        for listener, answer in ((primary, b"answer"), (other, b"ANSWER")):
            listener.settimeout(10)
            conn, peer = listener.accept()
            conn.settimeout(10)
            served.append((conn.recv(100), peer[0]))
            conn.sendall(answer)
            conn.close()
        sock.settimeout(10)
        got = sock.recv(100)
        sock.close()
        report = shadow.stop()
    return {"served": served, "got": got, "counts": (report.mirrored, report.differing),
            "offset": report.connections[0].items[0].offset}


def test_shadowing_works_for_an_unprivileged_user():
    import pytest_netplayground.runtime.supervisor  # noqa: F401  (the child cannot read the files)
    from tests.support.unprivileged import run_unprivileged

    result = run_unprivileged(_shadow_rootless)
    assert result["served"] == [(b"question", "10.0.0.2")] * 2
    assert result["got"] == b"answer"
    assert result["counts"] == (1, 1) and result["offset"] == 0


def test_a_connection_still_open_when_the_sandbox_closes_is_judged_by_what_was_answered():
    with leaks.running() as sb:
        web, client, candidate = sb.add_host("web"), sb.add_host("client"), sb.add_host("candidate")
        primary, other = web.listen(9000), candidate.listen(9000)
        shadow = sb.shadow("web:9000", to="candidate")
        sock = client.connect(("10.0.0.1", 9000))
        sock.sendall(b"question")
        kept = []
        for listener, answer in ((primary, b"answer"), (other, b"answer")):
            listener.settimeout(10)
            conn, _ = listener.accept()
            conn.settimeout(10)
            assert conn.recv(100) == b"question"
            conn.sendall(answer)
            kept.append(conn)  # both servers keep the connection open
        sock.settimeout(10)
        assert sock.recv(100) == b"answer"
        assert shadow.report.in_flight == 1
    report = shadow.report
    for held in (sock, *kept):
        held.close()
    assert (report.mirrored, report.identical, report.in_flight) == (1, 1, 0), report.format()



def test_a_candidate_that_resets_fails_its_shadow_beside_an_identical_one():
    question, answer = b"Q" * 100_000, b"A" * 300_000  # more than one read each way
    with leaks.running() as sb:
        web, client, one, two = (sb.add_host(name) for name in ("web", "client", "one", "two"))
        listeners = [host.listen(9000) for host in (web, one, two)]
        same, resets = sb.shadow("web:9000", to="one"), sb.shadow("web:9000", to="two")
        sock = client.connect(("10.0.0.1", 9000))
        sock.sendall(question)
        sock.shutdown(socket.SHUT_WR)
        for index, listener in enumerate(listeners):
            listener.settimeout(10)
            conn, _ = listener.accept()
            conn.settimeout(10)
            got = b""
            while chunk := conn.recv(65536):
                got += chunk
            assert got == question, index
            if index == 2:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            else:
                conn.sendall(answer)
            conn.close()
        sock.settimeout(10)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        sock.close()
        same_report, reset_report = same.stop(), resets.stop()
    assert received == answer
    assert (same_report.mirrored, same_report.identical) == (1, 1), same_report.format()
    assert (reset_report.mirrored, reset_report.failed) == (1, 1), reset_report.format()
    (failure,) = reset_report.connections[0].items
    assert isinstance(failure, ShadowFailed) and "reset" in failure.reason


def test_a_candidate_that_never_accepts_is_given_up_after_its_patience():
    with leaks.running() as sb:
        web, client, candidate = sb.add_host("web"), sb.add_host("client"), sb.add_host("candidate")
        primary = web.listen(9000)
        candidate.listen(9000)
        sb.partition([client], [candidate])  # the candidate's answers to the client's address are lost
        shadow = sb.shadow("web:9000", to="candidate", patience=1)
        sock = client.connect(("10.0.0.1", 9000))
        primary.settimeout(10)
        conn, _ = primary.accept()
        conn.sendall(b"hello")
        conn.close()
        sock.settimeout(10)
        assert sock.recv(100) == b"hello"
        sock.close()
        report = _settled(shadow)
    (connection,) = report.connections
    (failure,) = connection.items
    assert isinstance(failure, ShadowFailed) and "did not accept the connection within 1 s" in failure.reason


def test_a_client_that_resets_cuts_the_candidate_too_without_failing_it():
    with leaks.running() as sb:
        web, client, candidate = sb.add_host("web"), sb.add_host("client"), sb.add_host("candidate")
        primary, other = web.listen(9000), candidate.listen(9000)
        shadow = sb.shadow("web:9000", to="candidate")
        sock = client.connect(("10.0.0.1", 9000))
        sock.sendall(b"question")
        served = []
        for listener in (primary, other):
            listener.settimeout(10)
            conn, _ = listener.accept()
            conn.settimeout(10)
            assert conn.recv(100) == b"question"
            conn.sendall(b"part of an answer")
            served.append(conn)
        sock.settimeout(10)
        assert sock.recv(100) == b"part of an answer"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        sock.close()
        ends = []
        for conn in served:
            try:
                ends.append(conn.recv(100))
            except ConnectionResetError:
                ends.append("reset")
            conn.close()
        report = _settled(shadow)
    assert ends == ["reset", "reset"], "the primary and the candidate both saw the client's reset"
    assert (report.mirrored, report.identical) == (1, 1), report.format()


def _tls_primary(listener, context, answer: bytes, got: list) -> None:
    raw, _ = listener.accept()
    raw.settimeout(10)
    conn = context.wrap_socket(raw, server_side=True)
    got.append(conn.recv(100))
    conn.sendall(answer)
    conn.close()


def test_with_tls_interception_the_candidate_gets_the_plaintext(tmp_path):
    import ssl

    from pytest_netplayground.runtime.tls_authority import CertificateAuthority

    own = CertificateAuthority.load_or_create(str(tmp_path / "server-ca")).leaf("web")
    (tmp_path / "server.pem").write_bytes(own.chain_pem)
    (tmp_path / "server-key.pem").write_bytes(own.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(tmp_path / "server.pem"), str(tmp_path / "server-key.pem"))
    with leaks.running(tls="intercept", tls_ca_dir=str(tmp_path / "ca")) as sb:
        web, client, candidate = sb.add_host("web"), sb.add_host("client"), sb.add_host("candidate")
        primary, other = web.listen(9443), candidate.listen(9443)
        shadow = sb.shadow("web:9443", to="candidate")
        got: list = []
        args = (primary, context, b"secret answer", got)
        server = threading.Thread(target=_tls_primary, args=args, daemon=True)
        server.start()
        raw = client.connect(("10.0.0.1", 9443), timeout=10)
        sock = sb.tls_client_context().wrap_socket(raw, server_hostname="web")
        sock.sendall(b"secret question")
        other.settimeout(10)
        conn, _ = other.accept()
        conn.settimeout(10)
        mirrored = conn.recv(100)
        conn.sendall(b"secret ANSWER")
        conn.close()
        answer = sock.recv(100)
        sock.close()
        server.join(10)
        report = _settled(shadow)
    assert got == [b"secret question"] and answer == b"secret answer"
    assert mirrored == b"secret question", "the candidate got the plaintext"
    (connection,) = report.connections
    (finding,) = connection.items
    assert isinstance(finding, ByteMismatch) and finding.offset == len(b"secret ")
