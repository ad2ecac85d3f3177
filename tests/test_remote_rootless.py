"""Remote hosts with no root on either end: the agent and the sandbox run as an ordinary user,
each in its own "machine" (a network namespace of the test's making)."""

from __future__ import annotations

import contextlib
import encodings.idna  # noqa: F401  (socket.create_connection needs it in the unprivileged child)
import os
import shutil
import signal
import socket
import sys
import time

import pytest

from pytest_netplayground.core.tunnel_crypto import Handshake
from pytest_netplayground.runtime import agent, agent_link, agent_session, netns, remote_hosts, supervisor  # noqa: F401
from tests.support import machines as m
from tests.support import unprivileged

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs the ip command (iproute2) to make the machines"),
    pytest.mark.needs("socat"),
]


def _warm_up() -> None:
    """Import all the crypto needs now: the unprivileged children may not read the interpreter's files."""
    key = bytes(32)
    one, other = Handshake.supervisor(key), Handshake.agent(key)
    to_agent = one.initial()
    for _ in range(4):
        to_supervisor = other.receive(to_agent) if to_agent else b""
        to_agent = one.receive(to_supervisor) if to_supervisor else b""
    assert one.done and other.done
    for side in (one, other):
        if side.keys is not None:
            side.keys.control().seal(b"x")
            side.keys.datagrams().seal(b"x")


_warm_up()


@contextlib.contextmanager
def in_namespace(name: str):
    """This (single-threaded) process in network namespace ``name``, then back home."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        netns.setns(target)
        yield
    finally:
        netns.setns(home)
        os.close(home)
        os.close(target)


def start_agent(machines, key: str, log: str) -> int:
    """The agent as uid 54321 in machine B, forked from this process (the interpreter's files may be
    out of that user's reach); its pid."""
    out = os.open(log, os.O_WRONLY | os.O_CREAT, 0o644)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the agent
        code = 1
        try:
            os.dup2(out, 2)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            netns.setns(os.open(f"/run/netns/{machines.b}", os.O_RDONLY))
            unprivileged._private_tun("open")
            os.setgroups([])
            os.setresgid(unprivileged.GID, unprivileged.GID, unprivileged.GID)
            os.setresuid(unprivileged.UID, unprivileged.UID, unprivileged.UID)
            code = agent.Agent(machines.agent_address, key).serve()
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(out)
    deadline = time.monotonic() + 10
    while b"listening on" not in open(log, "rb").read():
        assert time.monotonic() < deadline, open(log).read()
        time.sleep(0.05)
    return pid


def _remote_echo(address: str, key: str, cassette: str) -> dict:
    from pytest_netplayground import Sandbox

    with Sandbox(agents={"b": address}, key_file=key, mode="record", cassette=cassette) as sb:
        client = sb.add_host("client")
        server = sb.add_host("server", on="b")
        listener = server.spawn(["socat", "TCP-LISTEN:7000,reuseaddr", "SYSTEM:'echo hello; head -c 5'"])
        server.wait_for_port(7000, timeout=10)
        with client.connect(("10.0.0.2", 7000), timeout=10) as conn:
            greeting = conn.makefile("rb").readline()
            conn.sendall(b"ping!")
            conn.shutdown(socket.SHUT_WR)
        listener.wait(10)
        who = server.run(["id", "-u"], timeout=10).stdout
    return {"greeting": greeting, "who": who, "code": listener.returncode}


def test_remote_hosts_work_with_no_root_on_either_machine(tmp_path):
    if netns.userns_blockers():
        pytest.skip(f"unprivileged user namespaces are off here: {netns.userns_blockers()}")
    machines = m.make_machines(tmp_path)
    agent = None
    try:
        with unprivileged.user_dir() as path:
            key = os.path.join(path, "tunnel.key")
            shutil.copy(machines.key, key)
            os.chown(key, unprivileged.UID, unprivileged.GID)
            os.chmod(key, 0o600)
            log = os.path.join(path, "agent.log")
            agent = start_agent(machines, key, log)
            cassette = os.path.join(path, "remote.traffic")
            with in_namespace(machines.a):
                result = unprivileged.run_unprivileged(_remote_echo, machines.agent_address, key, cassette)
            assert result["greeting"] == b"hello\n"
            assert result["who"].strip() == str(unprivileged.UID).encode()
            assert os.stat(cassette).st_uid == unprivileged.UID
            os.kill(agent, signal.SIGTERM)
            _, status = os.waitpid(agent, 0)
            agent = None
            assert os.waitstatus_to_exitcode(status) == 0, open(log).read()
            assert m.pids_in(machines.b) == []
    finally:
        if agent is not None:
            os.kill(agent, signal.SIGKILL)
            os.waitpid(agent, 0)
        m.remove(machines.a, machines.b)
