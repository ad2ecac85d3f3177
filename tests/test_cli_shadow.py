"""`netplay run/record --shadow PRIMARY=CANDIDATE`: the report at the end, the exit status."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pytest_netplayground.cli.options import build_parser

NETPLAY = [sys.executable, "-m", "pytest_netplayground"]
SERVER = f"{sys.executable} -m http.server -d {{}} 8000"
CLIENT = "curl -s --retry 50 --retry-delay 0 --retry-all-errors --retry-max-time 20 http://10.0.0.1:8000/{}"


def netplay(*args: str, cwd, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*NETPLAY, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def _sites(tmp_path, candidate_body: bytes):
    for name, body in (("primary", b"hello\n"), ("candidate", candidate_body)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.txt").write_bytes(body)
        (tmp_path / name / "y.txt").write_bytes(b"same\n")
        for path in (tmp_path / name).iterdir():
            os.utime(path, (1732147200, 1732147200))


def _run(tmp_path, *extra: str) -> subprocess.CompletedProcess:
    client = f"{CLIENT.format('y.txt')}; {CLIENT.format('x.txt')}; {CLIENT.format('y.txt')}"
    return netplay(
        *extra,
        "--shadow", "10.0.0.1:8000=candidate",
        "--shadow-ignore", "s2c:Date: [^\r]*",
        "--names", "web,client,candidate",
        "--exit-code-from", "client",
        SERVER.format("primary"), client, SERVER.format("candidate"),
        cwd=tmp_path,
    )


@pytest.mark.root
@pytest.mark.needs("curl")
def test_run_reports_the_differing_connection_and_exits_non_zero(tmp_path):
    _sites(tmp_path, b"hellO\n")
    r = _run(tmp_path, "run")
    assert r.returncode == 1, r.stderr
    assert r.stdout.count("hello") == 1 and "hellO" not in r.stdout, "the client got the primary's answers"
    assert "3 connections mirrored, 2 identical, 1 differing, 0 failed" in r.stderr
    assert "#2 10.0.0.2 -> 10.0.0.1:8000 (2nd of that key), s2c: bytes differ at offset" in r.stderr
    assert "hellO" in r.stderr


@pytest.mark.root
@pytest.mark.needs("curl")
def test_record_with_an_identical_candidate_exits_zero_and_records_the_primary_only(tmp_path):
    _sites(tmp_path, b"hello\n")
    r = _run(tmp_path, "record", "-f", "shadowed.netplay")
    assert r.returncode == 0, r.stderr
    assert "3 connections mirrored, 3 identical, 0 differing, 0 failed" in r.stderr
    shown = netplay("show", "shadowed.netplay", cwd=tmp_path)
    assert shown.stdout.count("-> 10.0.0.1:8000") >= 3 and "-> 10.0.0.3" not in shown.stdout


def test_help_says_what_the_shadow_flags_do_and_bad_ones_are_refused(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--shadow PRIMARY=CANDIDATE" in text and "exits 1" in text and "answered differently" in text
    args = parser.parse_args(["record", "--shadow", "web:80=cand:8080", "--shadow", "10.0.0.1:80=10.0.0.3", "x"])
    assert args.shadow == [("web:80", "cand:8080"), ("10.0.0.1:80", "10.0.0.3")]
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--shadow", "10.0.0.1:80", "x"])
    assert "PRIMARY=CANDIDATE" in capsys.readouterr().err
