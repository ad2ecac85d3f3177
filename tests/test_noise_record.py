"""Noise end to end: `netplay record --runs 2` and `pytest --netplay-record-runs=2` store it,
and replays with the live server present pass in strict mode thanks to it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_netplayground.cassette import Cassette
from pytest_netplayground.core.events import ConnectionOpened, Data, Direction
from pytest_netplayground.core.noise import Noise
from pytest_netplayground.core.turns import split_turns

NETPLAY = [sys.executable, "-m", "pytest_netplayground"]
ROOT = Path(__file__).resolve().parents[1]
# python's http.server, answering one request (so the run ends) with a Date header.
SERVER = (
    f"{sys.executable} -c \"import http.server as h; "
    "h.HTTPServer(('', 8000), h.SimpleHTTPRequestHandler).handle_request()\""
)
# The second run's request comes more than a second after the first one's, so
# the Date headers of the two recordings differ.
CLIENT = "sleep 1.2; curl -s --max-time 10 http://10.0.0.1:8000/index.txt"

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


def netplay(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*NETPLAY, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def server_turns(path: Path) -> list[bytes]:
    events = [e for e in Cassette(path).events() if isinstance(e, Data)]
    return [t.data for t in split_turns(events) if t.direction is Direction.S2C]


@pytest.fixture(scope="module")
def recorded_twice(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """http.server and curl recorded with --runs 2: (cassette, what netplay record did)."""
    directory = tmp_path_factory.mktemp("http")
    (directory / "index.txt").write_text("hello from http.server\n")
    path = directory / "http.netplay"
    return path, netplay("record", "--runs", "2", "-f", str(path), SERVER, CLIENT, cwd=directory)


@pytest.mark.root
@needs_curl
def test_record_runs_2_stores_the_date_header_as_noise(recorded_twice):
    path, result = recorded_twice
    assert result.returncode == 0, result.stderr
    assert "hello from http.server" in result.stdout
    assert f"netplay: recorded {path} (2 runs: 1 noise region in 1 turn)" in result.stderr
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name)) == [path.name]
    [noise] = Cassette(path).index().noise
    reply = server_turns(path)[noise.turn]
    assert (noise.conn, noise.direction) == (0, Direction.S2C)
    [(start, end)] = noise.spans
    date = reply.split(b"Date: ", 1)[1].split(b"\r\n", 1)[0]
    assert reply[start:end] == date and reply[start - 6 : start] == b"Date: "
    shown = netplay("show", str(path), cwd=path.parent)
    assert f"~ noise: server turn 0, bytes {start}-{end}: {date.decode()}" in shown.stdout


@pytest.mark.root
@needs_curl
def test_the_learned_noise_covers_what_a_later_run_of_the_server_sends(recorded_twice, tmp_path):
    """What the replay's comparison would see: every turn of a later recording equals the
    recorded one but for the learned noise."""
    path, _ = recorded_twice
    later = tmp_path / "later.netplay"  # served from the same file: the same Last-Modified
    assert netplay("record", "-f", str(later), SERVER, CLIENT, cwd=path.parent).returncode == 0
    cassette = Cassette(path)
    noise = Noise(learned=cassette.index().noise)
    [opened] = [e for e in cassette.events() if isinstance(e, ConnectionOpened)]
    recorded = split_turns(e for e in cassette.events() if isinstance(e, Data))
    live = split_turns(e for e in Cassette(later).events() if isinstance(e, Data))
    assert [t.direction for t in recorded] == [t.direction for t in live] == [Direction.C2S, Direction.S2C]
    for old, new in zip(recorded, live):
        compare = noise.comparator(opened, old.direction, old.index)
        if old.direction is Direction.C2S:
            assert compare is None and old.data == new.data
        else:
            assert old.data != new.data and compare(old.data, new.data) is None


@pytest.mark.root
@needs_curl
def test_replay_with_the_server_present_passes_strict_after_runs_2(recorded_twice):
    """Needs the turn-based comparison that consults Noise (ConnectionReplay)."""
    path, _ = recorded_twice
    result = netplay("replay", "--strict", "-f", str(path), SERVER, CLIENT, cwd=path.parent)
    assert result.returncode == 0, result.stderr
    assert "hello from http.server" in result.stdout
    assert "diverged" not in result.stderr


@pytest.mark.root
@needs_curl
def test_replay_with_an_ignore_rule_passes_strict(recorded_twice, tmp_path):
    """A cassette recorded once, replayed a second later with --ignore for the Date header.
    Needs the turn-based comparison that consults Noise (ConnectionReplay)."""
    path, _ = recorded_twice
    once = tmp_path / "once.netplay"
    (tmp_path / "index.txt").write_text("hello from http.server\n")
    assert netplay("record", "-f", str(once), SERVER, CLIENT, cwd=tmp_path).returncode == 0
    strict = ["replay", "--strict", "-f", str(once)]
    diverged = netplay(*strict, SERVER, CLIENT, cwd=tmp_path)
    assert diverged.returncode != 0 and "diverged" in diverged.stderr
    result = netplay(*strict, "--ignore", "8000:s2c:Date: [^\\r]*", SERVER, CLIENT, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.root
@needs_curl
def test_check_only_the_client_reports_the_servers_differences_as_information(tmp_path):
    """Needs the turn-based comparison that consults Noise.is_checked (ConnectionReplay)."""
    once = tmp_path / "once.netplay"
    (tmp_path / "index.txt").write_text("hello from http.server\n")
    assert netplay("record", "-f", str(once), SERVER, CLIENT, cwd=tmp_path).returncode == 0
    strict = ["replay", "--strict", "-f", str(once)]
    result = netplay(*strict, "--check", "10.0.0.2", SERVER, CLIENT, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


SUITE = """
import sys

import pytest

SERVE = "import http.server as h; h.HTTPServer(('', 8000), h.SimpleHTTPRequestHandler).handle_request()"
FETCH = (
    "import urllib.request as u; "
    "print(u.urlopen('http://10.0.0.1:8000/index.txt', timeout=10).read().decode())"
)


def test_fetch(netplay, tmp_path_factory):
    with open("runs.log", "a") as log:
        log.write(netplay.mode + "\\n")
    server = netplay.add_host("server")
    client = netplay.add_host("client")
    server.spawn([sys.executable, "-c", SERVE])
    server.wait_for_port(8000)
    import time; time.sleep(1.1)  # the two runs' Date headers differ
    result = client.run([sys.executable, "-c", FETCH], timeout=30)
    assert result.returncode == 0, result.stderr
    assert b"hello" in result.stdout
"""


@pytest.mark.root
def test_pytest_record_runs_2_runs_the_test_twice_and_stores_noise(pytester):
    pytester.makepyfile(test_suite=SUITE)
    (pytester.path / "index.txt").write_text("hello\n")
    result = pytester.runpytest_subprocess("--netplay=record", "--netplay-record-runs=2", timeout=120)
    result.assert_outcomes(passed=1)
    assert (pytester.path / "runs.log").read_text().split() == ["record", "record"]
    directory = pytester.path / "cassettes" / "test_suite"
    assert sorted(p.name for p in directory.iterdir()) == ["test_fetch.netplay"]
    cassette = Cassette(directory / "test_fetch.netplay")
    [noise] = [n for n in cassette.index().noise if n.direction is Direction.S2C]
    reply = server_turns(directory / "test_fetch.netplay")[noise.turn]
    assert any(reply[s:e].endswith(b" GMT") and reply[s - 6 : s] == b"Date: " for s, e in noise.spans)


@pytest.mark.root
def test_pytest_record_runs_2_keeps_the_cassette_when_the_second_run_fails(pytester):
    failing = SUITE.replace(
        '    assert b"hello" in result.stdout',
        '    assert b"hello" in result.stdout\n'
        '    assert open("runs.log").read().count("record") < 2, "the second run fails"',
    )
    pytester.makepyfile(test_suite=failing)
    (pytester.path / "index.txt").write_text("hello\n")
    directory = pytester.path / "cassettes" / "test_suite"
    directory.mkdir(parents=True)
    (directory / "test_fetch.netplay").write_text("the old cassette\n")
    result = pytester.runpytest_subprocess("--netplay=record", "--netplay-record-runs=2", timeout=120)
    result.assert_outcomes(failed=1)
    assert (directory / "test_fetch.netplay").read_text() == "the old cassette\n"
    assert sorted(p.name for p in directory.iterdir()) == ["test_fetch.failed.netplay", "test_fetch.netplay"]


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    return found[-1].parent if found else None


@pytest.mark.root
@pytest.mark.skipif(
    _postgres_bin() is None or shutil.which("psql") is None, reason="needs PostgreSQL and psql"
)
def test_record_runs_2_learns_postgres_backend_key_data():
    import os
    import pwd
    import tempfile

    bin_dir = _postgres_bin()
    user = pwd.getpwnam("postgres")
    # PostgreSQL refuses to run as root; its user must reach the data directory.
    with tempfile.TemporaryDirectory(prefix="netplay-pg-") as directory:
        os.chown(directory, user.pw_uid, user.pw_gid)
        _record_postgres_twice(bin_dir, Path(directory))


def _record_postgres_twice(bin_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
        user="postgres", cwd=tmp_path, check=True, capture_output=True, timeout=120,
    )
    with open(data / "pg_hba.conf", "a") as hba:
        hba.write("host all all 10.0.0.0/24 trust\n")
    done = tmp_path / "done"
    # The server stops once the client has finished (or after 30 s), so each run ends.
    server = (
        f"rm -f {done}; {bin_dir}/postgres -D {data} -k {tmp_path} -c listen_addresses='*' & pid=$!; "
        f"for i in $(seq 300); do [ -e {done} ] && break; sleep 0.1; done; kill -INT $pid; wait $pid"
    )
    client = f"sleep 2; psql -h 10.0.0.1 -U postgres -Atc 'select 40 + 2'; touch {done}"
    path = tmp_path / "pg.netplay"
    result = netplay("record", "--runs", "2", "-u", "postgres", "-f", str(path), server, client, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "10.0.0.2 | 42" in result.stdout
    cassette = Cassette(path)
    noise = cassette.index().noise
    assert noise and all(n.direction is Direction.S2C for n in noise)
    replies = server_turns(path)
    keys = [(n.turn, s, e) for n in noise for s, e in n.spans if b"K\x00\x00\x00\x0c" in replies[n.turn]]
    assert keys, f"no noise in the turn with BackendKeyData: {noise}"
    for turn, start, end in keys:
        key = replies[turn].index(b"K\x00\x00\x00\x0c") + 5
        assert key <= start and end <= key + 8
