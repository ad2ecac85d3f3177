"""UDP is recorded and shown; what a replay does not cover is named: UDP on replay, TLS handshakes."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_netplayground import Endpoint, Sandbox
from pytest_netplayground.cassette import Cassette
from pytest_netplayground.core.divergence import ByteMismatch, UdpNotReplayed
from pytest_netplayground.core.events import Datagram, Direction, UdpFlow
from pytest_netplayground.runtime.sandbox import PIPE
from tests.support.leaks import running

pytestmark = pytest.mark.root

NETPLAY = [sys.executable, "-m", "pytest_netplayground"]
ROOT = Path(__file__).resolve().parents[1]
UDP_SERVER = ("10.0.0.1", 5353)
ROUNDS = 3


def udp_rounds(sb: Sandbox) -> None:
    """``ROUNDS`` questions from the client host, each answered by the server host."""
    server, client = sb.add_host("server"), sb.add_host("client")
    with server.udp_socket(bind=UDP_SERVER) as answering, client.udp_socket() as asking:
        answering.settimeout(5)
        asking.settimeout(5)
        for i in range(ROUNDS):
            asking.sendto(b"question %d" % i, UDP_SERVER)
            question, sender = answering.recvfrom(100)
            answering.sendto(b"answer to " + question, sender)
            assert asking.recv(100) == b"answer to question %d" % i


def test_udp_seen_while_recording_is_in_the_cassette_and_show(tmp_path):
    cassette = tmp_path / "udp.jsonl"
    with running("record", cassette) as sb:
        udp_rounds(sb)
    notes = Cassette(cassette).index().notes
    [flow] = notes.udp_flows.values()
    assert (flow.client.host, flow.server) == ("10.0.0.2", Endpoint(*UDP_SERVER))
    expected = []
    for i in range(ROUNDS):
        expected += [(Direction.C2S, b"question %d" % i), (Direction.S2C, b"answer to question %d" % i)]
    assert [(d.direction, d.data) for d in notes.datagrams] == expected
    assert notes.udp == []
    shown = subprocess.run(
        [*NETPLAY, "show", str(cassette)], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert f"UDP flow 0 {flow.client} -> 10.0.0.1:5353" in shown.stdout
    assert "answer to question 2" in shown.stdout
    assert "not recorded" not in shown.stdout
    assert "0 connections, 1 UDP flow; the recording finished cleanly" in shown.stdout


def test_udp_with_its_server_running_is_replayed_and_matches(tmp_path):
    cassette = tmp_path / "udp.jsonl"
    with running("record", cassette) as sb:
        udp_rounds(sb)
    with running("replay", cassette) as sb:
        udp_rounds(sb)
    assert sb.divergences.ok, sb.divergences.format()
    assert not any(isinstance(item, UdpNotReplayed) for item in sb.divergences.items)


UDP_ECHO = textwrap.dedent(
    f"""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", {UDP_SERVER[1]}))
    s.settimeout(20)
    for _ in range({ROUNDS}):
        data, sender = s.recvfrom(100)
        s.sendto(data, sender)
    """
)
UDP_ASK = textwrap.dedent(
    f"""
    import socket, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect({UDP_SERVER!r})
    s.settimeout(5)
    for i in range({ROUNDS}):
        while True:
            s.send(b"q%d" % i)
            try:
                print(s.recv(100).decode(), flush=True)
                break
            except ConnectionRefusedError:  # not bound yet: ask again
                time.sleep(0.1)
    """
)


def test_cli_records_udp_quietly_and_a_strict_replay_with_the_server_passes(tmp_path):
    cassette = tmp_path / "udp.traffic"
    commands = [shlex.join([sys.executable, "-c", UDP_ECHO]), shlex.join([sys.executable, "-c", UDP_ASK])]
    recorded = subprocess.run(
        [*NETPLAY, "record", "-f", str(cassette), *commands],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert recorded.returncode == 0, recorded.stderr
    assert "not recorded" not in recorded.stderr
    # Every answer is recorded after its question (a question sent before the server bound
    # is refused and asked again, so it may appear twice).
    datagrams = [(d.direction, d.data) for d in Cassette(cassette).index().notes.datagrams if isinstance(d, Datagram)]
    answers = [(Direction.S2C, b"q%d" % i) for i in range(ROUNDS)]
    assert [d for d in datagrams if d[0] is Direction.S2C] == answers
    for answer in answers:
        assert datagrams.index((Direction.C2S, answer[1])) < datagrams.index(answer)
    replayed = subprocess.run(
        [*NETPLAY, "replay", "--strict", "-f", str(cassette), *commands],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert replayed.returncode == 0, replayed.stderr
    assert "UDP not replayed" not in replayed.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_a_tls_handshake_that_cannot_replay_is_explained(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=server", "-days", "1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    serve = ["openssl", "s_server", "-accept", "4433", "-cert", str(cert), "-key", str(key), "-quiet"]
    ask = ["openssl", "s_client", "-connect", "10.0.0.1:4433", "-servername", "server"]
    cassette = tmp_path / "tls.jsonl"
    with running("record", cassette) as sb:
        server, client = sb.add_host("server"), sb.add_host("client")
        server.spawn(serve, stdout=PIPE, stderr=PIPE)
        server.wait_for_port(4433, timeout=10)
        out, _ = client.spawn(ask, stdin=PIPE, stdout=PIPE, stderr=PIPE).communicate(b"hello\n", timeout=30)
    assert b"BEGIN CERTIFICATE" in out or b"Server certificate" in out

    with running("replay", cassette, stall_timeout=2.0) as sb:
        _, client = sb.add_host("server"), sb.add_host("client")  # the cassette stands in for the server
        proc = client.spawn(ask, stdin=PIPE, stdout=PIPE, stderr=PIPE)
        try:
            proc.communicate(b"hello\n", timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=10)
    report = sb.divergences
    client_hello = [i for i in report.items if isinstance(i, ByteMismatch) and i.direction is Direction.C2S]
    assert client_hello, report.format()
    text = " ".join(report.format().split())
    assert "The recorded client bytes are a TLS handshake" in text
    assert "TLS cannot be replayed byte for byte" in text


UDP_SUITE = """
def test_udp_only(netplay):
    server, client = netplay.add_host("server"), netplay.add_host("client")
    with server.udp_socket(bind=("10.0.0.1", 5353)) as answering, client.udp_socket() as asking:
        answering.settimeout(5)
        asking.settimeout(5)
        asking.sendto(b"question", ("10.0.0.1", 5353))
        question, sender = answering.recvfrom(100)
        answering.sendto(b"answer", sender)
        assert asking.recv(100) == b"answer"
"""


def test_pytest_records_udp_without_warning_and_replays_it(pytester):
    pytester.makepyfile(test_suite=UDP_SUITE)
    recorded = pytester.runpytest_subprocess("--netplay=record", timeout=120)
    recorded.assert_outcomes(passed=1, warnings=0)
    [cassette] = Path(pytester.path).rglob("*test_udp_only*")
    records = list(Cassette(cassette).records())
    assert [r.data for r in records if isinstance(r, Datagram)] == [b"question", b"answer"]
    assert len([r for r in records if isinstance(r, UdpFlow)]) == 1
    replayed = pytester.runpytest_subprocess("--netplay=replay", timeout=120)
    replayed.assert_outcomes(passed=1)
    replayed.stdout.no_fnmatch_line("*UDP not replayed*")


def test_a_udp_server_slower_to_start_on_replay_than_when_recorded_still_gets_every_request(tmp_path):
    cassette = tmp_path / "udp.traffic"
    echo, ask = shlex.join([sys.executable, "-c", UDP_ECHO]), shlex.join([sys.executable, "-c", UDP_ASK])
    recorded = subprocess.run(
        [*NETPLAY, "record", "-f", str(cassette), echo, f"sleep 0.5; {ask}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert recorded.returncode == 0, recorded.stderr
    # On replay the server binds a second after the client's first request reaches its host.
    replayed = subprocess.run(
        [*NETPLAY, "replay", "--strict", "-f", str(cassette), f"sleep 1.5; {echo}", ask],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert replayed.returncode == 0, replayed.stderr
    assert "10.0.0.2 | q0" in replayed.stdout
