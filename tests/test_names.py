"""Host names: every host resolves every host's name (and ``hN``) and knows its own."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

import pytest_netplayground.runtime.supervisor  # noqa: F401  (loaded before a test drops root)
from pytest_netplayground import ConfigError, Sandbox
from pytest_netplayground.cassette import Cassette
from pytest_netplayground.core.addressing6 import default_subnet6
from tests.support import leaks
from tests.support.unprivileged import run_unprivileged

pytestmark = pytest.mark.root

NEEDS_CURL = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def _leftover_directories() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "netplay-names-*")))


@pytest.fixture
def named(sandbox):
    """A sandbox with a host named server (10.0.0.1) and one named client (10.0.0.2)."""
    return sandbox, sandbox.add_host(name="server"), sandbox.add_host(name="client")


@NEEDS_CURL
def test_curl_reaches_a_server_by_its_name_and_its_default_name(named, tmp_path):
    sandbox, server, client = named
    (tmp_path / "hello.txt").write_text("hello by name\n")
    server.spawn(
        [sys.executable, "-m", "http.server", "8000"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server.wait_for_port(8000, timeout=10)
    for url in ("http://server:8000/hello.txt", "http://h1:8000/hello.txt"):
        result = client.run(["curl", "-sS", "--max-time", "5", url], timeout=15)
        assert result.returncode == 0, result.stderr
        assert result.stdout == b"hello by name\n"


def test_python_resolves_other_hosts_and_its_own_name(named):
    _, server, client = named
    code = (
        "import socket; n = socket.gethostname(); "
        "print(n, socket.gethostbyname(n), socket.gethostbyname('server'), socket.gethostbyname('h2'))"
    )
    result = client.run([sys.executable, "-c", code], timeout=15, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["client", "10.0.0.2", "10.0.0.1", "10.0.0.2"]


def test_getent_finds_every_name_through_nsswitch(named):
    _, server, client = named
    # getent hosts asks for IPv6 first: every name has both addresses.
    result = server.run("getent hosts client h1", timeout=10, text=True)
    assert result.returncode == 0, result.stderr
    assert [line.split() for line in result.stdout.splitlines()] == [
        [client.address6, "client", "h2"],
        [server.address6, "server", "h1"],
    ]
    ipv4 = server.run("getent ahostsv4 client", timeout=10, text=True)
    assert ipv4.stdout.split()[:3] == ["10.0.0.2", "STREAM", "client"], ipv4.stderr
    loopback = server.run("getent ahostsv4 localhost", timeout=10, text=True)
    assert loopback.stdout.split()[:3] == ["127.0.0.1", "STREAM", "localhost"], loopback.stderr


def test_hostname_prints_the_name_or_the_default_name(sandbox):
    named, unnamed = sandbox.add_host(name="web"), sandbox.add_host()
    assert unnamed.name == "h2"
    assert named.run("hostname; cat /etc/hostname", timeout=10).stdout.split() == [b"web", b"web"]
    assert unnamed.run("hostname; cat /etc/hostname", timeout=10).stdout.split() == [b"h2", b"h2"]


def test_a_host_added_later_resolves_in_processes_already_running(named):
    sandbox, server, _ = named
    waiting = server.spawn("read go; getent hosts late h3", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    sandbox.add_host(name="late")
    out, _ = waiting.communicate(b"go\n", timeout=10)
    assert waiting.returncode == 0
    late = sandbox.host("late").address6
    assert [line.split() for line in out.decode().splitlines()] == [[late, "late", "h3"]] * 2


def test_names_resolve_for_a_process_run_as_another_user(named):
    _, server, client = named
    result = server.run("id -un; getent hosts client", user="nobody", timeout=10, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["nobody", client.address6, "client", "h2"]


def test_hosts_still_see_the_machines_file_system(named, tmp_path):
    _, server, _ = named
    (tmp_path / "in").write_text("from the test\n")
    result = server.run("cat in && echo from the host > out && pwd", cwd=tmp_path, timeout=10, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["from the test", str(tmp_path)]
    assert (tmp_path / "out").read_text() == "from the host\n"


def test_the_machine_keeps_its_own_names_and_no_file_of_the_hosts_is_on_disk():
    with open("/etc/hosts", "rb") as f:
        hosts_before = f.read()
    hostname_before = os.uname().nodename
    directories_before = _leftover_directories()
    with Sandbox() as sb:
        host = sb.add_host(name="elsewhere")
        assert host.run("hostname", timeout=10).stdout == b"elsewhere\n"
        # Mounted, then unlinked: nothing to leave behind even if the supervisor is killed.
        assert _leftover_directories() == directories_before
    with open("/etc/hosts", "rb") as f:
        assert f.read() == hosts_before
    assert os.uname().nodename == hostname_before
    assert _leftover_directories() == directories_before


@pytest.mark.parametrize(
    "bad, message",
    [
        ("web_server", "'web_server' is not a DNS label"),
        ("h3", "'h3' is the default name of host number 3"),
        ("Server", "'Server' is already taken"),
        ("localhost", "reserved"),
    ],
)
def test_bad_names_are_refused_and_the_sandbox_goes_on(sandbox, bad, message):
    sandbox.add_host(name="server")
    with pytest.raises(ConfigError, match=message):
        sandbox.add_host(name=bad)
    second = sandbox.add_host()
    assert (second.name, second.address) == ("h2", "10.0.0.2")
    assert second.run("getent ahostsv4 h2", timeout=10).stdout.split()[:3] == [b"10.0.0.2", b"STREAM", b"h2"]
    assert sandbox.host("h1").name == "server"


def test_names_are_written_in_the_cassette_and_shown(tmp_path):
    path = tmp_path / "named.netplay"
    with Sandbox(mode="record", cassette=path) as sb:
        server, client = sb.add_host(name="server"), sb.add_host(name="client")
        listener = server.listen(7000)
        conn = client.connect((server.address, 7000))
        accepted, _ = listener.accept()
        accepted.sendall(b"hi")
        assert conn.recv(2) == b"hi"
        conn.close()
        accepted.close()
    header = Cassette(path).header
    assert [(h.address, h.name) for h in header.hosts] == [("10.0.0.1", "server"), ("10.0.0.2", "client")]
    shown = subprocess.run(
        [sys.executable, "-m", "pytest_netplayground", "show", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert f"  10.0.0.1  {server.address6}  server\n" in shown.stdout
    assert "-> 10.0.0.1:7000 established  [client -> server]" in shown.stdout


def _rootless_names() -> dict:
    with Sandbox() as sb:
        sb.add_host(name="server")
        resolved = sb.add_host().run("hostname; getent hosts server h2", timeout=10, text=True)
        inodes, pids = sb.namespace_inodes(), [sb.supervisor_pid]
    return {"out": resolved.stdout, "err": resolved.stderr, "inodes": inodes, "pids": pids}


def test_names_work_for_an_unprivileged_user():
    directories_before = _leftover_directories()
    result = run_unprivileged(_rootless_names)
    prefix = default_subnet6("10.0.0.0/24")
    assert [line.split() for line in result["out"].splitlines()] == [
        ["h2"],
        [prefix.host_address(0), "server", "h1"],
        [prefix.host_address(1), "h2"],
    ], result["err"]
    assert leaks.wait_until_gone(result["inodes"], result["pids"]) == []
    assert _leftover_directories() == directories_before


def test_an_nsswitch_that_does_not_read_files_first_is_replaced_in_the_hosts(tmp_path, monkeypatch):
    from pytest_netplayground.runtime import hostfs

    machine = tmp_path / "nsswitch.conf"
    machine.write_text("passwd: files\nhosts: dns files\n")
    # The supervisor is forked from this process: it reads and covers this file instead.
    monkeypatch.setattr(hostfs, "NSSWITCH", str(machine))
    fresh = Sandbox()
    with fresh:
        seen = fresh.add_host().run(["cat", str(machine)], timeout=10, text=True).stdout
    assert seen == "passwd: files\nhosts:\tfiles dns\n"
    assert machine.read_text() == "passwd: files\nhosts: dns files\n"


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def test_hosts_follow_what_the_machine_mounts_later_and_never_the_reverse(sandbox, tmp_path):
    if shutil.which("mount") is None:
        pytest.skip("mount is not installed")
    outer = tmp_path / "outer"
    outer.mkdir()
    _mount("-t", "tmpfs", "-o", "size=64k", "netplay-outer", str(outer))
    try:
        _mount("--make-shared", str(outer))
        host = sandbox.add_host(name="follower")
        (outer / "inner").mkdir()
        _mount("-t", "tmpfs", "-o", "size=64k", "netplay-inner", str(outer / "inner"))
        try:
            (outer / "inner" / "note").write_text("mounted after the host was made\n")
            seen = host.run(["cat", str(outer / "inner" / "note")], timeout=10, text=True)
            host.run(["mkdir", str(outer / "from-host")], timeout=10)
            made = host.run(["mount", "-t", "tmpfs", "netplay-host", str(outer / "from-host")], timeout=10)
        finally:
            subprocess.run(["umount", str(outer / "inner")], check=True)
        assert seen.stdout == "mounted after the host was made\n", seen.stderr
        assert made.returncode == 0, made.stderr
        assert not os.path.ismount(outer / "from-host"), "a host's mount reached the machine"
    finally:
        subprocess.run(["umount", str(outer)], check=True)
