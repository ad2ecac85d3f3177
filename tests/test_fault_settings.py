"""Faults given for a whole test: marker and ``netplay_config`` keys, ``--netplay-seed``, CLI flags."""

from __future__ import annotations

import pytest

from pytest_netplayground.cli.fault_options import fault_settings
from pytest_netplayground.cli.options import build_parser
from pytest_netplayground.core.fault_spec import fault_specs
from pytest_netplayground.errors import ConfigError
from pytest_netplayground.settings import merge
from tests.support.suites import run, suite


def test_marker_faults_are_validated_with_the_link_and_fault_named():
    settings = merge([("marker", {"faults": {"h1-h2": {"latency": "50ms"}}, "seed": "7"})])
    assert settings.faults == fault_specs({"h1-h2": {"latency": 0.05}})
    assert settings.seed == 7
    with pytest.raises(ConfigError, match=r"marker: bad value for 'faults': link 'h1-h2': loss: expected a probability"):
        merge([("marker", {"faults": {"h1-h2": {"loss": "150%"}}})])
    with pytest.raises(ConfigError, match="bad value for 'seed'"):
        merge([("command line", {"seed": "x"})])


def test_command_line_flags_become_the_same_faults():
    args = build_parser().parse_args(
        ["run", "--latency", "h1-h2=50ms", "--loss", "h1-h2=2%", "--seed", "9", "true", "true"]
    )
    specs, seed = fault_settings(args)
    assert specs == fault_specs({"h1-h2": {"latency": 0.05, "loss": 0.02}})
    assert seed == 9
    bad = build_parser().parse_args(["run", "--rate", "h1-h2=fast", "true"])
    with pytest.raises(ConfigError, match="rate: expected a rate"):
        fault_settings(bad)


MARKED = '''
import socket, time, pytest

@pytest.mark.netplay(faults={"h1-h2": {"latency": "50ms"}}, seed=11)
def test_slow(netplay):
    a, b = netplay.add_host(), netplay.add_host()
    ua, ub = a.udp_socket(("10.0.0.1", 5000)), b.udp_socket(("10.0.0.2", 5000))
    ua.settimeout(5); ub.settimeout(5)
    start = time.monotonic()
    ub.sendto(b"x", ("10.0.0.1", 5000))
    data, peer = ua.recvfrom(10)
    ua.sendto(data, peer)
    ub.recvfrom(10)
    assert time.monotonic() - start >= 0.09
    assert netplay.fault_state()["seed"] == 11
    assert False, "fail on purpose: the seed is reported"
'''


@pytest.mark.root
def test_marker_faults_hold_for_the_test_and_a_failure_reports_the_seed(pytester):
    suite(pytester, MARKED)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*fail on purpose*", "*seed 11: rerun with --netplay-seed=11*"])
