"""IPv6 between hosts, live: each host's own address beside its IPv4 one, ping -6, UDP, nothing outside.

TCP over IPv6 has its own module, test_ipv6_tcp.py.
"""

from __future__ import annotations

import errno
import socket

import pytest

from pytest_netplayground import Sandbox
from pytest_netplayground.core.addressing6 import default_subnet6
from tests.support.unprivileged import run_unprivileged

pytestmark = pytest.mark.root

IPV6_RECVERR = 25  # linux/in6.h; not exported by the socket module


def test_hosts_get_ipv6_addresses_of_the_same_index_in_the_derived_prefix(sandbox):
    a, b = sandbox.add_host(), sandbox.add_host()
    prefix = default_subnet6(sandbox.subnet)
    assert (a.address6, b.address6) == (prefix.host_address(0), prefix.host_address(1))
    r = b.run("ip -6 -o addr show dev eth0", timeout=10)
    assert f"inet6 {b.address6}/64" in r.stdout.decode()
    assert "fe80" not in r.stdout.decode()


def test_a_given_subnet6_is_used():
    with Sandbox(subnet6="fd00:7::/64") as sb:
        assert sb.add_host().address6 == "fd00:7::1"


@pytest.mark.needs("ping")
def test_ping6_between_hosts_and_to_the_own_loopback(sandbox):
    a, b = sandbox.add_host(), sandbox.add_host()
    r = a.run(["ping", "-6", "-c", "2", "-W", "3", b.address6], timeout=15)
    assert r.returncode == 0, r.stdout + r.stderr
    assert b"2 received" in r.stdout
    r = a.run(["ping", "-6", "-c", "1", "-W", "3", "::1"], timeout=15)
    assert r.returncode == 0, r.stdout + r.stderr


def _udp_exchange(a, b) -> tuple[bytes, tuple, bytes, tuple]:
    server = b.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    server.bind(("::", 5353))
    server.settimeout(5)
    client = a.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    client.settimeout(5)
    client.sendto(b"question", (b.address6, 5353))
    request, peer = server.recvfrom(100)
    server.sendto(b"answer", peer)
    answer, source = client.recvfrom(100)
    return request, peer, answer, source


def test_a_python_udp_exchange_over_ipv6_sees_real_addresses(sandbox):
    a, b = sandbox.add_host(), sandbox.add_host()
    request, peer, answer, source = _udp_exchange(a, b)
    assert (request, peer[0], answer, source[:2]) == (b"question", a.address6, b"answer", (b.address6, 5353))


def test_an_unowned_address_of_the_prefix_is_unreachable_at_once(sandbox):
    a = sandbox.add_host()
    unowned = default_subnet6(sandbox.subnet).host_address(99)
    sock = a.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.settimeout(5)
    # Address unreachable is a soft error for UDP: reported to sockets that ask for errors.
    sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
    sock.connect((unowned, 9))
    sock.send(b"anyone?")
    with pytest.raises(OSError) as info:
        sock.recv(10)
    assert info.value.errno == errno.EHOSTUNREACH
    assert sandbox.stats()["dropped"]["ipv6: no such host"] == 1


def test_addresses_outside_the_sandbox_have_no_route(sandbox):
    a = sandbox.add_host()
    sock = a.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with pytest.raises(OSError) as info:
        sock.sendto(b"x", ("2001:db8::1", 53))
    assert info.value.errno == errno.ENETUNREACH


def test_names_resolve_to_both_addresses(sandbox):
    a, b = sandbox.add_host(), sandbox.add_host("server")
    r = a.run(["getent", "ahosts", "server"], timeout=10)
    found = {line.split()[0] for line in r.stdout.decode().splitlines()}
    assert found == {b.address, b.address6}


def _rootless_ipv6() -> dict:
    with Sandbox() as sb:
        a, b = sb.add_host(), sb.add_host()
        request, peer, answer, source = _udp_exchange(a, b)
        return {"request": request, "peer": peer[0], "answer": answer, "a": a.address6}


def test_ipv6_between_hosts_works_for_an_unprivileged_user():
    import pytest_netplayground.core.router6  # noqa: F401  (the child cannot read the interpreter's files)

    result = run_unprivileged(_rootless_ipv6)
    assert (result["request"], result["answer"], result["peer"]) == (b"question", b"answer", result["a"])
