"""A bad setting from any layer is one error line naming the setting, its source and
what is allowed: never a traceback, and never a sandbox started with it."""

from __future__ import annotations

import re

import pytest

from tests.support.suites import run, suite

ONE_TEST = "def test_x(netplay):\n    pass\n"


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("ERROR: ")]


@pytest.mark.parametrize(
    ("flag", "complaint"),
    [
        (
            "--netplay-speed=inf",
            "command line: bad value for 'speed': expected a finite number above 0, got 'inf'",
        ),
        (
            "--netplay-speed=0",
            "command line: bad value for 'speed': expected a finite number above 0, got '0'",
        ),
        (
            "--netplay-pace=bogus",
            "command line: bad value for 'pace': expected one of recorded, flood, causal, got 'bogus'",
        ),
        (
            "--netplay-stall-timeout=-1",
            "command line: bad value for 'stall_timeout': expected a finite number above 0, got '-1'",
        ),
        (
            "--netplay-match=pairs",
            "command line: bad value for 'match': expected one of connection, exchange, got 'pairs'",
        ),
        (
            "--netplay-record-runs=10",
            "command line: bad value for 'record_runs': expected a number of recordings from 1 to 9, got '10'",
        ),
    ],
)
def test_a_bad_command_line_value_is_one_usage_error_line(pytester, flag, complaint):
    suite(pytester, ONE_TEST)
    result = run(pytester, "--netplay=replay", flag)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert _error_lines(result.stderr.str()) == [f"ERROR: {complaint}"]
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_a_bad_ini_value_is_one_usage_error_line_naming_the_ini(pytester):
    pytester.makeini("[pytest]\nnetplay_stall_timeout = inf\n")
    suite(pytester, ONE_TEST)
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert _error_lines(result.stderr.str()) == [
        "ERROR: ini: bad value for 'stall_timeout': expected a finite number above 0, got 'inf'"
    ]
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


BAD_FIXTURE_AND_MARKERS = """
import pytest

@pytest.fixture(scope="session")
def netplay_config():
    return {"speed": float("inf")}

def test_from_the_fixture(netplay):
    pass

@pytest.mark.netplay(stall_timeout=-1)
def test_from_the_marker(netplay):
    pass

@pytest.mark.netplay(speed=2, sped=3)
def test_unknown_keyword(netplay):
    pass

def test_without_a_sandbox():
    pass
"""


def test_a_bad_fixture_or_marker_value_is_one_error_line_of_that_test(pytester):
    suite(pytester, BAD_FIXTURE_AND_MARKERS)
    result = run(pytester, "--netplay=replay", "-rE")
    result.assert_outcomes(passed=1, errors=3)
    text = result.stdout.str()
    expected = {
        "test_from_the_fixture": "netplay_config fixture: bad value for 'speed': "
        "expected a finite number above 0, got inf",
        "test_from_the_marker": "test_suite.py::test_from_the_marker: @pytest.mark.netplay: "
        "bad value for 'stall_timeout': expected a finite number above 0, got -1",
        "test_unknown_keyword": "test_suite.py::test_unknown_keyword: @pytest.mark.netplay got unknown "
        "keyword 'sped'; allowed: subnet, subnet6, pace, speed, strict, cassette, stall_timeout",
    }
    for name, complaint in expected.items():
        section = re.search(rf"_ ERROR at setup of {name} _+\n(.*?)\n(?:_|=)", text, re.S).group(1)
        assert section.strip().startswith(complaint), section
        assert len(section.strip().splitlines()) == 1, section
    assert "Traceback" not in text and "During handling" not in text


def test_a_fixture_that_is_no_dict_is_one_error_line(pytester):
    suite(
        pytester,
        "import pytest\n\n@pytest.fixture(scope='session')\ndef netplay_config():\n"
        "    return ['speed', 2]\n\n" + ONE_TEST,
    )
    result = run(pytester, "--netplay=replay")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*netplay_config fixture: expected a dict of settings like {'speed': 2}, got list*"]
    )
    assert "Traceback" not in result.stdout.str()
