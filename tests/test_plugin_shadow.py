"""``@pytest.mark.netplay(shadow=[...])``: a candidate that answers otherwise fails the test."""

from __future__ import annotations

import pytest

from tests.support.suites import run, suite

SHADOW_SUITE = '''
import sys

import pytest

SERVER = (
    "import socket, sys\\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\\n"
    "s.bind(('', 7000)); s.listen()\\n"
    "while True:\\n"
    "    c, _ = s.accept(); c.sendall(sys.argv[1].encode() + c.recv(100)); c.close()\\n"
)


def _talk(netplay, candidate_says):
    server, client, candidate = netplay.add_host(), netplay.add_host(), netplay.add_host()
    for host, says in ((server, "ok:"), (candidate, candidate_says)):
        host.spawn([sys.executable, "-c", SERVER, says])
        host.wait_for_port(7000)
    sock = client.connect(("10.0.0.1", 7000))
    sock.sendall(b"ping")
    got = b""
    while chunk := sock.recv(100):
        got += chunk
    sock.close()
    assert got == b"ok:ping"


@pytest.mark.netplay(shadow=["10.0.0.1:7000=10.0.0.3:7000"])
def test_same(netplay):
    _talk(netplay, "ok:")


@pytest.mark.netplay(shadow=["10.0.0.1:7000=10.0.0.3"])
def test_other(netplay):
    _talk(netplay, "no:")


@pytest.mark.netplay(shadow=["10.0.0.1=10.0.0.3"])
def test_bad_setting(netplay):
    pass
'''


@pytest.mark.root
def test_a_differing_candidate_fails_its_test_and_an_identical_one_passes(pytester):
    suite(pytester, SHADOW_SUITE)
    result = run(pytester, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1, errors=1)
    result.stdout.fnmatch_lines(["FAILED*::test_other*", "ERROR*::test_bad_setting*"])
    text = result.stdout.str()
    assert "a shadow's candidate answered otherwise than its primary" in text
    assert "1 connection mirrored, 0 identical, 1 differing, 0 failed" in text
    assert "s2c: bytes differ at offset 0" in text
    assert "shadow's primary needs its port" in text
