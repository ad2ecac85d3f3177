"""Hostile input and isolation: what root inside a host can and cannot do to the sandbox.

Malformed and forged packets thrown at the router, a connect its client
abandons, two sandboxes side by side, a host reaching for the machine's own
loopback and addresses; and the control channel under a report of any size.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import select
import socket
import struct
import sys
import textwrap
import time

import pytest

from pytest_netplayground import Sandbox
from pytest_netplayground.cassette import CassetteWriter
from pytest_netplayground.core.addressing import AddressPlan
from pytest_netplayground.core.events import (
    ConnectionOpened,
    Header,
    Outcome,
)
from pytest_netplayground.core.router import Router, Verdict
from pytest_netplayground.runtime import proxy
from tests.support import leaks

pytestmark = pytest.mark.root

PORT = 9000

# -- 6. hostile packets --------------------------------------------------------------

# Root in a host writes each (ethertype, bytes) record of a file to eth0 as it
# is, a few at a time; prints one hex digit pair per packet: 01 sent, 00 refused.
SENDER = textwrap.dedent(
    """
    import socket, struct, sys, time
    blob = open(sys.argv[1], "rb").read()
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM)
    sent, pos = bytearray(), 0
    while pos < len(blob):
        proto, n = struct.unpack_from("!HH", blob, pos)
        packet = blob[pos + 4 : pos + 4 + n]
        pos += 4 + n
        try:
            s.sendto(packet, ("eth0", proto))
            sent.append(1)
        except OSError:
            sent.append(0)
        if len(sent) % 20 == 0:
            time.sleep(0.002)
    print(sent.hex())
    """
)


def hostile_packets(rng: random.Random) -> list[tuple[int, bytes]]:
    """About 2000 malformed, damaged and misaddressed packets, from host 10.0.0.1."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_Router_Alert, IPOption_RR
    from scapy.layers.inet6 import IPv6

    ipv4, ipv6 = 0x0800, 0x86DD
    me, peer = "10.0.0.1", "10.0.0.2"
    destinations = [peer, peer, me, "10.0.0.77", "10.0.0.0", "10.0.0.255", "198.51.100.7", "255.255.255.255"]
    sources = [me, me, me, peer, "10.0.0.77", "198.51.100.7", "0.0.0.0"]

    def port() -> int:
        return rng.choice([PORT, 9001, 22, 0, rng.randrange(65536)])

    def transport():
        kind = rng.randrange(3)
        if kind == 0:
            return TCP(sport=port(), dport=port(), flags=rng.randrange(256), seq=rng.randrange(1 << 32))
        if kind == 1:
            return UDP(sport=port(), dport=port())
        return ICMP(type=rng.choice([0, 3, 5, 8, 11, rng.randrange(256)]), code=rng.randrange(16))

    def packet(**ip_fields) -> bytes:
        layer = IP(src=rng.choice(sources), dst=rng.choice(destinations), **ip_fields)
        return bytes(layer / transport() / rng.randbytes(rng.randrange(64)))

    out: list[tuple[int, bytes]] = []
    for _ in range(300):  # random bytes
        out.append((rng.choice([ipv4, ipv6]), rng.randbytes(rng.randrange(1, 200))))
    for _ in range(200):  # random bytes behind a plausible first byte
        out.append((ipv4, bytes([0x45]) + rng.randbytes(rng.randrange(19, 120))))
    for _ in range(200):  # total length that does not match
        raw = bytearray(packet())
        struct.pack_into("!H", raw, 2, rng.choice([0, 19, len(raw) - 1, len(raw) + 1, 65535]))
        out.append((ipv4, bytes(raw)))
    for _ in range(150):  # header length below 20 bytes or beyond the packet
        raw = bytearray(packet())
        raw[0] = 0x40 | rng.choice([0, 1, 4, 15])
        out.append((ipv4, bytes(raw)))
    for _ in range(200):  # fragments, first and later ones
        frag = rng.choice([1, 100, 8191])
        flags = rng.choice(["MF", 0])
        out.append((ipv4, packet(flags=flags, frag=frag if flags == 0 else rng.choice([0, frag]))))
    for _ in range(200):  # bad IP or transport checksums
        raw = bytearray(packet())
        spot = rng.choice([10, 20 + 16, 20 + 6, 20 + 2])
        if spot < len(raw):
            raw[spot] ^= 0xFF
        out.append((ipv4, bytes(raw)))
    for _ in range(150):  # IP options
        options = rng.choice([[IPOption_NOP()] * 4, [IPOption_RR()], [IPOption_Router_Alert()]])
        out.append((ipv4, packet(options=options)))
    for _ in range(200):  # TCP headers cut short or with a bad data offset
        raw = bytearray(packet())
        if raw[9] == 6:
            if rng.random() < 0.5:
                raw = raw[: 20 + rng.randrange(20)]
                struct.pack_into("!H", raw, 2, len(raw))
            else:
                raw[20 + 12] = rng.choice([0, 4, 15]) << 4
        out.append((ipv4, bytes(raw)))
    for _ in range(200):  # IPv6, sent as IPv6
        layer = IPv6(src="fd00::1", dst=rng.choice(["fd00::2", "::1", "ff02::1"]))
        out.append((ipv6, bytes(layer / rng.choice([TCP(dport=PORT, flags="S"), UDP(dport=PORT), b"x" * 8]))))
    for _ in range(200):  # well-formed, oddly addressed
        out.append((ipv4, packet()))
    rng.shuffle(out)
    return out


def model_drops(sb: Sandbox, packets: list[tuple[int, bytes]]) -> tuple[int, int]:
    """(packets a router of these hosts drops or answers, packets it passes on)."""
    router = Router(AddressPlan(str(sb.subnet)))
    for host in sb.hosts:
        router.add_host(host.index, host.address)
    dropped = passed = 0
    for _, raw in packets:
        verdict = router.from_host(bytearray(raw), len(raw))
        if verdict in (Verdict.DROP, Verdict.REPLY):
            dropped += 1
        else:
            passed += 1
    return dropped, passed


def settled_drops(sb: Sandbox, quiet: float = 0.3, timeout: float = 10.0) -> int:
    """The router's drop total once it has stopped changing for ``quiet`` seconds."""
    last, since = None, time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        total = sum(sb.stats()["dropped"].values())
        if total != last:
            last, since = total, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
        time.sleep(0.05)
    return last


@pytest.fixture(scope="module")
def flooded(tmp_path_factory):
    """Two hosts, after root in the first wrote ~2000 hostile packets to its eth0.

    Yields (sandbox, sender host, peer host, router drops before, after, model).
    """
    with leaks.running() as sb:
        sender, peer = sb.add_host("sender"), sb.add_host("peer")
        listener = peer.listen(PORT)  # a server for hostile SYNs to find
        packets = hostile_packets(random.Random(20261121))
        blob = tmp_path_factory.mktemp("hostile") / "packets.bin"
        blob.write_bytes(b"".join(struct.pack("!HH", proto, len(raw)) + raw for proto, raw in packets))
        before = settled_drops(sb)
        result = sender.run([sys.executable, "-c", SENDER, str(blob)], timeout=60)
        assert result.returncode == 0, result.stderr
        sent = bytes.fromhex(result.stdout.decode().strip())
        assert len(sent) == len(packets) and sum(sent) > 0.95 * len(packets)
        after = settled_drops(sb)
        model = model_drops(sb, [p for p, ok in zip(packets, sent) if ok])
        yield sb, sender, peer, before, after, model
        listener.close()


def test_hostile_packets_leave_the_supervisor_running(flooded):
    sb = flooded[0]
    assert leaks.alive(sb.supervisor_pid)
    assert sb.stats()["dropped"]


def test_hostile_packets_leave_tcp_between_hosts_working(flooded):
    _, sender, peer, *_ = flooded
    listener = peer.listen(PORT + 1)
    conn = sender.connect(("10.0.0.2", PORT + 1))
    accepted, address = listener.accept()
    assert address[0] == "10.0.0.1"
    conn.sendall(b"still here?")
    assert accepted.recv(100) == b"still here?"
    accepted.sendall(b"yes")
    assert conn.recv(100) == b"yes"


def test_hostile_packets_leave_udp_between_hosts_working(flooded):
    _, sender, peer, *_ = flooded
    receiver = peer.udp_socket(("0.0.0.0", PORT + 2))
    receiver.settimeout(5)
    sender.udp_socket().sendto(b"datagram", ("10.0.0.2", PORT + 2))
    data, (source, _) = receiver.recvfrom(100)
    assert (data, source) == (b"datagram", "10.0.0.1")


def test_hostile_packets_are_counted_as_drops(flooded):
    _, _, _, before, after, (dropped, passed) = flooded
    # Each packet the router refuses is counted once; one passed on may at
    # most draw one more drop (a write the kernel refused, or its answer to
    # an address no host owns).
    assert dropped > 1000
    assert dropped <= after - before <= dropped + passed, (after - before, dropped, passed)


def test_a_connect_its_client_abandons_is_reset_at_the_server(monkeypatch):
    """The proxy connects the server before the client's handshake completes;
    a client that gives up in between (or a forged SYN) must not leave the
    server a connection that never ends, nor the supervisor a pipe."""
    monkeypatch.setattr(proxy, "CLIENT_PATIENCE", 0.5)
    with Sandbox() as sb:
        server, client = sb.add_host("server"), sb.add_host("client")
        listener = server.listen(PORT)
        listener.settimeout(5)
        sock = client.socket()
        sock.setblocking(False)
        sock.connect_ex(("10.0.0.1", PORT))
        sock.close()
        accepted, _ = listener.accept()
        accepted.settimeout(5)
        with pytest.raises(ConnectionResetError):
            accepted.recv(10)
        assert sb.stats()["pipes"] == 0


# -- 7. isolation --------------------------------------------------------------------

# Answers every connection on port 9000 with the banner in argv[1].
BANNER_SERVER = textwrap.dedent(
    """
    import socket, sys
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", 9000))
    listener.listen()
    while True:
        conn, _ = listener.accept()
        conn.sendall(sys.argv[1].encode())
        conn.close()
    """
)


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(1024):
        data += chunk
    return data


def test_two_sandboxes_with_the_same_subnet_each_reach_their_own_server(sandbox):
    with leaks.running() as other:
        clients = []
        for sb, banner in ((sandbox, "first"), (other, "second")):
            server = sb.add_host("server")
            server.spawn([sys.executable, "-c", BANNER_SERVER, banner])
            server.wait_for_port(PORT)
            clients.append(sb.add_host("client"))
        # Both connections open at once, to the same address and port.
        first, second = (client.connect(("10.0.0.1", PORT)) for client in clients)
        assert (read_all(first), read_all(second)) == (b"first", b"second")


@pytest.fixture
def machine_listener():
    """A TCP listener on the machine's loopback, outside every sandbox."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    yield listener
    listener.close()


def nothing_to_accept(listener: socket.socket, seconds: float = 0.2) -> bool:
    return not select.select([listener], [], [], seconds)[0]


def test_a_host_cannot_reach_a_server_on_the_machines_loopback(sandbox, machine_listener):
    host = sandbox.add_host()
    with pytest.raises(ConnectionRefusedError):
        host.connect(machine_listener.getsockname(), timeout=2)
    assert nothing_to_accept(machine_listener)


def test_loopback_in_a_host_is_the_hosts_own(sandbox, machine_listener):
    host = sandbox.add_host()
    own = host.listen(machine_listener.getsockname()[1], address="127.0.0.1")
    conn = host.connect(machine_listener.getsockname(), timeout=2)
    accepted, _ = own.accept()
    conn.sendall(b"mine")
    assert accepted.recv(10) == b"mine"
    assert nothing_to_accept(machine_listener)


def machine_addresses() -> list[str]:
    """The IPv4 addresses of the machine's own network namespace, but loopback."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        found = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=socket.AF_INET)}
    with contextlib.suppress(OSError):
        found |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    return sorted(a for a in found if not a.startswith("127."))


def test_a_host_cannot_reach_the_machines_own_addresses(sandbox):
    addresses = machine_addresses()
    if not addresses:
        pytest.skip("the machine has no IPv4 address but loopback")
    host = sandbox.add_host()
    for address in addresses:
        listener = socket.socket()
        listener.bind((address, 0))
        listener.listen()
        try:
            sock = host.socket()
            sock.settimeout(2)
            outcome = sock.connect_ex(listener.getsockname())
            sock.close()
            assert outcome in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EAGAIN, errno.ETIMEDOUT), (
                address,
                os.strerror(outcome),
            )
            assert nothing_to_accept(listener), f"a host reached {address}"
        finally:
            listener.close()


# -- the control channel and process exits -------------------------------------------


def test_a_replay_report_larger_than_one_control_message_reaches_close(tmp_path):
    """20000 recorded connections never opened on replay: a report of over a megabyte."""
    cassette = tmp_path / "many.netplay"
    header = Header("10.0.0.0/24", started=1732170000.0, tool_version="0.1.0")
    with CassetteWriter(cassette, header) as writer:
        for conn in range(20000):
            opened = ConnectionOpened(0.001, conn, ("10.0.0.2", 40000), ("10.0.0.1", PORT), Outcome.REFUSED)
            writer.write(opened)
        writer.commit(1.0)
    sb = Sandbox(mode="replay", cassette=cassette).start()
    sb.close()
    assert len(sb.divergences) == 20000


def test_poll_notices_a_process_exit_on_its_own(sandbox):
    proc = sandbox.add_host().spawn(["true"])
    deadline = time.monotonic() + 5
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() == 0
