"""A real capture (tcpdump in a sandbox host) imported, then replayed with the server absent."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from pytest_netplayground import Sandbox
from pytest_netplayground.cassette import Cassette
from pytest_netplayground.core.capture_report import format_report
from pytest_netplayground.core.events import ConnectionOpened
from pytest_netplayground.core.turns import split_turns
from pytest_netplayground.import_pcap import import_capture

pytestmark = [pytest.mark.root, pytest.mark.needs("tcpdump", "curl")]

PORT = 8000
BODY = b"captured by tcpdump, served from a cassette\n" * 20


def _curl(client_host, server, path: str) -> bytes:
    url = f"http://{server.address}:{PORT}/{path}"
    result = client_host.run(["curl", "-sS", "--max-time", "5", url], timeout=15)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _wait_for_file(path, size: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size >= size):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)


def test_a_tcpdump_capture_imports_and_replays_to_a_client_with_the_server_absent(tmp_path):
    (tmp_path / "page.txt").write_bytes(BODY)
    capture, cassette = tmp_path / "capture.pcap", tmp_path / "imported.cassette"
    with Sandbox() as sb:
        server, client_host = sb.add_host("server"), sb.add_host("client")
        server.spawn(
            [sys.executable, "-m", "http.server", str(PORT), "--bind", "0.0.0.0", "--directory", str(tmp_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server.wait_for_port(PORT, timeout=10)
        dump = server.spawn(
            ["tcpdump", "-i", "any", "-U", "-Z", "root", "-s", "0", "-w", str(capture), f"tcp port {PORT}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_file(capture, 24)  # the file header: tcpdump is capturing
        time.sleep(0.5)
        for _ in range(2):
            assert _curl(client_host, server, "page.txt") == BODY
        time.sleep(0.5)
        dump.terminate()
        dump.wait(timeout=10)

    result = import_capture(capture, cassette)
    print(format_report(result.flows, result.addresses.lines(), result.frames, result.skipped_link_types))
    assert result.skipped_link_types == {}
    streams = [s for s in result.flows.summaries if s.conn is not None]
    assert [(s.ending, s.handshake, s.gaps) for s in streams] == [("closed", True, [])] * 2
    events = list(Cassette(cassette).events())
    opened = [e for e in events if isinstance(e, ConnectionOpened)]
    assert [(e.client.host, str(e.server)) for e in opened] == [(client_host.address, f"{server.address}:{PORT}")] * 2
    for conn in (0, 1):
        turns = split_turns(e for e in events if getattr(e, "conn", None) == conn)
        assert turns[0].data.startswith(b"GET /page.txt HTTP/1.1\r\n")
        assert turns[1].data.endswith(b"\r\n\r\n" + BODY)

    with Sandbox(mode="replay", cassette=cassette) as sb:  # nothing runs in the server host
        server, client_host = sb.add_host("server"), sb.add_host("client")
        assert _curl(client_host, server, "page.txt") == BODY
        assert _curl(client_host, server, "page.txt") == BODY
    assert sb.divergences.ok, sb.divergences.format()
