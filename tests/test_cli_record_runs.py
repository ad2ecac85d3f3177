"""`netplay record --runs N` with failed, kept-going and interrupted runs: the cassette changes only
when every run made a recording, and no run file is left behind."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.test_cli_record_outcome import NETPLAY, TIMEOUT, client_sent, netplay
from tests.test_cli_record_replay import CLIENT, SERVER


def counted(counter: Path, body: str) -> str:
    """A shell command that counts its runs in ``counter`` (as $n) before doing ``body``."""
    return f"n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 )); echo $n > {counter}; {body}"


def failing_on_run(counter: Path, run: int) -> str:
    """The echo client sending ``runN``, exiting 3 on run ``run`` only."""
    return counted(counter, f'{CLIENT} "run$n"; [ "$n" -ne {run} ] || exit 3')


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != "count")


@pytest.fixture
def old(tmp_path) -> tuple[Path, bytes]:
    """A cassette recorded earlier: (its path, its bytes)."""
    path = tmp_path / "demo.netplay"
    result = netplay("record", "-f", str(path), SERVER, f"{CLIENT} old")
    assert result.returncode == 0, result.stderr
    return path, path.read_bytes()


@pytest.mark.root
def test_a_failed_second_run_keeps_the_old_cassette(old, tmp_path):
    path, before = old
    counter = tmp_path / "count"
    result = netplay("record", "--runs", "2", "-f", str(path), SERVER, failing_on_run(counter, 2))
    assert result.returncode == 3, result.stderr
    assert path.read_bytes() == before
    failed = tmp_path / "demo.failed.netplay"
    assert client_sent(failed) == b"run2\n"
    assert (
        f"run 2 of 2: command 2 (10.0.0.2) exited with status 3: the recording was kept as {failed}; "
        f"{path} was left as it was" in result.stderr
    )
    assert leftovers(tmp_path) == ["demo.failed.netplay", "demo.netplay"]


@pytest.mark.root
def test_a_failed_first_run_stops_there(old, tmp_path):
    path, before = old
    counter = tmp_path / "count"
    result = netplay("record", "--runs", "3", "-f", str(path), SERVER, failing_on_run(counter, 1))
    assert result.returncode == 3, result.stderr
    assert counter.read_text() == "1\n"
    assert path.read_bytes() == before
    assert client_sent(tmp_path / "demo.failed.netplay") == b"run1\n"
    assert "run 1 of 3: command 2" in result.stderr and "recorded" not in result.stderr
    assert leftovers(tmp_path) == ["demo.failed.netplay", "demo.netplay"]


@pytest.mark.root
def test_keep_going_records_every_run_and_learns_from_the_failed_one(old, tmp_path):
    path, _ = old
    counter = tmp_path / "count"
    result = netplay(
        "record", "--runs", "2", "--keep-going", "-f", str(path), SERVER, failing_on_run(counter, 2)
    )
    assert result.returncode == 3, result.stderr
    assert client_sent(path) == b"run1\n"  # the first run is the cassette
    assert (
        f"recorded {path} (2 runs: 2 noise regions in 2 turns) although "
        "run 2 of 2: command 2 (10.0.0.2) exited with status 3" in result.stderr
    )
    assert leftovers(tmp_path) == ["demo.netplay"]


@pytest.mark.root
def test_an_interrupted_second_run_removes_the_first_and_keeps_its_partial(old, tmp_path):
    path, before = old
    counter = tmp_path / "count"
    command = counted(counter, 'echo "started $n"; [ "$n" -eq 1 ] || sleep 1000')
    proc = subprocess.Popen(
        [*NETPLAY, "record", "--runs", "2", "-f", str(path), command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "10.0.0.1 | started 1\n"
        assert proc.stdout.readline() == "10.0.0.1 | started 2\n"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert path.read_bytes() == before
    partial = tmp_path / "demo.netplay.run2.partial"
    assert f"run 2 of 2: interrupted: the recording so far is in {partial}; {path} was left as it was" in err
    assert leftovers(tmp_path) == ["demo.netplay", "demo.netplay.run2.partial"]


@pytest.mark.root
def test_exit_code_from_decides_each_run(old, tmp_path):
    """Only the client's status counts: the server, stopped at the end of each run, does not fail it.

    The client is named, and ``h2`` still means it.
    """
    path, _ = old
    server, client = f"{SERVER}; sleep 1000", f"{CLIENT} new"
    flags = ["--runs", "2", "--names", "server,client", "--exit-code-from", "h2"]
    result = netplay("record", *flags, "-f", str(path), server, client)
    assert result.returncode == 0, result.stderr
    assert client_sent(path) == b"new\n"
    assert f"recorded {path} (2 runs: 0 noise regions in 0 turns)" in result.stderr
    assert leftovers(tmp_path) == ["demo.netplay"]
