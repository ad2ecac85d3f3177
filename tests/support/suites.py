"""Generated suites for the plugin's end-to-end tests, run by pytest in a subprocess.

Namespaces are process-wide state, so every run is a subprocess. The generated
conftest gives the suites two fixtures: ``echo`` (the shipped echo server on
host ``server``, the client on host ``client``; in replay the server is not
started, so the cassette has to stand in for it) and ``observe`` (notes a
value per test in ``observed.jsonl`` for the test to read).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_netplayground.cassette import Cassette
from pytest_netplayground.core.events import Data, Direction

CONFTEST = """
import json
import os
import sys

import pytest


@pytest.fixture
def echo(netplay):
    def talk(line):
        server = netplay.add_host("server")
        client = netplay.add_host("client")
        if netplay.mode != "replay":
            server.spawn([sys.executable, "-m", "pytest_netplayground.examples.echo_server", "7000"])
            server.wait_for_port(7000)
        result = client.run(
            [sys.executable, "-m", "pytest_netplayground.examples.echo_client", server.address + ":7000", line],
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.decode()
    return talk


@pytest.fixture
def observe(request):
    def note(value):
        with open(os.path.join(str(request.config.rootpath), "observed.jsonl"), "a") as f:
            f.write(json.dumps([request.node.name, value]) + "\\n")
    return note
"""

ECHO_SUITE = """
import os

def test_first(netplay, echo, observe):
    observe(netplay.mode)
    assert "PING" in echo("ping")

def test_second(netplay, echo, observe):
    observe(netplay.mode)
    assert "PONG" in echo("pong")
"""

# Sends the line given in NETPLAY_LINE; fails after talking if NETPLAY_FAIL is set.
LINE_SUITE = """
import os

def test_talk(echo):
    echo(os.environ["NETPLAY_LINE"])
    assert not os.environ.get("NETPLAY_FAIL"), "failing on purpose"
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*args, timeout=120)


def suite(pytester: pytest.Pytester, source: str, conftest: str = "", name: str = "test_suite") -> None:
    pytester.makeconftest(CONFTEST + conftest)
    pytester.makepyfile(**{name: source})


def cassettes(pytester: pytest.Pytester, module: str = "test_suite") -> set[str]:
    directory = pytester.path / "cassettes" / module
    return {p.name for p in directory.iterdir()} if directory.exists() else set()


def observed(pytester: pytest.Pytester) -> dict:
    lines = (pytester.path / "observed.jsonl").read_text().splitlines()
    return dict(json.loads(line) for line in lines)


def sent_by_client(path: Path) -> bytes:
    return b"".join(
        e.data for e in Cassette(path).events() if isinstance(e, Data) and e.direction is Direction.C2S
    )
