"""The pytest plugin, end to end: generated suites (``tests/support/suites.py``) run
by pytest in a subprocess, recording, replaying, naming and keeping cassettes.
"""

from __future__ import annotations

import hashlib
import os
import re

import pytest

from tests.support.suites import (
    ECHO_SUITE,
    LINE_SUITE,
    cassettes,
    observed,
    run,
    sent_by_client,
    suite,
)


@pytest.mark.root
def test_record_writes_one_cassette_per_test(pytester):
    suite(pytester, ECHO_SUITE)
    result = run(pytester, "--netplay=record")
    result.assert_outcomes(passed=2)
    assert cassettes(pytester) == {"test_first.netplay", "test_second.netplay"}
    assert observed(pytester) == {"test_first": "record", "test_second": "record"}
    result.stdout.fnmatch_lines(["*- netplay -*", "2 cassettes recorded"])


@pytest.mark.root
def test_replay_plays_the_recorded_server_back(pytester):
    suite(pytester, ECHO_SUITE)
    run(pytester, "--netplay=record").assert_outcomes(passed=2)
    (pytester.path / "observed.jsonl").unlink()
    result = run(pytester, "--netplay=replay")
    result.assert_outcomes(passed=2)
    assert observed(pytester) == {"test_first": "replay", "test_second": "replay"}
    result.stdout.fnmatch_lines(["*- netplay -*", "2 cassettes replayed"])


@pytest.mark.root
@pytest.mark.parametrize("args", [[], ["--netplay=off"]], ids=["default", "explicit"])
def test_off_mode_runs_live_and_writes_nothing(pytester, args):
    suite(pytester, ECHO_SUITE)
    result = run(pytester, *args)
    result.assert_outcomes(passed=2)
    assert observed(pytester) == {"test_first": "live", "test_second": "live"}
    assert not (pytester.path / "cassettes").exists()
    result.stdout.no_fnmatch_line("*- netplay -*")


@pytest.mark.root
def test_parametrize_id_is_part_of_the_cassette_name(pytester):
    suite(
        pytester,
        "import pytest\n\n"
        "@pytest.mark.parametrize('x', [1, 2], ids=['one', 'k=1+2-3.5'])\n"
        "def test_p(netplay, x):\n    pass\n",
    )
    run(pytester, "--netplay=record").assert_outcomes(passed=2)
    assert cassettes(pytester) == {"test_p_one.netplay", "test_p_k=1+2-3.5.netplay"}


@pytest.mark.root
def test_ids_alike_but_for_unsafe_characters_get_distinct_cassettes(pytester):
    suite(
        pytester,
        "import pytest\n\n"
        "@pytest.mark.parametrize('path', ['a/b', 'a:b', 'a b'])\n"
        "def test_p(netplay, path):\n    pass\n",
    )
    run(pytester, "--netplay=record").assert_outcomes(passed=3)
    names = cassettes(pytester)
    assert len(names) == 3
    assert all(re.fullmatch(r"test_p_a_b-[0-9a-f]{12}\.netplay", name) for name in names), names


@pytest.mark.root
def test_test_in_a_class_is_named_class_dot_test(pytester):
    suite(pytester, "class TestGroup:\n    def test_member(self, netplay):\n        pass\n")
    run(pytester, "--netplay=record").assert_outcomes(passed=1)
    assert cassettes(pytester) == {"TestGroup.test_member.netplay"}


@pytest.mark.root
def test_very_long_id_is_shortened_with_a_hash(pytester):
    long_id = "segment-" * 40
    suite(
        pytester,
        f"import pytest\n\n@pytest.mark.parametrize('x', [0], ids=[{long_id!r}])\ndef test_long(netplay, x):\n    pass\n",
    )
    run(pytester, "--netplay=record").assert_outcomes(passed=1)
    (name,) = cassettes(pytester)
    stem = name.removesuffix(".netplay")
    digest = hashlib.sha256(f"test_long[{long_id}]".encode()).hexdigest()[:12]
    assert len(stem) <= 120
    assert stem.startswith("test_long_segment-segment-")
    assert stem.endswith("-" + digest)


@pytest.mark.root
def test_once_replays_an_existing_cassette_and_records_a_missing_one(pytester):
    suite(pytester, ECHO_SUITE)
    run(pytester, "--netplay=record", "-k", "test_first").assert_outcomes(passed=1, deselected=1)
    old = pytester.path / "cassettes" / "test_suite" / "test_first.netplay"
    old_bytes, old_mtime = old.read_bytes(), old.stat().st_mtime_ns
    (pytester.path / "observed.jsonl").unlink()

    result = run(pytester, "--netplay=once")

    result.assert_outcomes(passed=2)
    assert observed(pytester) == {"test_first": "replay", "test_second": "record"}
    assert old.read_bytes() == old_bytes and old.stat().st_mtime_ns == old_mtime
    assert cassettes(pytester) == {"test_first.netplay", "test_second.netplay"}
    result.stdout.fnmatch_lines(["1 cassette recorded, 1 cassette replayed"])


@pytest.mark.root
def test_replay_without_cassette_is_a_setup_error_saying_how_to_record(pytester):
    suite(pytester, "def test_x(netplay):\n    pass\n")
    result = run(pytester, "--netplay=replay")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ERROR at setup of test_x*"])
    text = result.stdout.str()
    assert str(pytester.path / "cassettes" / "test_suite" / "test_x.netplay") in text
    assert "pytest --netplay=record" in text


@pytest.mark.root
def test_divergent_replay_fails_the_test_with_the_difference(pytester, monkeypatch):
    suite(pytester, LINE_SUITE)
    monkeypatch.setenv("NETPLAY_LINE", "ping")
    run(pytester, "--netplay=record").assert_outcomes(passed=1)
    monkeypatch.setenv("NETPLAY_LINE", "pong")

    result = run(pytester, "--netplay=replay")

    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert "test_talk.netplay diverged from the recording" in text
    assert "c2s: bytes differ at offset 1" in text
    result.stdout.fnmatch_lines(["*expected:*ping.", "*actual:*pong.", "1 cassette divergent"])


@pytest.mark.root
@pytest.mark.parametrize(
    "marker, args",
    [("@pytest.mark.netplay(strict=False)\n", []), ("", ["--netplay-strict=no"])],
    ids=["marker", "command line"],
)
def test_divergence_is_a_warning_when_not_strict(pytester, monkeypatch, marker, args):
    suite(pytester, "import pytest\n" + LINE_SUITE.replace("def test_talk", marker + "def test_talk"))
    monkeypatch.setenv("NETPLAY_LINE", "ping")
    run(pytester, "--netplay=record").assert_outcomes(passed=1)
    monkeypatch.setenv("NETPLAY_LINE", "pong")

    result = run(pytester, "--netplay=replay", *args)

    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(
        ["*warnings summary*", "*NetplayDivergenceWarning: replay of *test_talk.netplay diverged*"]
    )


@pytest.mark.root
def test_failing_test_in_record_mode_keeps_the_old_cassette(pytester, monkeypatch):
    suite(pytester, LINE_SUITE)
    monkeypatch.setenv("NETPLAY_LINE", "first")
    run(pytester, "--netplay=record").assert_outcomes(passed=1)
    directory = pytester.path / "cassettes" / "test_suite"
    old = (directory / "test_talk.netplay").read_bytes()
    monkeypatch.setenv("NETPLAY_LINE", "second")
    monkeypatch.setenv("NETPLAY_FAIL", "1")

    result = run(pytester, "--netplay=record")

    result.assert_outcomes(failed=1)
    assert (directory / "test_talk.netplay").read_bytes() == old
    kept = directory / "test_talk.failed.netplay"
    assert sent_by_client(kept) == b"second\n"
    assert f"its recording was kept at {kept}" in result.stdout.str()


@pytest.mark.root
def test_failing_test_shows_each_hosts_output_under_its_name(pytester):
    suite(
        pytester,
        """
import sys

def test_x(netplay):
    server = netplay.add_host("server")
    client = netplay.add_host("client")
    server.spawn([sys.executable, "-m", "pytest_netplayground.examples.echo_server", "7000"])
    server.wait_for_port(7000)
    client.spawn([sys.executable, "-m", "pytest_netplayground.examples.echo_client", "10.0.0.1", "shout"]).wait(30)
    assert False
""",
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*- Captured server (10.0.0.1) stdout call -*",
            "listening on port 7000",
            "connection from 10.0.0.2:*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*- Captured client (10.0.0.2) stdout call -*",
            "connected from 10.0.0.2:*",
            "hello from echo server",
            "SHOUT",
        ]
    )


@pytest.mark.root
def test_failing_test_shows_a_hosts_stderr_in_its_own_section(pytester):
    suite(
        pytester,
        """
def test_x(netplay):
    netplay.add_host("noisy").spawn("echo trouble >&2").wait(30)
    assert False
""",
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*- Captured noisy (10.0.0.1) stderr call -*", "trouble"])


@pytest.mark.root
def test_overridden_cassette_dir_fixture_moves_the_cassettes(pytester):
    suite(
        pytester,
        "def test_x(netplay):\n    pass\n",
        conftest='\n@pytest.fixture(scope="module")\ndef netplay_cassette_dir(request):\n'
        '    return request.config.rootpath / "tapes"\n',
    )
    run(pytester, "--netplay=record").assert_outcomes(passed=1)
    assert os.listdir(pytester.path / "tapes") == ["test_x.netplay"]
    assert not (pytester.path / "cassettes").exists()


@pytest.mark.root
def test_netplay_dir_option_moves_the_cassettes(pytester):
    suite(pytester, "def test_x(netplay):\n    pass\n")
    run(pytester, "--netplay=record", "--netplay-dir", "recordings").assert_outcomes(passed=1)
    assert os.listdir(pytester.path / "recordings" / "test_suite") == ["test_x.netplay"]
    assert not (pytester.path / "cassettes").exists()


@pytest.mark.root
def test_xdist_records_and_replays_each_test_in_its_own_cassette(pytester):
    suite(
        pytester,
        """
import pytest

@pytest.mark.parametrize("word", ["alpha", "beta", "gamma", "delta"])
def test_word(echo, word):
    assert word.upper() in echo(word)
""",
    )
    record = run(pytester, "-n", "2", "--netplay=record")
    record.assert_outcomes(passed=4)
    replay = run(pytester, "-n", "2", "--netplay=replay")
    replay.assert_outcomes(passed=4)

    assert cassettes(pytester) == {f"test_word_{w}.netplay" for w in ("alpha", "beta", "gamma", "delta")}
    assert sent_by_client(pytester.path / "cassettes" / "test_suite" / "test_word_beta.netplay") == b"beta\n"
    assert list(pytester.path.rglob("*.partial")) == []
    record.stdout.fnmatch_lines(["4 cassettes recorded"])
    replay.stdout.fnmatch_lines(["4 cassettes replayed"])


@pytest.mark.root
def test_a_test_skipped_in_its_body_leaves_no_recording(pytester):
    pytester.makepyfile(
        test_skipper="""
        import pytest

        def test_skipped(netplay):
            netplay.add_host()
            pytest.skip("not today")
        """
    )
    result = pytester.runpytest_subprocess("--netplay=record")
    result.assert_outcomes(skipped=1)
    assert not (pytester.path / "cassettes").exists()


@pytest.mark.root
def test_a_fixture_failing_after_the_sandbox_leaves_no_partial_file(pytester):
    pytester.makepyfile(
        test_broken_fixture="""
        import pytest

        @pytest.fixture
        def broken(netplay):
            raise RuntimeError("fixture broke")

        def test_never_runs(broken):
            pass
        """
    )
    result = pytester.runpytest_subprocess("--netplay=record")
    result.assert_outcomes(errors=1)
    assert not (pytester.path / "cassettes").exists()


@pytest.mark.root
def test_more_hosts_than_the_subnet_holds_is_a_clear_error_and_leaves_no_cassette(pytester):
    suite(
        pytester,
        """
import pytest

@pytest.mark.netplay(subnet="10.9.0.0/30")
def test_three(netplay):
    netplay.add_host()
    netplay.add_host()
    netplay.add_host()
""",
    )
    result = run(pytester, "--netplay=record")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert "SubnetFull: subnet 10.9.0.0/30 has room for 2 hosts; host number 3 does not fit" in text
    # The traceback ends at the test's own line, not inside the library.
    assert ">       netplay.add_host()\nE       pytest_netplayground.errors.SubnetFull" in text
    assert "sandbox.py" not in text and "addressing.py" not in text
    assert (
        "the test failed before anything was recorded, so no recording was kept; no cassette was written"
        in text
    )
    assert not (pytester.path / "cassettes").exists()


@pytest.mark.root
def test_a_failing_test_that_recorded_nothing_keeps_the_old_cassette_and_adds_no_file(pytester, monkeypatch):
    suite(pytester, "import os\n\ndef test_x(netplay):\n    assert not os.environ.get('NETPLAY_FAIL')\n")
    run(pytester, "--netplay=record").assert_outcomes(passed=1)
    directory = pytester.path / "cassettes" / "test_suite"
    old = (directory / "test_x.netplay").read_bytes()
    monkeypatch.setenv("NETPLAY_FAIL", "1")

    result = run(pytester, "--netplay=record")

    result.assert_outcomes(failed=1)
    assert os.listdir(directory) == ["test_x.netplay"]
    assert (directory / "test_x.netplay").read_bytes() == old
    assert f"no recording was kept; {directory / 'test_x.netplay'} was left as it was" in result.stdout.str()
