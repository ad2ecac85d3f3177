"""How a `netplay run/record/replay` ends (`--exit-code-from`, `--abort-on-exit`), `-` hosts and `--names`."""

from __future__ import annotations

import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_netplayground.cassette import Cassette
from pytest_netplayground.core.events import Data, Direction
from tests.test_cli_record_replay import CLIENT, CLIENT_LINES, PLG, SERVER, client_lines

NETPLAY = [sys.executable, "-m", "pytest_netplayground"]
# Generous: a hang must fail the test, never block the suite.
TIMEOUT = 120

HTTP_SERVER = f"{sys.executable} -m http.server 8000"
CURL = "curl -s --retry 10 --retry-connrefused http://10.0.0.1:8000/"
# A server that says it was stopped, so a test can see the kill signal arrive.


def stoppable(ready) -> str:
    """A command that says so when the kill signal reaches it; ``ready`` exists once it listens."""
    return f"trap 'echo got-term; exit 0' TERM; touch {ready}; sleep 1000 & wait"


def once_ready(ready, then: str) -> str:
    """``then``, once ``ready`` exists: never before the other command can take the signal."""
    return f"while [ ! -e {ready} ]; do sleep 0.05; done; {then}"

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def run(command: list[str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*command, *args], capture_output=True, text=True, cwd=cwd, timeout=TIMEOUT)


def netplay(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return run(NETPLAY, *args, cwd=cwd)


def served_bytes(path: Path) -> bytes:
    return b"".join(
        e.data for e in Cassette(path).events() if isinstance(e, Data) and e.direction is Direction.S2C
    )


@pytest.mark.root
@needs_curl
def test_record_with_a_real_server_ends_with_the_clients_exit_and_commits(tmp_path):
    path = tmp_path / "demo.netplay"
    result = netplay("record", "-f", str(path), "--exit-code-from", "2", HTTP_SERVER, CURL)
    assert result.returncode == 0, result.stderr
    assert "10.0.0.2 | <!DOCTYPE HTML>" in result.stdout
    assert f"netplay: recorded {path}" in result.stderr
    assert "stopping the other commands" in result.stderr
    assert not Path(str(path) + ".partial").exists()
    assert b"200 OK" in served_bytes(path)
    assert [h.command for h in Cassette(path).header.hosts] == [HTTP_SERVER, CURL]


@pytest.mark.root
@needs_curl
def test_exit_code_from_gives_that_commands_status(tmp_path):
    result = netplay("run", "--exit-code-from", "2", HTTP_SERVER, f"{CURL} >/dev/null; exit 5")
    assert result.returncode == 5, result.stderr


@pytest.mark.root
@pytest.mark.parametrize("spec", ["10.0.0.1", "first"])
def test_exit_code_from_takes_an_address_or_a_name(spec, tmp_path):
    ready = tmp_path / "ready"
    result = netplay(
        "run", "--names", "first,second", "--exit-code-from", spec, once_ready(ready, "exit 6"), stoppable(ready)
    )
    assert result.returncode == 6, result.stderr
    assert "10.0.0.2 | got-term" in result.stdout


@pytest.mark.root
def test_abort_on_exit_stops_the_others_with_the_kill_signal(tmp_path):
    ready = tmp_path / "ready"
    result = netplay("run", "--abort-on-exit", stoppable(ready), once_ready(ready, "exit 4"))
    assert result.returncode == 4, result.stderr
    assert "10.0.0.1 | got-term" in result.stdout
    assert "command 2 (10.0.0.2) exited with status 4" in result.stderr


@pytest.mark.root
def test_abort_on_exit_sends_sigkill_after_the_grace_period(tmp_path):
    ready = tmp_path / "ready"
    ignores_term = f"trap '' TERM; echo ready; touch {ready}; while :; do sleep 0.1; done"
    result = netplay("run", "--abort-on-exit", "--grace", "0.5", ignores_term, once_ready(ready, "exit 0"))
    assert result.returncode == 0, result.stderr
    assert "10.0.0.1 | ready" in result.stdout


@pytest.mark.root
def test_without_flags_the_run_waits_for_every_command():
    result = netplay("run", "sleep 1; echo late", "exit 0")
    assert result.returncode == 0, result.stderr
    assert "10.0.0.1 | late" in result.stdout


@pytest.mark.root
def test_replay_ends_with_the_clients_exit(tmp_path):
    path = tmp_path / "demo.netplay"
    recorded = netplay("record", "-f", str(path), "--exit-code-from", "2", f"{SERVER}; sleep 1000", CLIENT)
    assert recorded.returncode == 0, recorded.stderr
    replayed = netplay("replay", "-f", str(path), "--exit-code-from", "2", f"{SERVER}; sleep 1000", CLIENT)
    assert replayed.returncode == 0, replayed.stderr
    assert client_lines(replayed) == CLIENT_LINES


@pytest.mark.root
def test_plg_form_takes_the_lifecycle_flags(tmp_path):
    ready = tmp_path / "ready"
    result = run(
        PLG, "--record", "-f", "dump.traffic", "--abort-on-exit", stoppable(ready), once_ready(ready, "exit 0"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "10.0.0.1 | got-term" in result.stdout
    assert (tmp_path / "dump.traffic").exists()


@pytest.mark.root
def test_dash_makes_a_host_without_a_process():
    result = netplay("run", "-", "hostname -I | cut -d' ' -f1")  # the IPv4 address comes first
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["10.0.0.2 | 10.0.0.2"]


@pytest.mark.root
@pytest.mark.parametrize("form", ["netplay", "plg"])
def test_dash_host_lets_the_cassette_stand_in_for_the_server(tmp_path, form):
    path = tmp_path / "demo.netplay"
    recorded = netplay("record", "-f", str(path), SERVER, CLIENT)
    assert recorded.returncode == 0, recorded.stderr
    if form == "netplay":
        replayed = netplay("replay", "-f", str(path), "-", CLIENT)
    else:
        replayed = run(PLG, "--replay", "-f", str(path), "-", CLIENT)
    assert replayed.returncode == 0, replayed.stderr
    assert client_lines(replayed) == CLIENT_LINES
    assert "diverged" not in replayed.stderr


@pytest.mark.root
def test_names_go_to_the_hosts_in_command_order(tmp_path):
    path = tmp_path / "named.netplay"
    result = netplay("record", "-f", str(path), "--names", "server,client", "-", "true")
    assert result.returncode == 0, result.stderr
    hosts = Cassette(path).header.hosts
    assert [(h.address, h.name) for h in hosts] == [("10.0.0.1", "server"), ("10.0.0.2", "client")]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ("server,server", "name 2: host name 'server' is already taken"),
        ("Server,server", "is already taken"),
        ("server", "gives 1 names for 2 commands"),
        ("web server,client", "name 1: host name 'web server' is not a DNS label"),
        ("web-,client", "is not a DNS label"),
        ("2,client", "name 1: '2' is all digits"),
        ("server," + "x" * 64, "is not a DNS label"),
        ("h2,client", "is the default name of host number 2"),
        ("localhost,client", "is reserved"),
    ],
)
def test_bad_names_are_a_clear_error(names, message):
    result = netplay("run", "--names", names, "true", "true")
    assert result.returncode == 1
    assert "netplay: error: --names" in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.root
@pytest.mark.parametrize(
    ("spec", "commands", "message"),
    [
        ("3", ["true", "true"], "--exit-code-from 3: there are 2 commands"),
        ("nobody", ["true", "true"], "--exit-code-from nobody: no such host"),
        ("1", ["-", "true"], "runs no command"),
    ],
)
def test_bad_exit_code_from_is_a_clear_error_and_records_nothing(tmp_path, spec, commands, message):
    path = tmp_path / "x.netplay"
    result = netplay("record", "-f", str(path), "--exit-code-from", spec, *commands)
    assert result.returncode == 1
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_exit_code_from_and_abort_on_exit_exclude_each_other():
    result = netplay("run", "--exit-code-from", "1", "--abort-on-exit", "true")
    assert result.returncode == 2
    assert "not allowed with" in result.stderr


@pytest.mark.root
def test_a_second_ctrl_c_kills_at_once():
    ignores_term = "trap '' TERM; echo ready; while :; do sleep 0.1; done"
    proc = subprocess.Popen(
        [*NETPLAY, "run", "--grace", "600", ignores_term],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "10.0.0.1 | ready\n"
        proc.send_signal(signal.SIGINT)
        assert select.select([proc.stderr], [], [], TIMEOUT)[0], "no word of the interruption"
        assert "interrupted by SIGINT" in proc.stderr.readline()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
    assert proc.returncode == 128 + signal.SIGINT
