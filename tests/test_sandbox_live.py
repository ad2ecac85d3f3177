"""Live mode: processes in hosts talk as if on a real network, and cannot tell."""

from __future__ import annotations

import errno
import hashlib
import selectors
import socket
import struct
import subprocess
import sys
import time

import pytest

from pytest_netplayground import ConfigError, NetplayTimeout, Sandbox

pytestmark = pytest.mark.root


def test_hosts_get_addresses_in_creation_order(sandbox):
    hosts = [sandbox.add_host(), sandbox.add_host(name="b"), sandbox.add_host()]
    assert [h.address for h in hosts] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert hosts[1].name == "b"


def test_host_sees_only_its_address_on_its_interface(sandbox):
    host = sandbox.add_host()
    r = host.run(
        [
            "python3",
            "-c",
            "import socket; s=socket.socket(2,2); s.connect(('10.0.0.9',9)); print(s.getsockname()[0])",
        ],
        timeout=10,
    )
    assert r.stdout.decode().strip() == "10.0.0.1"


def test_server_and_client_see_each_others_real_address_and_port(sandbox):
    server, client = sandbox.add_host(), sandbox.add_host()
    listener = server.listen(9000)
    conn = client.connect(("10.0.0.1", 9000))
    accepted, peer = listener.accept()
    assert peer == conn.getsockname()
    assert peer[0] == "10.0.0.2"
    assert conn.getpeername() == ("10.0.0.1", 9000)
    assert accepted.getsockname() == ("10.0.0.1", 9000)


def test_bytes_flow_both_ways(sandbox):
    server, client = sandbox.add_host(), sandbox.add_host()
    listener = server.listen(9000)
    conn = client.connect(("10.0.0.1", 9000))
    accepted, _ = listener.accept()
    conn.sendall(b"ping")
    assert accepted.recv(10) == b"ping"
    accepted.sendall(b"pong")
    assert conn.recv(10) == b"pong"


def test_connect_to_port_without_listener_is_refused(sandbox):
    sandbox.add_host()
    client = sandbox.add_host()
    with pytest.raises(ConnectionRefusedError):
        client.connect(("10.0.0.1", 9999))


def test_refused_connect_was_never_accepted(sandbox):
    """The client gets ECONNREFUSED at once, not a connection that is then closed."""
    sandbox.add_host()
    client = sandbox.add_host()
    sock = client.socket()
    sock.settimeout(5)
    assert sock.connect_ex(("10.0.0.1", 9999)) == errno.ECONNREFUSED


def test_connect_to_unowned_subnet_address_fails_promptly(sandbox):
    client = sandbox.add_host()
    start = time.monotonic()
    with pytest.raises(OSError) as info:
        client.connect(("10.0.0.200", 80), timeout=10)
    assert info.value.errno == errno.EHOSTUNREACH
    assert time.monotonic() - start < 2


def test_half_close_reaches_peer_as_eof_while_other_direction_flows(sandbox):
    server, client = sandbox.add_host(), sandbox.add_host()
    listener = server.listen(9000)
    conn = client.connect(("10.0.0.1", 9000))
    accepted, _ = listener.accept()
    conn.sendall(b"request")
    conn.shutdown(socket.SHUT_WR)
    accepted.settimeout(5)
    received = b""
    while chunk := accepted.recv(100):
        received += chunk
    assert received == b"request"
    accepted.sendall(b"response after eof")
    accepted.close()
    conn.settimeout(5)
    assert conn.recv(100) == b"response after eof"


def test_abortive_close_reaches_peer_as_reset(sandbox):
    server, client = sandbox.add_host(), sandbox.add_host()
    listener = server.listen(9000)
    conn = client.connect(("10.0.0.1", 9000))
    accepted, _ = listener.accept()
    accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    accepted.close()
    conn.settimeout(5)
    with pytest.raises(ConnectionResetError):
        while conn.recv(100):
            pass


def test_udp_datagram_between_hosts(sandbox):
    a, b = sandbox.add_host(), sandbox.add_host()
    receiver = a.udp_socket(("0.0.0.0", 5000))
    receiver.settimeout(5)
    sender = b.udp_socket()
    sender.sendto(b"datagram", ("10.0.0.1", 5000))
    data, source = receiver.recvfrom(100)
    assert data == b"datagram"
    assert source[0] == "10.0.0.2"


@pytest.mark.needs("ping")
def test_ping_between_hosts(sandbox):
    sandbox.add_host()
    b = sandbox.add_host()
    r = b.run(["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.0.1"], timeout=10)
    assert r.returncode == 0, r.stdout


def test_host_cannot_reach_root_namespace_loopback(sandbox):
    outside = socket.socket()
    outside.bind(("127.0.0.1", 0))
    outside.listen()
    port = outside.getsockname()[1]
    host = sandbox.add_host()
    try:
        with pytest.raises(ConnectionRefusedError):
            host.connect(("127.0.0.1", port), timeout=3)
    finally:
        outside.close()


def test_host_cannot_reach_addresses_outside_the_subnet(sandbox):
    host = sandbox.add_host()
    sock = host.socket()
    sock.settimeout(3)
    # No route leaves the sandbox: the kernel answers at once.
    assert sock.connect_ex(("192.0.2.1", 80)) == errno.ENETUNREACH


def test_ipv6_to_an_address_outside_the_sandbox_is_dropped_and_counted(sandbox):
    a = sandbox.add_host()
    key = "ipv6: outside subnet"
    before = sandbox.stats()["dropped"].get(key, 0)
    # No route leads there, so the packet is written below routing: to 2001:db8::1.
    script = (
        "import socket\n"
        "s=socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM)\n"
        "pkt=bytes([0x60,0,0,0,0,0,59,64])+bytes(16)+bytes([0x20,1,0xd,0xb8])+bytes(11)+bytes([1])\n"
        "s.sendto(pkt, ('eth0', 0x86DD))\n"
    )
    r = a.run([sys.executable, "-c", script], timeout=10)
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 3
    while sandbox.stats()["dropped"].get(key, 0) <= before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sandbox.stats()["dropped"].get(key, 0) == before + 1


def test_spawned_process_output_and_exit_code(sandbox):
    host = sandbox.add_host()
    r = host.run("echo out; echo err >&2; exit 3", timeout=10)
    assert (r.returncode, r.stdout, r.stderr) == (3, b"out\n", b"err\n")


def test_run_passes_input_and_text(sandbox):
    host = sandbox.add_host()
    r = host.run(["cat"], input="hello", text=True, timeout=10)
    assert r.stdout == "hello"


def test_run_timeout_kills_the_process(sandbox):
    host = sandbox.add_host()
    with pytest.raises(subprocess.TimeoutExpired):
        host.run(["sleep", "30"], timeout=0.3)


def test_command_not_found_is_a_clear_error(sandbox):
    host = sandbox.add_host()
    with pytest.raises(FileNotFoundError, match="no-such-command"):
        host.spawn(["no-such-command"])


def test_spawn_is_popen_like(sandbox):
    host = sandbox.add_host()
    proc = host.spawn(["sleep", "30"])
    assert proc.poll() is None
    proc.terminate()
    assert proc.wait(timeout=5) == -15


def test_spawn_runs_as_given_uid_and_gid(sandbox):
    host = sandbox.add_host()
    r = host.run(["id", "-u"], user=65534, group=65534, timeout=10)
    assert r.stdout.strip() == b"65534"


def test_wait_for_port_returns_once_listening(sandbox):
    server = sandbox.add_host()
    server.spawn(
        [
            sys.executable,
            "-c",
            "import socket,time; time.sleep(0.3); s=socket.socket(); "
            "s.bind(('0.0.0.0', 8123)); s.listen(); time.sleep(30)",
        ]
    )
    server.wait_for_port(8123, timeout=10)
    client = sandbox.add_host()
    client.connect(("10.0.0.1", 8123)).close()


def test_wait_for_port_times_out_with_clear_error(sandbox):
    server = sandbox.add_host()
    server.spawn(["sh", "-c", "exit 4"])
    with pytest.raises(NetplayTimeout, match=r"port 8124 in host h1 \(10.0.0.1\).*exited with 4"):
        server.wait_for_port(8124, timeout=0.5)


@pytest.mark.needs("curl")
def test_http_server_and_curl(sandbox):
    server, client = sandbox.add_host(name="server"), sandbox.add_host()
    server.spawn(
        [sys.executable, "-m", "http.server", "8000", "--bind", "10.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
    )
    server.wait_for_port(8000, timeout=10)
    r = client.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://10.0.0.1:8000/"], timeout=10
    )
    assert r.stdout == b"200"


def test_malformed_subnet_is_rejected_before_anything_is_made():
    with pytest.raises(ConfigError, match="'10.0.0.300/24'"):
        Sandbox("10.0.0.300/24")


def test_too_many_hosts_for_subnet(sandbox_small=None):
    with Sandbox("10.9.0.0/30") as sb:
        sb.add_host()
        sb.add_host()
        with pytest.raises(ConfigError, match="room for 2 hosts"):
            sb.add_host()


def _pattern(seed: int, size: int) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


def test_64_concurrent_connections_among_3_hosts_arrive_intact(sandbox):
    """50 MB each way on each of 64 connections; checked by sha256 on arrival."""
    size = 50 * 1000 * 1000
    hosts = [sandbox.add_host() for _ in range(3)]
    listeners = [h.listen(7000 + i, backlog=128) for i, h in enumerate(hosts)]
    pairs = []
    for i in range(64):
        src = hosts[i % 3]
        dst_index = (i + 1 + (i // 3) % 2) % 3
        client = src.connect((hosts[dst_index].address, 7000 + dst_index))
        server, _ = listeners[dst_index].accept()
        pairs.append((client, server, i))
    sel = selectors.DefaultSelector()
    state = {}
    for client, server, i in pairs:
        for sock, peer_seed in ((client, 2 * i), (server, 2 * i + 1)):
            sock.setblocking(False)
            state[sock] = {
                "out": memoryview(_pattern(peer_seed + 1000 * (sock is server), size)),
                "sent": 0,
                "hash": hashlib.sha256(),
                "got": 0,
            }
            sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    expected = {}
    for client, server, i in pairs:
        expected[client] = hashlib.sha256(_pattern(2 * i + 1 + 1000, size)).hexdigest()
        expected[server] = hashlib.sha256(_pattern(2 * i, size)).hexdigest()
    deadline = time.monotonic() + 600
    open_socks = len(state)
    while open_socks and time.monotonic() < deadline:
        for key, events in sel.select(1):
            sock, st = key.fileobj, state[key.fileobj]
            if events & selectors.EVENT_WRITE and st["sent"] < size:
                st["sent"] += sock.send(st["out"][st["sent"] : st["sent"] + (1 << 20)])
                if st["sent"] >= size:
                    sock.shutdown(socket.SHUT_WR)
            if events & selectors.EVENT_READ:
                data = sock.recv(1 << 20)
                st["hash"].update(data)
                st["got"] += len(data)
                st["eof"] = not data
            wanted = (selectors.EVENT_WRITE if st["sent"] < size else 0) | (
                0 if st.get("eof") else selectors.EVENT_READ
            )
            if not wanted:
                sel.unregister(sock)
                open_socks -= 1
            elif wanted != key.events:
                sel.modify(sock, wanted)
    assert open_socks == 0, "transfer did not finish in time"
    for sock, st in state.items():
        assert st["got"] == size
        assert st["hash"].hexdigest() == expected[sock]


ESCAPE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
try:
    fd = os.open("/proc/1/ns/net", os.O_RDONLY)
except OSError as exc:
    print("open refused", exc.errno)
else:
    print("setns refused" if libc.setns(fd, 0x40000000) != 0 else "ESCAPED")
"""


def test_root_in_a_host_cannot_enter_the_machines_network_namespace(sandbox):
    host = sandbox.add_host()
    r = host.run([sys.executable, "-c", ESCAPE], timeout=10)
    assert r.returncode == 0, r.stderr
    assert b"ESCAPED" not in r.stdout
    assert r.stdout.startswith((b"open refused", b"setns refused"))


@pytest.mark.needs("ip")
def test_root_in_a_host_has_power_over_its_own_interfaces(sandbox):
    host = sandbox.add_host()
    r = host.run("ip link set dev eth0 mtu 1500 && ip -o link show eth0", timeout=10)
    assert r.returncode == 0, r.stderr
    assert b"mtu 1500" in r.stdout


def test_processes_lists_every_spawned_process_in_order(sandbox):
    a, b = sandbox.add_host(), sandbox.add_host()
    spawned = [a.spawn(["true"]), b.spawn(["true"]), a.spawn(["sh", "-c", "exit 3"])]
    assert sandbox.processes == tuple(spawned)
    assert [p.host for p in sandbox.processes] == [a, b, a]
    assert [p.wait(timeout=10) for p in sandbox.processes] == [0, 0, 3]
