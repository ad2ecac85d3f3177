"""A bad number given to a `netplay` or `plg` flag is refused by the shared validators
before anything starts: one argparse error line naming the flag, exit status 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

NETPLAY = [sys.executable, "-m", "pytest_netplayground"]
POSITIVE = "expected a finite number above 0"


@pytest.mark.parametrize(
    ("command", "flag", "value", "allowed"),
    [
        ("replay", "--speed", "inf", POSITIVE),
        ("replay", "--speed", "0", POSITIVE),
        ("replay", "--stall-timeout", "-1", POSITIVE),
        ("replay", "--settle", "0", POSITIVE),
        ("replay", "--settle", "nan", POSITIVE),
        ("run", "--grace", "-1", "expected a finite number of 0 or more"),
        ("record", "--runs", "10", "expected a number of recordings from 1 to 9"),
        ("--replay", "--speed", "inf", POSITIVE),  # the original tool's flags
    ],
)
def test_a_bad_number_is_one_usage_error_line(tmp_path, command, flag, value, allowed):
    result = subprocess.run(
        [*NETPLAY, command, flag, value, "true"], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    prog = "netplay" if command.startswith("-") else f"netplay {command}"
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"{prog}: error: argument {flag}: {allowed}, got '{value}'"
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_grace_of_zero_is_allowed():
    from pytest_netplayground.cli import build_parser

    assert build_parser().parse_args(["run", "--grace", "0", "true"]).grace == 0.0
