"""A real capture (tcpdump in a sandbox host) imported, then replayed with the server absent
and driven against the server."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from pytest_netplayground import Sandbox, drive, drive_hosts
from pytest_netplayground.cassette import Cassette
from pytest_netplayground.core.capture_report import format_report
from pytest_netplayground.core.events import ConnectionOpened, Data, Direction
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


def _serve(host, directory) -> None:
    host.spawn(
        [sys.executable, "-m", "http.server", str(PORT), "--bind", "0.0.0.0", "--directory", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """A capture of two curl requests to http.server, imported; the served directory, the cassette
    and the sandbox addresses of server and client."""
    tmp_path = tmp_path_factory.mktemp("capture")
    (tmp_path / "page.txt").write_bytes(BODY)
    capture, cassette = tmp_path / "capture.pcap", tmp_path / "imported.cassette"
    with Sandbox() as sb:
        server, client_host = sb.add_host("server"), sb.add_host("client")
        _serve(server, tmp_path)
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

    return tmp_path, cassette, server.address, client_host.address, import_capture(capture, cassette)


def test_a_tcpdump_capture_imports_every_stream_whole(imported):
    _, cassette, server_address, client_address, result = imported
    print(format_report(result.flows, result.addresses.lines(), result.frames, result.skipped_link_types))
    assert result.skipped_link_types == {}
    streams = [s for s in result.flows.summaries if s.conn is not None]
    assert [(s.ending, s.handshake, s.gaps) for s in streams] == [("closed", True, [])] * 2
    events = list(Cassette(cassette).events())
    opened = [e for e in events if isinstance(e, ConnectionOpened)]
    assert [(e.client.host, str(e.server)) for e in opened] == [
        (client_address, f"{server_address}:{PORT}")
    ] * 2
    for conn in (0, 1):
        turns = split_turns(e for e in events if getattr(e, "conn", None) == conn)
        assert turns[0].data.startswith(b"GET /page.txt HTTP/1.1\r\n")
        assert turns[1].data.endswith(b"\r\n\r\n" + BODY)


def test_an_imported_capture_replays_to_a_client_with_the_server_absent(imported):
    _, cassette, *_ = imported
    with Sandbox(mode="replay", cassette=cassette) as sb:  # nothing runs in the server host
        server, client_host = sb.add_host("server"), sb.add_host("client")
        assert _curl(client_host, server, "page.txt") == BODY
        assert _curl(client_host, server, "page.txt") == BODY
    assert sb.divergences.ok, sb.divergences.format()


def test_an_imported_capture_drives_the_server_and_a_changed_page_is_reported(imported, tmp_path):
    served, cassette, server_address, *_ = imported
    with Sandbox() as sb:
        _serve(drive_hosts(sb, cassette)[server_address], served)
        same = drive(sb, cassette, noise_runs=2)
    assert same.ok and len(same.results) == 2, same.format()
    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / "page.txt").write_bytes(BODY.replace(b"tcpdump", b"TCPDUMP", 1))
    original = (served / "page.txt").stat()
    os.utime(changed / "page.txt", ns=(original.st_atime_ns, original.st_mtime_ns))  # same Last-Modified
    with Sandbox() as sb:
        _serve(drive_hosts(sb, cassette)[server_address], changed)
        report = drive(sb, cassette, ignore=["s2c:Date: [^\\r]*"])
    assert [r.verdict.value for r in report.results] == ["differs", "differs"], report.format()
    answer = next(
        e.data for e in Cassette(cassette).events() if isinstance(e, Data) and e.direction is Direction.S2C
    )
    header_end = answer.index(b"\r\n\r\n") + 4
    offsets = {d.offset for r in report.results for d in r.divergences}
    assert offsets == {header_end + BODY.index(b"tcpdump")}, report.format()
