"""`netplay run`: one host per command, prefixed output, the first failure's exit code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.support import leaks

NETPLAY = [sys.executable, "-m", "pytest_netplayground"]


def netplay(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*NETPLAY, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.root
def test_each_command_gets_the_next_address_and_prefixed_output():
    first = "hostname -I | cut -d' ' -f1"  # the IPv4 address comes first
    r = netplay("run", f"{first}; echo one", f"{first}; echo two")
    assert r.returncode == 0, r.stderr
    lines = sorted(r.stdout.splitlines())
    assert "10.0.0.1 | one" in lines
    assert "10.0.0.2 | two" in lines
    assert "10.0.0.1 | 10.0.0.1" in lines
    assert "10.0.0.2 | 10.0.0.2" in lines


@pytest.mark.root
def test_stderr_lines_are_prefixed_on_stderr():
    r = netplay("run", "echo oops >&2")
    assert r.stderr == "10.0.0.1 | oops\n"


@pytest.mark.root
@pytest.mark.needs("socat")
def test_server_and_client_talk_through_the_sandbox():
    server = (
        f"{sys.executable} -c \"import socket; s=socket.socket(); s.bind(('',9000)); s.listen(); "
        "c,a=s.accept(); c.sendall(('hello '+a[0]).encode()); c.close()\""
    )
    client = "sleep 0.5; socat -u TCP:10.0.0.1:9000 STDOUT; echo"
    r = netplay("run", server, client)
    assert r.returncode == 0, r.stderr
    assert "10.0.0.2 | hello 10.0.0.2" in r.stdout.splitlines()


@pytest.mark.root
def test_exit_code_is_the_first_commands_failure():
    r = netplay("run", "exit 0", "exit 3", "exit 5")
    assert r.returncode == 3


@pytest.mark.root
def test_command_not_found_exits_127_for_that_host():
    r = netplay("run", "no-such-command-here")
    assert r.returncode == 127
    assert "10.0.0.1 | " in r.stderr and "not found" in r.stderr


@pytest.mark.root
def test_commands_run_as_given_uid():
    r = netplay("run", "-u", "65534", "-g", "65534", "id -u; id -g")
    assert r.stdout.splitlines() == ["10.0.0.1 | 65534", "10.0.0.1 | 65534"]


@pytest.mark.root
def test_sigterm_stops_children_with_the_kill_signal_and_tears_down():
    proc = subprocess.Popen(
        [*NETPLAY, "run", "-k", "INT", "trap 'echo got-int; exit 7' INT; echo ready; sleep 1000 & wait"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline() == "10.0.0.1 | ready\n"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "10.0.0.1 | got-int" in out


@pytest.mark.root
def test_verbose_logs_packets():
    r = netplay("run", "-v", "ping -c 1 -W 1 10.0.0.2", "sleep 2")
    assert "10.0.0.1 > 10.0.0.2 ICMP type 8" in r.stderr


def test_malformed_subnet_is_a_clear_error():
    r = netplay("run", "-s", "10.0.0.0/33", "true")
    assert r.returncode == 1
    assert "10.0.0.0/33" in r.stderr and "netplay: error" in r.stderr


def test_malformed_subnet6_is_a_clear_error():
    r = netplay("run", "--subnet6", "fd00::1", "true")
    assert r.returncode == 1
    assert "netplay: error: malformed subnet6 'fd00::1'" in r.stderr and "like 'fd00:1::/64'" in r.stderr


@pytest.mark.root
def test_subnet6_gives_the_hosts_their_ipv6_addresses():
    r = netplay("run", "--subnet6", "fd00:5::/64", "ip -6 -o addr show dev eth0")
    assert r.returncode == 0, r.stderr
    assert "inet6 fd00:5::1/64" in r.stdout


def test_more_commands_than_addresses_is_a_clear_error():
    r = netplay("run", "-s", "10.0.0.0/30", "true", "true", "true")
    assert r.returncode == 1
    assert "3 commands" in r.stderr and "room for 2 hosts" in r.stderr


def test_no_permission_to_make_namespaces_says_what_is_needed():
    if os.geteuid() != 0:
        pytest.skip("runs as root and drops privileges itself")
    r = subprocess.run(
        ["setpriv", "--bounding-set=-all", "--inh-caps=-all", *NETPLAY, "run", "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert "netplay: error" in r.stderr
    assert "root" in r.stderr or "CAP_" in r.stderr


_ = leaks


@pytest.mark.root
def test_shipped_demo_runs_server_and_client():
    r = netplay(
        "run",
        f"{sys.executable} -m pytest_netplayground.examples.echo_server",
        f"{sys.executable} -m pytest_netplayground.examples.echo_client 10.0.0.1 hi",
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "10.0.0.2 | HI" in lines
    assert any(line.startswith("10.0.0.1 | connection from 10.0.0.2:") for line in lines)
