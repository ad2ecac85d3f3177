"""What the cassette header and a sandbox's report say about a run."""

from __future__ import annotations

import shlex

import pytest

from pytest_netplayground import Sandbox
from pytest_netplayground.cassette import Cassette
from pytest_netplayground.runtime.sessions import Session


def test_header_command_is_quoted_as_a_shell_would():
    session = Session(0.0)
    session.note_host("10.0.0.1", "h1")
    argv = ["printf", "%s\\n", "two words", "it's"]
    session.note_command(0, argv)
    assert session.hosts[0].command == shlex.join(argv)
    assert shlex.split(session.hosts[0].command) == argv


def test_a_shell_command_is_shown_as_given():
    session = Session(0.0)
    session.note_host("10.0.0.1", "h1")
    session.note_command(0, ["/bin/sh", "-c", "echo 'a b' | wc -c"])
    assert session.hosts[0].command == "echo 'a b' | wc -c"


@pytest.mark.root
def test_recorded_header_runs_as_shown(tmp_path):
    path = tmp_path / "quoted.netplay"
    argv = ["printf", "%s|", "two words"]
    with Sandbox(mode="record", cassette=path) as sb:
        assert sb.add_host().run(argv, timeout=30).stdout == b"two words|"
    [host] = Cassette(path).header.hosts
    assert shlex.split(host.command) == argv


@pytest.mark.root
@pytest.mark.parametrize("mode", ["live", "record"])
def test_report_of_a_run_without_replay_says_so(tmp_path, mode):
    cassette = tmp_path / "c.netplay" if mode == "record" else None
    with Sandbox(mode=mode, cassette=cassette) as sb:
        sb.add_host().run(["true"], timeout=30)
    text = sb.divergences.format()
    assert text.startswith("no replay:") and mode in text
    assert "matched" not in text
