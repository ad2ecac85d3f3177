"""A real capture of the tunnel's sockets (tcpdump in a sandbox host), decoded with the key."""

from __future__ import annotations

import random
import subprocess
import sys
import time

import pytest
from scapy.utils import RawPcapReader

from pytest_netplayground import Sandbox
from pytest_netplayground.runtime.keyfile import read_key_file, write_key_file
from pytest_netplayground.tunnel_capture import decode_tunnel_capture

pytestmark = [pytest.mark.root, pytest.mark.needs("tcpdump")]

PORT = 50000
COUNT = 20

#: Both ends of a tunnel over real sockets: the agent echoes every packet it opens.
PROGRAM = r'''
import random, socket, sys
from pytest_netplayground.core.tunnel_crypto import Handshake
from pytest_netplayground.runtime.keyfile import read_key_file

role, key_file, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
key = read_key_file(key_file)

def shake(sock, side):
    sock.sendall(side.initial())
    while not side.done:
        data = sock.recv(4096)
        if not data:
            side.eof()
        out = side.receive(data)
        if out:
            sock.sendall(out)

def packets():
    rng = random.Random(1)
    return [bytes([0x45]) + rng.randbytes(19 + 60 * i) for i in range(count)]

if role == "agent":
    listener = socket.create_server(("0.0.0.0", 50000))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", 50000))
    listener.settimeout(20)
    udp.settimeout(20)
    print("ready", flush=True)
    conn, _ = listener.accept()
    conn.settimeout(20)
    side = Handshake.agent(key)
    shake(conn, side)
    channel = side.keys.datagrams()
    for _ in range(count):
        datagram, peer = udp.recvfrom(65536)
        udp.sendto(channel.seal(channel.open(datagram)), peer)
else:
    agent = sys.argv[4]
    sock = socket.create_connection((agent, 50000), timeout=20)
    side = Handshake.supervisor(key)
    shake(sock, side)
    channel = side.keys.datagrams()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.settimeout(20)
    for packet in packets():
        udp.sendto(channel.seal(packet), (agent, 50000))
        assert channel.open(udp.recv(65536)) == packet
    print("echoed", count, flush=True)
'''


def _wait_for_file(path, size: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size >= size):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)


def test_a_tcpdump_capture_of_the_tunnel_decodes_to_the_packets_both_ways(tmp_path):
    key_file = write_key_file(tmp_path / "tunnel.key")
    program = tmp_path / "ends.py"
    program.write_text(PROGRAM)
    capture = tmp_path / "tunnel.pcap"
    with Sandbox() as sb:
        agent_host, supervisor_host = sb.add_host("agent"), sb.add_host("supervisor")
        dump = agent_host.spawn(
            ["tcpdump", "-i", "any", "-U", "-Z", "root", "-s", "0", "-w", str(capture), f"port {PORT}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_file(capture, 24)  # the file header: tcpdump is capturing
        time.sleep(0.5)
        agent = agent_host.spawn(
            [sys.executable, str(program), "agent", key_file, str(COUNT)], stdout=subprocess.PIPE
        )
        agent_host.wait_for_port(PORT, timeout=10)
        result = supervisor_host.run(
            [sys.executable, str(program), "supervisor", key_file, str(COUNT), agent_host.address], timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"echoed {COUNT}".encode()
        assert agent.wait(timeout=30) == 0
        time.sleep(0.5)
        dump.terminate()
        dump.wait(timeout=10)

    output = tmp_path / "inner.pcap"
    decoded = decode_tunnel_capture(capture, read_key_file(key_file), output)
    assert decoded.notes == {"sessions": 1}
    assert decoded.dropped == {}
    inner = [data for data, _ in RawPcapReader(str(output))]
    rng = random.Random(1)
    sent = [bytes([0x45]) + rng.randbytes(19 + 60 * i) for i in range(COUNT)]
    assert inner == [p for packet in sent for p in (packet, packet)]  # each packet, then its echo

