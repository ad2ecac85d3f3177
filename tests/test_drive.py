"""`netplay drive` and `drive()`: a cassette's clients played against a live HTTP server.

One recording of 100 HTTP requests (curl, one connection each, against a
small http.server that logs each peer's address and port) is driven against
the same server, a changed one, none, a moved one, and many times over.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_netplayground import Sandbox
from pytest_netplayground.cassette import Cassette
from pytest_netplayground.core.drive_plan import chosen
from pytest_netplayground.core.events import ConnectionOpened, Data, Direction

pytestmark = [pytest.mark.root, pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")]

ROOT = Path(__file__).resolve().parents[1]
NETPLAY = [sys.executable, "-m", "pytest_netplayground"]
REQUESTS = 100
CHANGED = 37  # the path the changed server answers differently
SERVER_SOURCE = """
import functools, http.server, sys
directory, log = sys.argv[1], sys.argv[2]
class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        with open(log, "a") as out:
            out.write(f"{self.client_address[0]}:{self.client_address[1]} {self.path}\\n")
class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024  # a flood opens every connection at once
server = Server(("0.0.0.0", 80), functools.partial(Handler, directory=directory))
server.serve_forever()
"""


def server_command(tmp: Path, directory: Path, log: Path) -> str:
    return f"{sys.executable} {tmp / 'server.py'} {directory} {log}"


def netplay(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*NETPLAY, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def logged(log: Path) -> list[tuple[str, str]]:
    """(peer, path) of every request the server answered."""
    if not log.exists():
        return []
    return [tuple(line.split(" ", 1)) for line in log.read_text().splitlines()]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """100 HTTP requests, one connection each, recorded with `netplay record`: (dir, cassette)."""
    tmp = tmp_path_factory.mktemp("drive")
    (tmp / "server.py").write_text(SERVER_SOURCE)
    site = tmp / "site"
    site.mkdir()
    for i in range(REQUESTS):
        (site / f"f{i}.txt").write_text(f"file number {i}\n" * 3)
    cassette = tmp / "http.traffic"
    client = f"sleep 0.5; curl -s -o /dev/null 'http://10.0.0.1/f[0-{REQUESTS - 1}].txt'"
    result = netplay(
        "record",
        "-f",
        str(cassette),
        "--exit-code-from",
        "2",
        server_command(tmp, site, tmp / "record.log"),
        client,
    )
    assert result.returncode == 0, result.stderr
    opened = [e for e in Cassette(cassette).events() if isinstance(e, ConnectionOpened)]
    assert len(opened) == REQUESTS
    return tmp, cassette


def drive(tmp: Path, cassette: Path, site: Path, log: Path, *args: str) -> subprocess.CompletedProcess:
    report = tmp / "report.json"
    report.unlink(missing_ok=True)
    return netplay("drive", "-f", str(cassette), "--json", str(report), *args, server_command(tmp, site, log))


def recorded_answer(cassette: Path, conn: int) -> bytes:
    events = Cassette(cassette).iter_connection(conn)
    return b"".join(e.data for e in events if isinstance(e, Data) and e.direction is Direction.S2C)


def report_of(tmp: Path) -> dict:
    return json.loads((tmp / "report.json").read_text())


def test_driven_against_the_same_server_every_connection_is_identical_but_for_the_date(recorded):
    tmp, cassette = recorded
    log = tmp / "same.log"
    result = drive(tmp, cassette, tmp / "site", log, "--noise-runs", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = report_of(tmp)["summary"]
    assert (summary["identical"], summary["differs"], summary["failed"]) == (REQUESTS, 0, 0)
    # Each connection was played three times (two noise runs, then the compared one).
    assert len(logged(log)) == 3 * REQUESTS


def test_without_noise_runs_the_date_header_differs(recorded):
    tmp, cassette = recorded
    result = drive(tmp, cassette, tmp / "site", tmp / "dated.log", "--flood", "--sample", "0.1")
    connections = report_of(tmp)["connections"]
    assert result.returncode == 1
    assert connections and all(c["verdict"] == "differs" for c in connections)
    for connection in connections:
        answer = recorded_answer(cassette, connection["conn"])
        date = answer.index(b"\r\nDate: ") + 8
        assert date <= connection["divergences"][0]["offset"] < answer.index(b"\r\n", date)


def test_the_server_sees_the_recorded_client_address_and_port(recorded):
    tmp, cassette = recorded
    log = tmp / "peers.log"
    drive(tmp, cassette, tmp / "site", log, "--rate", "500", "--ignore", "s2c:Date: [^\\r]*")
    recorded_peers = {str(e.client) for e in Cassette(cassette).events() if isinstance(e, ConnectionOpened)}
    assert {peer for peer, _ in logged(log)} == recorded_peers
    report = report_of(tmp)
    assert report["summary"]["identical"] == REQUESTS
    # --rate 500: one opening every 2 ms in recorded order, none before its time.
    connections = sorted(report["connections"], key=lambda c: c["planned_start"])
    assert [c["planned_start"] for c in connections[:3]] == pytest.approx([0.0, 0.002, 0.004])
    assert all(c["started"] >= c["planned_start"] - 1e-6 for c in connections)


def test_a_server_answering_one_path_differently_is_reported_there_and_only_there(recorded):
    tmp, cassette = recorded
    changed = tmp / "changed"
    shutil.copytree(tmp / "site", changed)
    target = changed / f"f{CHANGED}.txt"
    stat = target.stat()
    body = target.read_bytes()
    target.write_bytes(body[:20] + b"X" + body[21:])
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same Last-Modified: only the body differs
    result = drive(tmp, cassette, changed, tmp / "changed.log", "--noise-runs", "2")
    assert result.returncode == 1
    report = report_of(tmp)
    assert (report["summary"]["identical"], report["summary"]["differs"]) == (REQUESTS - 1, 1)
    (differing,) = [c for c in report["connections"] if c["verdict"] == "differs"]
    events = list(Cassette(cassette).iter_connection(differing["conn"]))
    request = b"".join(e.data for e in events if isinstance(e, Data) and e.direction is Direction.C2S)
    assert request.startswith(f"GET /f{CHANGED}.txt ".encode())
    answer = recorded_answer(cassette, differing["conn"])
    (found,) = differing["divergences"]
    assert found["offset"] == answer.index(b"\r\n\r\n") + 4 + 20
    assert f"#{differing['conn']} " in result.stdout


def test_an_absent_server_fails_every_connection(recorded):
    tmp, cassette = recorded
    report = tmp / "report.json"
    result = netplay("drive", "-f", str(cassette), "--flood", "--json", str(report), "-")
    assert result.returncode == 1
    summary = json.loads(report.read_text())["summary"]
    assert summary["failed"] == REQUESTS
    assert "refused (recorded: established)" in result.stdout


def test_multiply_opens_each_connection_from_distinct_ports(recorded):
    tmp, cassette = recorded
    log = tmp / "multiply.log"
    drive(
        tmp,
        cassette,
        tmp / "site",
        log,
        "--multiply",
        "10",
        "--sample",
        "0.2",
        "--ignore",
        "s2c:Date: [^\\r]*",
    )
    played = [o for o in Cassette(cassette).events() if isinstance(o, ConnectionOpened) and chosen(o, 0.2)]
    peers = [peer for peer, _ in logged(log)]
    assert len(peers) == 10 * len(played)
    assert len(set(peers)) == len(peers)
    summary = report_of(tmp)["summary"]
    assert summary["identical"] == 10 * len(played), summary


def test_sample_plays_the_share_chosen_by_the_connections_identity(recorded):
    tmp, cassette = recorded
    log = tmp / "sample.log"
    drive(tmp, cassette, tmp / "site", log, "--flood", "--sample", "0.5")
    opened = [o for o in Cassette(cassette).events() if isinstance(o, ConnectionOpened)]
    expected = {o.conn for o in opened if chosen(o, 0.5)}
    assert 0 < len(expected) < REQUESTS
    assert {c["conn"] for c in report_of(tmp)["connections"]} == expected
    assert {peer for peer, _ in logged(log)} == {str(o.client) for o in opened if o.conn in expected}


def test_map_moves_the_server_to_another_host(recorded):
    tmp, cassette = recorded
    log = tmp / "moved.log"
    result = drive(
        tmp,
        cassette,
        tmp / "site",
        log,
        "--map",
        "10.0.0.1=10.0.0.5",
        "--sample",
        "0.1",
        "--speed",
        "4",
        "--ignore",
        "s2c:Date: [^\\r]*",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    connections = report_of(tmp)["connections"]
    assert connections and {c["server"] for c in connections} == {"10.0.0.5:80"}
    # --speed 4: connections open at a quarter of their recorded distance from the first.
    opened = {o.conn: o.t for o in Cassette(cassette).events() if isinstance(o, ConnectionOpened)}
    first = min(opened[c["conn"]] for c in connections)
    for c in connections:
        assert c["planned_start"] == pytest.approx((opened[c["conn"]] - first) / 4)
    assert len(logged(log)) == len(connections)


def test_the_python_api_drives_a_server_started_in_the_sandbox(recorded):
    from pytest_netplayground import drive as drive_api
    from pytest_netplayground import drive_hosts

    tmp, cassette = recorded
    log = tmp / "api.log"
    with Sandbox() as sb:
        hosts = drive_hosts(sb, cassette)
        hosts["10.0.0.1"].spawn(["/bin/sh", "-c", server_command(tmp, tmp / "site", log)])
        report = drive_api(sb, cassette, sample=0.1, pacing="flood", ignore=["s2c:Date: [^\\r]*"])
    assert report.ok, report.format()
    assert len(report.results) == len(logged(log)) > 0


def test_the_netplay_drive_fixture_drives_a_cassette_in_its_directory(recorded, pytester):
    tmp, cassette = recorded
    directory = pytester.path / "cassettes" / "test_driving"
    directory.mkdir(parents=True)
    shutil.copy(cassette, directory / "http.traffic")
    command = server_command(tmp, tmp / "site", tmp / "fixture.log")
    pytester.makepyfile(
        test_driving=f"""
def test_the_server_answers_as_recorded(netplay_drive):
    hosts = netplay_drive.hosts("http.traffic")
    hosts["10.0.0.1"].spawn(["/bin/sh", "-c", {command!r}])
    report = netplay_drive("http.traffic", sample=0.1, ignore=["s2c:Date: [^\\\\r]*"])
    assert report.results and report.ok, report.format()

def test_a_difference_fails_the_test(netplay_drive):
    report = netplay_drive("http.traffic", sample=0.1, pacing="flood")
    assert report.ok, report.format()
"""
    )
    result = pytester.runpytest_subprocess(timeout=120)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*refused (recorded: established)*"])
