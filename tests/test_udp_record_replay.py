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

#: Answers each question with two datagrams (a reply and a trailer), binary, sizes differing.
SERVER = textwrap.dedent(
    f"""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", {PORT}))
    s.settimeout(30)
    for _ in range({len(QUESTIONS)}):
        data, sender = s.recvfrom(2048)
        s.sendto(data[:2] + b"\\x81\\x80" + bytes(range(len(data))), sender)
        s.sendto(b"end of " + data[:2], sender)
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


def record(cassette) -> bytes:
    with running("record", cassette) as sb:
        server, client = sb.add_host("server"), sb.add_host("client")
        server.spawn([sys.executable, "-c", SERVER])
        out, _ = client.spawn([sys.executable, "-c", CLIENT], stdout=PIPE).communicate(timeout=60)
    return out


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
