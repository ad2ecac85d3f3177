"""What `netplay record` does with the cassette when a run fails or is interrupted, and replay's strictness."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_netplayground.cassette import Cassette
from pytest_netplayground.core.events import Data, Direction
from tests.test_cli_record_replay import CHANGED_CLIENT, CLIENT, PLG, SERVER

NETPLAY = [sys.executable, "-m", "pytest_netplayground"]
TIMEOUT = 120


def netplay(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*NETPLAY, *args], capture_output=True, text=True, cwd=cwd, timeout=TIMEOUT)


def client_sent(path: Path) -> bytes:
    return b"".join(
        e.data for e in Cassette(path).events() if isinstance(e, Data) and e.direction is Direction.C2S
    )


@pytest.fixture
def good(tmp_path) -> tuple[Path, bytes]:
    """A good recording of the echo demo: (its path, its bytes)."""
    path = tmp_path / "demo.netplay"
    result = netplay("record", "-f", str(path), SERVER, CLIENT)
    assert result.returncode == 0, result.stderr
    return path, path.read_bytes()


@pytest.mark.root
def test_a_failed_client_keeps_the_old_cassette_and_leaves_the_new_beside_it(good):
    path, before = good
    failed = path.with_name("demo.failed.netplay")
    result = netplay("record", "-f", str(path), SERVER, f"{CLIENT} pong; exit 3")
    assert result.returncode == 3
    assert path.read_bytes() == before
    assert client_sent(failed) == b"pong\n"
    assert f"the recording was kept as {failed}; {path} was left as it was" in result.stderr
    assert "command 2 (10.0.0.2) exited with status 3" in result.stderr


@pytest.mark.root
def test_a_command_not_found_is_a_failed_run(good):
    path, before = good
    result = netplay("record", "-f", str(path), "--exit-code-from", "2", SERVER, "no-such-command-here")
    assert result.returncode == 127
    assert path.read_bytes() == before
    assert path.with_name("demo.failed.netplay").exists()


@pytest.mark.root
def test_keep_going_records_a_failed_run_anyway(good):
    path, _ = good
    result = netplay("record", "--keep-going", "-f", str(path), SERVER, f"{CLIENT} pong; exit 3")
    assert result.returncode == 3
    assert client_sent(path) == b"pong\n"
    assert not path.with_name("demo.failed.netplay").exists()
    assert f"recorded {path} although command 2 (10.0.0.2) exited with status 3" in result.stderr


@pytest.mark.root
def test_plg_record_keeps_the_old_cassette_on_failure(good):
    path, before = good
    result = subprocess.run(
        [*PLG, "--record", "-f", str(path), SERVER, f"{CLIENT} pong; exit 3"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 3
    assert path.read_bytes() == before
    assert path.with_name("demo.failed.netplay").exists()


@pytest.mark.root
def test_with_exit_code_from_only_that_hosts_status_counts(good):
    """The server is killed by us at the end (status 143): the recording is still good."""
    path, _ = good
    result = netplay(
        "record", "-f", str(path), "--exit-code-from", "2", f"{SERVER}; sleep 1000", f"{CLIENT} pong"
    )
    assert result.returncode == 0, result.stderr
    assert client_sent(path) == b"pong\n"
    assert not path.with_name("demo.failed.netplay").exists()


@pytest.mark.root
def test_without_an_old_cassette_the_failure_says_none_was_written(tmp_path):
    path = tmp_path / "new.netplay"
    result = netplay("record", "-f", str(path), "exit 2")
    assert result.returncode == 2
    assert not path.exists()
    assert "left as it was" not in result.stderr
    assert f"no cassette was written to {path}" in result.stderr


def interrupted_recording(path: Path) -> subprocess.CompletedProcess:
    """`netplay record` of a command that runs until the recording is interrupted (SIGINT)."""
    proc = subprocess.Popen(
        [*NETPLAY, "record", "-f", str(path), "echo started; sleep 1000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "10.0.0.1 | started\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.root
def test_a_second_interrupted_recording_keeps_the_first_partial(tmp_path):
    path = tmp_path / "x.netplay"
    first = interrupted_recording(path)
    assert first.returncode == 128 + signal.SIGINT
    partial = tmp_path / "x.netplay.partial"
    assert f"the recording so far is in {partial}; no cassette was written to {path}" in first.stderr
    assert "left as it was" not in first.stderr
    first_bytes = partial.read_bytes()

    second = interrupted_recording(path)
    assert second.returncode == 128 + signal.SIGINT
    numbered = tmp_path / "x.netplay.1.partial"
    assert numbered.read_bytes() == first_bytes
    assert f"{partial}: it is now {numbered}" in second.stderr
    assert partial.exists() and not path.exists()


@pytest.mark.root
def test_replay_is_strict_by_default(good):
    path, _ = good
    result = netplay("replay", "-f", str(path), "true", CHANGED_CLIENT)
    assert result.returncode == 1
    assert "c2s: bytes differ at offset 1" in result.stderr


@pytest.mark.root
def test_no_strict_only_warns(good):
    path, _ = good
    result = netplay("replay", "--no-strict", "-f", str(path), "-", CHANGED_CLIENT)
    assert result.returncode == 0, result.stderr
    assert "c2s: bytes differ at offset 1" in result.stderr


@pytest.mark.root
@pytest.mark.parametrize("flags", [[], ["--no-strict"]], ids=["default", "no-strict"])
def test_plg_replay_strictness(good, flags):
    path, _ = good
    result = subprocess.run(
        [*PLG, "--replay", *flags, "-f", str(path), "-", CHANGED_CLIENT],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == (0 if flags else 1), result.stderr
    assert "c2s: bytes differ at offset 1" in result.stderr
