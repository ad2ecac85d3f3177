"""Ignore rules, checked hosts and record runs through settings, the CLI parser and the replayer."""

from __future__ import annotations

import pytest

from pytest_netplayground.cassette import CassetteWriter
from pytest_netplayground.cli import build_parser
from pytest_netplayground.core.events import ConnectionOpened, Data, Direction, Header, HostInfo
from pytest_netplayground.core.noise import IgnoreRule, LearnedNoise
from pytest_netplayground.core.replay import ReplayConfig
from pytest_netplayground.errors import ConfigError
from pytest_netplayground.runtime.sessions import Replayer
from pytest_netplayground.settings import check_marker, merge

S2C, C2S = Direction.S2C, Direction.C2S


def test_ignore_check_and_runs_merge_through_one_path():
    settings = merge(
        [
            ("ini", {"record_runs": "2"}),
            ("netplay_config fixture", {"ignore": "Date: [^\\r]*"}),
            (
                "marker",
                {"ignore": ["5432:s2c:K.{12}", {"pattern": "x", "port": 80}], "check": "client, 10.0.0.3"},
            ),
        ]
    )
    assert settings.record_runs == 2
    rules = (IgnoreRule.parse("5432:s2c:K.{12}"), IgnoreRule.parse({"pattern": "x", "port": 80}))
    assert settings.ignore == rules
    assert settings.check == ("client", "10.0.0.3")
    assert merge([]).ignore == () and merge([]).check == () and merge([]).record_runs == 1


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("ignore", ["Date: ["], "bad regular expression 'Date: ['"),
        ("ignore", 5, "list of regular expressions"),
        ("check", ["client", ""], "host names or addresses"),
        ("record_runs", "0", "from 1 to 9"),
        ("record_runs", "two", "from 1 to 9"),
    ],
)
def test_bad_values_name_their_source_and_key(key, value, words):
    with pytest.raises(ConfigError, match=f"marker: bad value for '{key}'.*{words.replace('[', '.')}"):
        merge([("marker", {key: value})])


def test_the_marker_takes_ignore_and_check():
    check_marker((), {"ignore": ["Date: .*"], "check": ["client"]}, "t.py::test")
    with pytest.raises(ConfigError, match="bad regular expression"):
        check_marker((), {"ignore": ["("]}, "t.py::test")


def test_replay_config_converts_its_noise_fields():
    config = ReplayConfig(ignore=["Date: .*"], check="client")
    assert config.ignore == (IgnoreRule.parse("Date: .*"),) and config.check == ("client",)
    assert config.noise.ignore == () and config.noise.learned == ()


def test_cli_options():
    replay = build_parser().parse_args(
        ["replay", "--ignore", "Date: .*", "--ignore", "80:s2c:x", "--check", "client,server", "a", "b"]
    )
    assert replay.ignore == ["Date: .*", "80:s2c:x"] and replay.check == ["client,server"]
    assert build_parser().parse_args(["record", "--runs", "2", "a"]).runs == 2
    assert build_parser().parse_args(["record", "a"]).runs == 1
    with pytest.raises(SystemExit):
        build_parser().parse_args(["record", "--runs", "0", "a"])


def test_the_replayer_gives_the_replay_learned_noise_rules_and_checked_addresses(tmp_path):
    path = tmp_path / "c.netplay"
    header = Header("10.0.0.0/24", (HostInfo("10.0.0.1", "server"), HostInfo("10.0.0.2", "client")), 1.0)
    opened = ConnectionOpened(0.0, 0, ("10.0.0.2", 40000), ("10.0.0.1", 80))
    learned = LearnedNoise(0, S2C, 0, [(0, 3)])
    with CassetteWriter(path, header) as writer:
        writer.write(opened)
        writer.write(Data(0.1, 0, S2C, b"abcdef"))
        writer.write(learned)
        writer.commit(1.0)
    replayer = Replayer(0.0, str(path), None, ReplayConfig(ignore=["def"], check=["client"]))
    noise = replayer.config.noise
    assert noise.learned == (learned,) and noise.ignore == (IgnoreRule.parse("def"),)
    assert noise.is_checked(opened, C2S) and not noise.is_checked(opened, S2C)
    assert noise.comparator(opened, S2C, 0)(b"abcdef", b"xyzzydef") is None
    assert noise.comparator(opened, S2C, 0)(b"abcdef", b"xyzzydefg") == 8
    # Names of the live run's hosts come first: here the client is another address.
    replayer.note_host("10.0.0.3", "client")
    assert replayer.config.noise.checked == frozenset({"10.0.0.3"})
    replayer.cassette.close()
