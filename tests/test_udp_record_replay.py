"""UDP between real processes: a DNS-like exchange recorded datagram by datagram, then replayed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pytest_netplayground.cassette import Cassette
from pytest_netplayground.core.events import Datagram, Direction, UdpFlow
from pytest_netplayground.runtime.sandbox import PIPE
from tests.support.leaks import running

pytestmark = pytest.mark.root

PORT = 5300
QUESTIONS = [b"\x12\x34\x01\x00 A example.test", b"\x12\x35\x01\x00 AAAA example.test", b"\x00" * 3]

#: Answers each question with two datagrams (a reply and a trailer), binary, sizes differing;
#: prints each question it got. Given an argument, its trailers say so (a changed server).
SERVER = textwrap.dedent(
    f"""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", {PORT}))
    s.settimeout(30)
    trailer = sys.argv[1].encode() if len(sys.argv) > 1 else b"end of "
    print("ready", flush=True)
    for _ in range({len(QUESTIONS)}):
        data, sender = s.recvfrom(2048)
        print(repr(data), flush=True)
        s.sendto(data[:2] + b"\\x81\\x80" + bytes(range(len(data))), sender)
        s.sendto(trailer + data[:2], sender)
    """
)

#: Asks each question once the server answers (a question refused before it bound is asked again).
CLIENT = textwrap.dedent(
    f"""
    import socket, sys, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("10.0.0.1", {PORT}))
    s.settimeout(10)
    for question in {QUESTIONS!r}:
        while True:
            s.send(question)
            try:
                answers = [s.recv(2048), s.recv(2048)]
                break
            except ConnectionRefusedError:
                time.sleep(0.1)
        sys.stdout.write(repr(answers) + "\\n")
    """
)


def expected_answers(question: bytes) -> list[bytes]:
    return [question[:2] + b"\x81\x80" + bytes(range(len(question))), b"end of " + question[:2]]


def record(cassette, wait_for_server: bool = False) -> bytes:
    with running("record", cassette) as sb:
        server, client = sb.add_host("server"), sb.add_host("client")
        proc = server.spawn([sys.executable, "-c", SERVER], stdout=PIPE)
        if wait_for_server:
            assert proc.stdout.readline() == b"ready\n"
        out, _ = client.spawn([sys.executable, "-c", CLIENT], stdout=PIPE).communicate(timeout=60)
    return out


def ask(sb, questions, port=PORT, server=None) -> list:
    """What a client in a new host gets for each question (its replies, or the error it met).

    With ``server`` (a host whose server is running), the client asks it;
    otherwise a new host in which nothing runs stands for the server.
    """
    program = textwrap.dedent(
        f"""
        import socket, sys
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("10.0.0.1", {port}))
        s.settimeout(10)
        for question in {questions!r}:
            s.send(question)
            try:
                print(repr([s.recv(2048), s.recv(2048)]), flush=True)
            except OSError as exc:
                print(type(exc).__name__, flush=True)
        """
    )
    if server is None:
        sb.add_host("server")  # in which nothing runs: the cassette answers for it
    client = sb.add_host("client")
    out, _ = client.spawn([sys.executable, "-c", program], stdout=PIPE).communicate(timeout=60)
    return out.decode().splitlines()


@pytest.fixture
def recorded(tmp_path):
    cassette = tmp_path / "dns.jsonl"
    record(cassette, wait_for_server=True)
    return cassette


def test_the_cassette_answers_for_an_absent_udp_server_byte_for_byte(recorded):
    with running("replay", recorded) as sb:
        got = ask(sb, QUESTIONS)
    assert got == [repr(expected_answers(q)) for q in QUESTIONS]
    assert sb.divergences.ok, sb.divergences.format()


def test_a_changed_udp_request_is_answered_as_recorded_and_reported(recorded):
    changed = [QUESTIONS[0], b"\x12\x35\x01\x00 AAAA changed.test", QUESTIONS[2]]
    with running("replay", recorded) as sb:
        got = ask(sb, changed)
    assert got[1] == repr(expected_answers(QUESTIONS[1]))
    report = sb.divergences.format()
    assert "differ" in report and "UDP" in report, report


def test_a_udp_port_the_recording_never_saw_is_refused_as_a_closed_port(recorded):
    with running("replay", recorded) as sb:
        got = ask(sb, [QUESTIONS[0]], port=PORT + 1)
    assert got == ["ConnectionRefusedError"]


def test_every_datagram_of_a_dns_like_exchange_is_recorded(tmp_path):
    cassette = tmp_path / "dns.jsonl"
    out = record(cassette)
    assert out.decode().splitlines() == [repr(expected_answers(q)) for q in QUESTIONS]
    records = list(Cassette(cassette).records())
    [flow] = [r for r in records if isinstance(r, UdpFlow)]
    assert flow.client.host == "10.0.0.2" and str(flow.server) == f"10.0.0.1:{PORT}"
    datagrams = [(d.direction, d.data) for d in records if isinstance(d, Datagram)]
    expected = []
    for question in QUESTIONS:
        expected += [(Direction.C2S, question)] + [(Direction.S2C, a) for a in expected_answers(question)]
    # A question sent before the server bound was refused (ICMP): it is recorded, unanswered.
    while datagrams[:1] == [(Direction.C2S, QUESTIONS[0])] and datagrams[1:2] == datagrams[:1]:
        datagrams.pop(0)
    assert datagrams == expected

    from pytest_netplayground.export_pcap import export_pcap

    assert export_pcap(cassette, tmp_path / "dns.pcap") >= len(expected)
    shown = subprocess.run(
        [sys.executable, "-m", "pytest_netplayground", "show", str(cassette)], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert f"UDP flow 0 {flow.client} -> 10.0.0.1:{PORT}" in shown.stdout


def test_a_running_udp_server_gets_the_recorded_requests_and_the_client_the_recorded_replies(recorded):
    """The live server answers otherwise (its trailers changed) and is asked a changed question:
    it gets the recorded question, the client the recorded answers, and both changes are reported."""
    changed = [QUESTIONS[0], b"\x12\x35\x01\x00 AAAA changed.test", QUESTIONS[2]]
    with running("replay", recorded) as sb:
        host = sb.add_host("server")
        server = host.spawn([sys.executable, "-c", SERVER, "changed "], stdout=PIPE)
        assert server.stdout.readline() == b"ready\n"
        got = ask(sb, changed, server=host)
        heard, _ = server.communicate(timeout=60)
    assert got == [repr(expected_answers(q)) for q in QUESTIONS]
    assert heard.decode().splitlines() == [repr(q) for q in QUESTIONS]
    report = sb.divergences.format()
    assert "client datagram 1: differs at byte 10" in report, report
    assert "server datagram 1: differs at byte 0" in report, report
    assert "not replayed" not in report, report


def test_a_running_udp_server_answering_as_recorded_is_no_divergence(recorded):
    with running("replay", recorded) as sb:
        host = sb.add_host("server")
        server = host.spawn([sys.executable, "-c", SERVER], stdout=PIPE)
        assert server.stdout.readline() == b"ready\n"
        got = ask(sb, QUESTIONS, server=host)
        server.communicate(timeout=60)
    assert got == [repr(expected_answers(q)) for q in QUESTIONS]
    assert sb.divergences.ok, sb.divergences.format()


#: Binds only after a while, then answers one question. (Not too long a while: the
#: kernel refuses at most a burst of 6 datagrams of a peer at once, then one a second.)
LATE_SERVER = textwrap.dedent(
    f"""
    import socket, time
    time.sleep(0.3)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", {PORT}))
    s.settimeout(30)
    data, sender = s.recvfrom(2048)
    s.sendto(b"late answer to " + data, sender)
    """
)

#: Asks until answered, printing each refusal (a connected socket reads ECONNREFUSED).
IMPATIENT_CLIENT = textwrap.dedent(
    f"""
    import socket, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("10.0.0.1", {PORT}))
    s.settimeout(2)
    for _ in range(50):
        s.send(b"anyone?")
        try:
            print(repr(s.recv(2048)), flush=True)
            break
        except ConnectionRefusedError:
            print("refused", flush=True)
            time.sleep(0.1)
        except TimeoutError:
            print("no answer", flush=True)
    """
)


def test_refusals_are_recorded_and_replayed_to_a_connected_socket(tmp_path):
    from pytest_netplayground.core.events import Refusal

    cassette = tmp_path / "late.jsonl"
    with running("record", cassette) as sb:
        server, client = sb.add_host("server"), sb.add_host("client")
        server.spawn([sys.executable, "-c", LATE_SERVER])
        out, _ = client.spawn([sys.executable, "-c", IMPATIENT_CLIENT], stdout=PIPE).communicate(timeout=60)
    lines = out.decode().splitlines()
    assert lines[-1] == repr(b"late answer to anyone?") and "refused" in lines, lines
    refusals = [r for r in Cassette(cassette).records() if isinstance(r, Refusal)]
    assert len(refusals) == lines.count("refused")
    assert {(r.flow, r.direction) for r in refusals} == {(0, Direction.C2S)}

    with running("replay", cassette) as sb:
        sb.add_host("server")  # nothing runs in it: the cassette refuses and answers
        client = sb.add_host("client")
        again, _ = client.spawn([sys.executable, "-c", IMPATIENT_CLIENT], stdout=PIPE).communicate(timeout=60)
    assert again.decode().splitlines() == lines
    assert sb.divergences.ok, sb.divergences.format()
