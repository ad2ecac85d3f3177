"""The plugin's settings end to end: the marker, ini keys and their precedence.

A bad marker is an error of the test that carries it, never of the session.
"""

from __future__ import annotations

import re

import pytest

from tests.support.suites import observed, run, suite

BAD_MARKERS = """
import pytest

@pytest.mark.netplay(spede=2)
def test_unknown_keyword():
    pass

@pytest.mark.netplay(pace="fast")
def test_bad_value():
    pass

@pytest.mark.netplay("10.0.0.0/24")
def test_positional():
    pass

@pytest.mark.netplay(speed=2)
def test_good():
    pass

def test_unmarked():
    pass
"""


def test_every_bad_marker_is_an_error_of_its_own_test_and_the_others_run(pytester):
    suite(pytester, BAD_MARKERS)
    result = run(pytester, "-rE")
    result.assert_outcomes(passed=2, errors=3)
    text = result.stdout.str()
    for name, complaints in [
        ("test_unknown_keyword", ["unknown keyword 'spede'; allowed: subnet, subnet6, pace, speed, strict, cassette"]),
        ("test_bad_value", ["bad value for 'pace'", "'fast'", "causal", "recorded", "flood"]),
        ("test_positional", ["takes keyword arguments only", "'10.0.0.0/24'"]),
    ]:
        section = re.search(rf"ERROR at setup of {name} _+\n(.*?)\n[_=]", text, re.S).group(1)
        assert section.startswith(f"test_suite.py::{name}: @pytest.mark.netplay"), section
        assert all(complaint in section for complaint in complaints), section
    assert "During handling" not in text and "Traceback" not in text


def test_a_deselected_test_with_a_bad_marker_does_not_matter(pytester):
    suite(pytester, BAD_MARKERS)
    result = run(pytester, "-k", "good or unmarked")
    result.assert_outcomes(passed=2, deselected=3)
    assert result.ret == pytest.ExitCode.OK


def test_bad_ini_value_is_a_usage_error(pytester):
    pytester.makeini("[pytest]\nnetplay_pace = fast\n")
    suite(pytester, "def test_x(netplay):\n    pass\n")
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*ini: bad value for 'pace'*'fast'*"])


SUBNET_TEST = """
import pytest

{marker}def test_x(netplay, observe):
    observe(netplay.add_host().address)
"""


@pytest.mark.root
@pytest.mark.parametrize(
    "layers, expected",
    [
        (["ini"], "10.1.0.1"),
        (["ini", "fixture"], "10.2.0.1"),
        (["ini", "fixture", "marker"], "10.3.0.1"),
        (["ini", "fixture", "marker", "command line"], "10.4.0.1"),
    ],
    ids=["ini over default", "fixture over ini", "marker over fixture", "command line over marker"],
)
def test_each_settings_layer_wins_over_the_ones_below(pytester, layers, expected):
    pytester.makeini("[pytest]\nnetplay_subnet = 10.1.0.0/24\n")
    fixture = ""
    if "fixture" in layers:
        fixture = '\n@pytest.fixture\ndef netplay_config():\n    return {"subnet": "10.2.0.0/24"}\n'
    marker = "@pytest.mark.netplay(subnet='10.3.0.0/24')\n" if "marker" in layers else ""
    suite(pytester, SUBNET_TEST.format(marker=marker), conftest=fixture)
    args = ["--netplay-subnet", "10.4.0.0/24"] if "command line" in layers else []

    run(pytester, *args).assert_outcomes(passed=1)

    assert observed(pytester) == {"test_x": expected}


SUBNET6_TEST = """
import pytest

@pytest.mark.netplay(subnet6="fd00:9::/64")
def test_marked(netplay, observe):
    observe(netplay.add_host().address6)

def test_default(netplay, observe):
    observe(netplay.add_host().address6)
"""


@pytest.mark.root
def test_subnet6_from_the_ini_file_and_the_marker_gives_the_hosts_ipv6_addresses(pytester):
    pytester.makeini("[pytest]\nnetplay_subnet6 = fd00:8::/64\n")
    suite(pytester, SUBNET6_TEST)
    run(pytester).assert_outcomes(passed=2)
    assert observed(pytester) == {"test_marked": "fd00:9::1", "test_default": "fd00:8::1"}
    run(pytester, "--netplay-subnet6", "fd00:7::/64").assert_outcomes(passed=2)
    assert observed(pytester) == {"test_marked": "fd00:7::1", "test_default": "fd00:7::1"}
