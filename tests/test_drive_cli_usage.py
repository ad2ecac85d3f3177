"""`netplay drive` refuses bad settings with exit status 2 before any sandbox is made (no root needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def drive(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pytest_netplayground", "drive", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60)


@pytest.mark.parametrize(
    "args, said",
    [
        (["--multiply", "0"], "multiply must be a whole number of at least 1"),
        (["--sample", "1.5"], "sample is the share of connections"),
        (["--noise-runs", "1"], "at least 2 runs"),
        (["--map", "10.0.0.1"], "10.0.0.1"),
        (["--speed", "2", "--flood"], "not allowed with argument"),
    ],
)
def test_bad_settings_are_usage_errors(tmp_path, args, said):
    result = drive("-f", str(tmp_path / "none.traffic"), *args, "true")
    assert result.returncode == 2, result.stderr
    assert said in result.stderr


def test_a_missing_cassette_is_a_usage_error_naming_it(tmp_path):
    result = drive("-f", str(tmp_path / "none.traffic"), "true")
    assert result.returncode == 2
    assert "none.traffic does not exist" in result.stderr


def test_a_command_is_required():
    assert drive("-f", "x.traffic").returncode == 2


def test_a_cassette_recorded_inside_tls_is_refused_before_any_sandbox_starts(tmp_path):
    from pytest_netplayground import ConfigError, Sandbox, drive
    from pytest_netplayground.cassette import CassetteWriter
    from pytest_netplayground.core.events import Header

    path = tmp_path / "tls.traffic"
    with CassetteWriter(path, Header("10.0.0.0/24", started=0.0, tool_version="0.1.0", tls="intercept")) as w:
        w.commit(0.0)
    sandbox = Sandbox()
    with pytest.raises(ConfigError, match="recorded with TLS interception"):
        drive(sandbox, path)
    assert sandbox.closed is False and sandbox.hosts == []


def test_only_naming_no_recorded_server_is_a_usage_error_listing_the_servers(tmp_path):
    from pytest_netplayground.cassette import CassetteWriter
    from pytest_netplayground.core.events import ConnectionOpened, Header

    path = tmp_path / "one.traffic"
    with CassetteWriter(path, Header("10.0.0.0/24", started=0.0, tool_version="0.1.0")) as w:
        w.write(ConnectionOpened(0.0, 0, ("10.0.0.2", 40000), ("10.0.0.1", 80)))
        w.commit(0.1)
    result = drive("-f", str(path), "--only", "10.0.0.9:80", "true")
    assert result.returncode == 2, result.stderr
    assert "only 10.0.0.9:80 matches no recorded connection; the recorded servers are 10.0.0.1:80" in result.stderr
    result = drive("-f", str(path), "--only", "web", "true")
    assert result.returncode == 2 and "only takes servers as ADDR:PORT" in result.stderr
