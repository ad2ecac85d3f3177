"""A bad number given to a `netplay` or `plg` flag is refused by the shared validators
before anything starts: one argparse error line naming the flag, exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

NETPLAY = [sys.executable, "-m", "pytest_netplayground"]


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (
            ["replay", "--speed", "inf"],
            "netplay replay: error: argument --speed: expected a finite number above 0, got 'inf'",
        ),
        (
            ["replay", "--speed", "0"],
            "netplay replay: error: argument --speed: expected a finite number above 0, got '0'",
        ),
        (
            ["replay", "--stall-timeout", "-1"],
            "netplay replay: error: argument --stall-timeout: expected a finite number above 0, got '-1'",
        ),
        (
            ["replay", "--settle", "0"],
            "netplay replay: error: argument --settle: expected a finite number above 0, got '0'",
        ),
        (
            ["replay", "--settle", "nan"],
            "netplay replay: error: argument --settle: expected a finite number above 0, got 'nan'",
        ),
        (
            ["run", "--grace", "-1"],
            "netplay run: error: argument --grace: expected a finite number of 0 or more, got '-1'",
        ),
        (
            ["record", "--runs", "10"],
            "netplay record: error: argument --runs: expected a number of recordings from 1 to 9, got '10'",
        ),
        (
            ["--replay", "--speed", "inf"],
            "netplay: error: argument --speed: expected a finite number above 0, got 'inf'",
        ),
    ],
)
def test_a_bad_number_is_one_usage_error_line(tmp_path, args, complaint):
    result = subprocess.run(
        [*NETPLAY, *args, "true"], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == complaint
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_grace_of_zero_is_allowed():
    from pytest_netplayground.cli import build_parser

    assert build_parser().parse_args(["run", "--grace", "0", "true"]).grace == 0.0
