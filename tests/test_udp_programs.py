"""UDP between real programs: socat recorded and replayed, and ten thousand datagrams recorded, none lost."""

from __future__ import annotations

import shutil
import sys
import textwrap

import pytest

from pytest_netplayground.cassette import Cassette
from pytest_netplayground.core.events import Datagram, Direction
from pytest_netplayground.runtime.sandbox import PIPE
from tests.support.leaks import running

pytestmark = pytest.mark.root

PORT = 5353
ASK = f"printf 'hello udp\\n' | socat -t2 - UDP:10.0.0.1:{PORT}"
#: Waits (at most 10 s) until something listens on the UDP port in its host.
WAIT_LISTENING = f"for i in $(seq 200); do ss -Hunl 'sport = :{PORT}' | grep -q . && exit 0; sleep 0.05; done; exit 1"


def socat_server(host, transform: str):
    server = host.spawn(f"socat -T5 UDP-LISTEN:{PORT} SYSTEM:'stdbuf -oL {transform}'")
    assert host.spawn(WAIT_LISTENING).wait(timeout=30) == 0, "socat never listened"
    return server


@pytest.fixture
def socat_cassette(tmp_path):
    if shutil.which("socat") is None or shutil.which("stdbuf") is None or shutil.which("ss") is None:
        pytest.skip("socat, stdbuf or ss is not installed")
    cassette = tmp_path / "socat.jsonl"
    with running("record", cassette) as sb:
        server, client = sb.add_host("server"), sb.add_host("client")
        socat_server(server, "tr a-z A-Z")
        out, _ = client.spawn(ASK, stdout=PIPE).communicate(timeout=60)
    assert out == b"HELLO UDP\n"
    records = list(Cassette(cassette).records())
    assert [(d.direction, d.data) for d in records if isinstance(d, Datagram)] == [
        (Direction.C2S, b"hello udp\n"),
        (Direction.S2C, b"HELLO UDP\n"),
    ]
    return cassette


def test_socat_replayed_without_its_server(socat_cassette):
    with running("replay", socat_cassette) as sb:
        sb.add_host("server")
        out, _ = sb.add_host("client").spawn(ASK, stdout=PIPE).communicate(timeout=60)
    assert out == b"HELLO UDP\n"
    assert sb.divergences.ok, sb.divergences.format()


def test_socat_replayed_with_a_changed_server_running(socat_cassette):
    with running("replay", socat_cassette) as sb:
        server = sb.add_host("server")
        socat_server(server, "rev")
        out, _ = sb.add_host("client").spawn(ASK, stdout=PIPE).communicate(timeout=60)
    assert out == b"HELLO UDP\n"  # what was recorded, not what the running server said
    report = sb.divergences.format()
    assert "server datagram 0: differs at byte 0" in report and "got b'pdu olleh\\n'" in report, report


COUNT = 10_000
BURST = 50

#: Counts what it gets until the end marker (or 20 s of silence), then prints the count.
COUNTER = textwrap.dedent(
    """
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("", 6000))
    s.settimeout(20)
    print("ready", flush=True)
    count = 0
    try:
        while s.recv(2048) != b"end":
            count += 1
    except TimeoutError:
        pass
    print(count, flush=True)
    """
)

#: Sends COUNT numbered datagrams in bursts with a short rest after each: a modest rate.
SENDER = textwrap.dedent(
    f"""
    import socket, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("10.0.0.1", 6000))
    for i in range({COUNT}):
        s.send(b"datagram %05d " % i + bytes(i % 200))
        if i % {BURST} == {BURST} - 1:
            time.sleep(0.002)
    s.send(b"end")
    print("sent", {COUNT}, flush=True)
    """
)


def test_ten_thousand_datagrams_at_a_modest_rate_are_all_recorded(tmp_path):
    cassette = tmp_path / "many.jsonl"
    with running("record", cassette) as sb:
        server, client = sb.add_host("server"), sb.add_host("client")
        counter = server.spawn([sys.executable, "-c", COUNTER], stdout=PIPE)
        assert counter.stdout.readline() == b"ready\n"
        sent, _ = client.spawn([sys.executable, "-c", SENDER], stdout=PIPE).communicate(timeout=60)
        received, _ = counter.communicate(timeout=60)
    assert sent.split() == [b"sent", str(COUNT).encode()]
    assert int(received) == COUNT
    payloads = [r.data for r in Cassette(cassette).records() if isinstance(r, Datagram)]
    assert payloads[-1] == b"end"
    assert len(payloads) - 1 == COUNT
    assert payloads[1234] == b"datagram 01234 " + bytes(1234 % 200)
