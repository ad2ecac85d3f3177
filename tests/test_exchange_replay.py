"""Exchange matching end to end: clients with connection pools replayed by request and reply."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pytest_netplayground import Sandbox
from pytest_netplayground.core.exchange import RequestMismatch
from tests.support.leaks import running

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[1]
NETPLAY = [sys.executable, "-m", "pytest_netplayground"]
PORT = 8000

# Answers "<path>:<n>", n counting that path's requests: like redis' INCR, the
# reply depends on how many came before, so a reply given twice or a wrong
# one given shows in what the client collects.
COUNTING_SERVER = textwrap.dedent(
    f"""
    import collections, http.server, threading
    counts, lock = collections.Counter(), threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            with lock:
                counts[self.path] += 1
                body = f"{{self.path}}:{{counts[self.path]}}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    http.server.ThreadingHTTPServer(("", {PORT}), Handler).serve_forever()
    """
)

# A pool of four keep-alive connections shared by four threads; the seed
# shuffles which request goes out when, so each run spreads them differently.
POOL_CLIENT = textwrap.dedent(
    f"""
    import collections, http.client, json, queue, random, sys, threading
    seed, paths = int(sys.argv[1]), sys.argv[2:]
    requests = [p for p in paths for _ in range(10)]
    random.Random(seed).shuffle(requests)
    work, got, lock = queue.Queue(), collections.defaultdict(list), threading.Lock()
    for path in requests:
        work.put(path)
    per_connection = []

    def worker():
        conn, served = http.client.HTTPConnection("10.0.0.1", {PORT}, timeout=10), 0
        while True:
            try:
                path = work.get_nowait()
            except queue.Empty:
                break
            conn.request("GET", path)
            body = conn.getresponse().read().decode()
            name, _, n = body.rpartition(":")
            with lock:
                got[path].append(int(n) if name == path else -1)
            served += 1
        conn.close()
        with lock:
            per_connection.append(served)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({{"got": {{p: sorted(v) for p, v in got.items()}}, "spread": sorted(per_connection)}}))
    """
)


def pool_run(sb: Sandbox, seed: int, paths=("/a", "/b", "/c"), server: bool = True) -> dict:
    """Run the pool client in 10.0.0.2 (and the counting server in 10.0.0.1 when asked)."""
    server_host, client_host = sb.add_host("server"), sb.add_host("client")
    if server:
        server_host.spawn([sys.executable, "-c", COUNTING_SERVER])
        server_host.wait_for_port(PORT, timeout=10)
    proc = client_host.spawn(
        [sys.executable, "-c", POOL_CLIENT, str(seed), *paths], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


@pytest.fixture(scope="module")
def pool_cassette(tmp_path_factory) -> Path:
    """The pool client's 30 requests over four connections, recorded once for the module."""
    path = tmp_path_factory.mktemp("pool") / "pool.netplay"
    with running("record", path) as sb:
        recorded = pool_run(sb, seed=1)
    assert recorded["got"] == {p: list(range(1, 11)) for p in ("/a", "/b", "/c")}
    return path


def test_a_pooled_http_client_replays_with_its_server_absent(pool_cassette):
    with running("replay", pool_cassette, match="exchange") as sb:
        replayed = pool_run(sb, seed=2, server=False)
    # Every recorded reply given once: each path's counts are 1..10 again,
    # whichever connection asked for them this time.
    assert replayed["got"] == {p: list(range(1, 11)) for p in ("/a", "/b", "/c")}
    assert sum(replayed["spread"]) == 30
    assert sb.divergences.ok, sb.divergences.format()


def test_with_its_server_present_the_cassette_still_answers_the_client(pool_cassette):
    with running("replay", pool_cassette, match="exchange") as sb:
        replayed = pool_run(sb, seed=3, server=True)
    assert replayed["got"] == {p: list(range(1, 11)) for p in ("/a", "/b", "/c")}
    assert sb.divergences.ok, sb.divergences.format()


def test_a_request_never_recorded_gets_the_closest_reply_and_is_reported(pool_cassette):
    started = time.monotonic()
    with running("replay", pool_cassette, match="exchange") as sb:
        replayed = pool_run(sb, seed=4, paths=("/a", "/b", "/cx"), server=False)
    assert time.monotonic() - started < 60  # a bound on hanging, not a speed check
    assert replayed["got"]["/a"] == list(range(1, 11))
    assert replayed["got"]["/cx"] == [-1] * 10  # answered, with /c's replies
    mismatches = list(sb.divergences)
    assert len(mismatches) == 10 and all(isinstance(d, RequestMismatch) for d in mismatches), sb.divergences
    assert all(b"GET /c " in d.expected and b"GET /cx " in d.actual for d in mismatches)
    assert "matched no recorded one" in sb.divergences.format()


def test_recorded_requests_never_asked_for_are_reported(pool_cassette):
    with running("replay", pool_cassette, match="exchange") as sb:
        replayed = pool_run(sb, seed=5, paths=("/a", "/b"), server=False)
    assert replayed["got"] == {p: list(range(1, 11)) for p in ("/a", "/b")}
    [unused] = sb.divergences
    assert (unused.count, unused.total) == (10, 30) and unused.first.startswith(b"GET /c ")
    assert "10 of 30 recorded exchanges were never asked for" in sb.divergences.format()


def test_connection_matching_of_the_same_cassette_does_not_give_each_reply_once(pool_cassette):
    """The case exchange matching exists for: replayed one connection for one, the pool parts."""
    with running("replay", pool_cassette, stall_timeout=0.5) as sb:
        sb.add_host("server")  # nothing runs there: the cassette stands in
        client_host = sb.add_host("client")
        proc = client_host.spawn(
            [sys.executable, "-c", POOL_CLIENT, "5", "/a", "/b", "/c"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            out = b""  # hung on a reply that never came: as much a failure
    assert not sb.divergences.ok
    if out:
        assert json.loads(out)["got"] != {p: list(range(1, 11)) for p in ("/a", "/b", "/c")}


REDIS_TESTS = "set,get,incr,lpush"


def redis_commands() -> list[str]:
    benchmark = f"redis-benchmark -h 10.0.0.1 -c 10 -n 2000 -t {REDIS_TESTS} -q"
    return [
        "redis-server --port 6379 --save '' --appendonly no --protected-mode no",
        f"sleep 0.5; {benchmark} && redis-cli -h 10.0.0.1 shutdown nosave",
    ]


@pytest.mark.skipif(
    not all(shutil.which(p) for p in ("redis-server", "redis-benchmark", "redis-cli")),
    reason="needs redis-server, redis-benchmark and redis-cli (Debian: redis-server, redis-tools)",
)
def test_redis_benchmark_with_ten_connections_replays_with_its_server_absent(tmp_path):
    cassette = tmp_path / "bench.netplay"
    server, client = redis_commands()
    recorded = subprocess.run(
        [*NETPLAY, "record", "-f", str(cassette), server, client],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert recorded.returncode == 0, recorded.stderr
    replayed = subprocess.run(
        [*NETPLAY, "replay", "--strict", "--match", "exchange", "-f", str(cassette), "true", client],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert replayed.returncode == 0, replayed.stdout[-2000:] + replayed.stderr
    assert "diverged" not in replayed.stderr, replayed.stderr
    for test in REDIS_TESTS.upper().split(","):
        assert f"{test}: " in replayed.stdout and "requests per second" in replayed.stdout, replayed.stdout


MARKED_SUITE = """
import socket
import sys

import pytest


def line_from(sock):
    sock.settimeout(10)
    data = b""
    while not data.endswith(b"\\n"):
        chunk = sock.recv(1)
        assert chunk, data
        data += chunk
    return data


@pytest.mark.netplay(match="exchange")
def test_two_lines(netplay):
    server, client = netplay.add_host("server"), netplay.add_host("client")
    if netplay.mode == "record":
        server.spawn([sys.executable, "-m", "pytest_netplayground.examples.echo_server", "7000"])
        server.wait_for_port(7000)
        conns, order = [client.connect((server.address, 7000))], [(0, b"one\\n"), (0, b"two\\n")]
    else:
        # The same two lines, each on a connection of its own, the other way round.
        conns = [client.connect((server.address, 7000)) for _ in range(2)]
        order = [(1, b"two\\n"), (0, b"one\\n")]
    for conn in conns:
        assert line_from(conn) == b"hello from echo server\\n"
    for i, line in order:
        conns[i].sendall(line)
        assert line_from(conns[i]) == line.upper()
    for conn in conns:
        conn.close()
"""


def test_the_marker_chooses_exchange_matching_and_the_command_line_overrides_it(pytester):
    pytester.makepyfile(test_marked=MARKED_SUITE)

    def run(*args: str):
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)

    run("--netplay=record").assert_outcomes(passed=1)
    run("--netplay=replay").assert_outcomes(passed=1)
    # One connection for one, the second live connection has no recording.
    run("--netplay=replay", "--netplay-match=connection").assert_outcomes(failed=1)


def get_and_read_to_close(client, path: str) -> bytes:
    """One HTTP request with ``Connection: close``: the server ends the connection after its reply."""
    sock = client.connect(("10.0.0.1", PORT))
    sock.settimeout(10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 10.0.0.1\r\nConnection: close\r\n\r\n".encode())
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


def test_a_refused_attempt_fails_again_and_a_server_that_closed_after_replying_closes_again(tmp_path):
    cassette = tmp_path / "refused.netplay"
    with running("record", cassette) as sb:
        server, client = sb.add_host("server"), sb.add_host("client")
        with pytest.raises(ConnectionRefusedError):
            client.connect(("10.0.0.1", PORT))
        server.spawn([sys.executable, "-c", COUNTING_SERVER])
        server.wait_for_port(PORT, timeout=10)
        recorded = get_and_read_to_close(client, "/a")
    assert recorded.endswith(b"\r\n\r\n/a:1")
    with running("replay", cassette, match="exchange") as sb:
        _, client = sb.add_host("server"), sb.add_host("client")
        with pytest.raises(ConnectionRefusedError):
            client.connect(("10.0.0.1", PORT))
        # Read to the end: the replay closes where the recorded server did.
        assert get_and_read_to_close(client, "/a") == recorded
    assert sb.divergences.ok, sb.divergences.format()
