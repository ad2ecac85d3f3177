"""Nothing leaks: whatever way a sandbox ends, no namespace, process or device of it remains."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pytest_netplayground import Sandbox
from tests.support import leaks

pytestmark = pytest.mark.root

MAKER = textwrap.dedent(
    """
    import json, sys, time
    from pytest_netplayground import Sandbox
    sb = Sandbox().start()
    hosts = [sb.add_host(), sb.add_host()]
    procs = [h.spawn(["sleep", "1000"]) for h in hosts]
    print(json.dumps({"supervisor": sb.supervisor_pid, "children": [p.pid for p in procs],
                      "namespaces": sb.namespace_inodes()}), flush=True)
    time.sleep(1000)
    """
)


def test_daemon_that_double_forks_is_gone_after_teardown():
    sb = Sandbox().start()
    host = sb.add_host()
    marker = b"sleep\x00999.25\x00"
    host.run(["sh", "-c", "setsid sh -c 'sleep 999.25 >/dev/null 2>&1 &' "], timeout=10)
    daemons = [int(p) for p in os.listdir("/proc") if p.isdigit() and leaks.cmdline(int(p)) == marker]
    assert len(daemons) == 1 and leaks.alive(daemons[0])
    sb.close()
    assert leaks.wait_until_gone(pids=daemons) == []


def test_close_stops_processes_and_frees_namespaces():
    sb = Sandbox().start()
    host = sb.add_host()
    proc = host.spawn(["sleep", "1000"])
    inodes = sb.namespace_inodes()
    assert leaks.netns_holders(set(inodes)), "the check must see live namespaces"
    sb.close()
    assert leaks.wait_until_gone(inodes, [proc.pid, sb.supervisor_pid or 0]) == []
    assert proc.returncode == -signal.SIGTERM


def test_child_ignoring_the_kill_signal_is_killed_after_grace():
    sb = Sandbox(grace=0.5).start()
    host = sb.add_host()
    proc = host.spawn(["sh", "-c", "trap '' TERM; sleep 1000 & wait"])
    time.sleep(0.2)
    inodes = sb.namespace_inodes()
    start = time.monotonic()
    sb.close()
    assert time.monotonic() - start < 5
    assert leaks.wait_until_gone(inodes, [proc.pid]) == []
    assert proc.returncode == -signal.SIGKILL


def test_configurable_kill_signal_is_used():
    sb = Sandbox(kill_signal="INT").start()
    proc = sb.add_host().spawn(["sleep", "1000"])
    sb.close()
    assert proc.returncode == -signal.SIGINT


def test_sigkill_of_the_process_that_made_the_sandbox_leaves_nothing():
    maker = subprocess.Popen([sys.executable, "-c", MAKER], stdout=subprocess.PIPE, text=True)
    info = json.loads(maker.stdout.readline())
    assert all(leaks.alive(pid) for pid in info["children"])
    maker.kill()
    maker.wait()
    left = leaks.wait_until_gone(info["namespaces"], info["children"] + [info["supervisor"]])
    assert left == []


def test_sigkill_of_the_cli_leaves_nothing():
    cli = subprocess.Popen(
        [sys.executable, "-m", "pytest_netplayground", "run", "sleep 1000", "sleep 1000"],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    sleepers: list[int] = []
    while time.monotonic() < deadline and len(sleepers) < 2:
        supervisors = leaks.children_of(cli.pid)
        sleepers = [pid for pid in leaks.descendants(cli.pid) if leaks.cmdline(pid) == b"sleep\x001000\x00"]
        time.sleep(0.05)
    assert len(sleepers) == 2, "the CLI did not start its two commands"
    inodes = set()
    for pid in sleepers:
        inodes.add(os.stat(f"/proc/{pid}/ns/net").st_ino)
    supervisor = supervisors[0]
    cli.send_signal(signal.SIGKILL)
    cli.wait()
    left = leaks.wait_until_gone(inodes, sleepers + [supervisor])
    assert left == []


def test_operations_after_close_raise_a_clear_error():
    from pytest_netplayground import SandboxClosed

    sb = Sandbox().start()
    host = sb.add_host()
    sb.close()
    with pytest.raises(SandboxClosed):
        host.spawn(["true"])
    with pytest.raises(SandboxClosed):
        sb.add_host()


def test_sigterm_to_the_clis_whole_process_group_leaves_nothing():
    """As ``timeout netplay run ...`` does: the CLI and its supervisor get SIGTERM at once.

    ``; true`` makes the shell fork the server instead of exec'ing it, so the
    server is a grandchild that no parent-death signal reaches.
    """
    server = f"{sys.executable} -m http.server 8765 --bind 10.0.0.1; true"
    cli = subprocess.Popen(
        [sys.executable, "-m", "pytest_netplayground", "run", server, "sleep 1000; true"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    servers: list[int] = []
    while time.monotonic() < deadline and not servers:
        servers = [pid for pid in leaks.descendants(cli.pid) if b"http.server\x008765" in leaks.cmdline(pid)]
        time.sleep(0.05)
    assert servers, "the CLI did not start its server"
    pids = leaks.descendants(cli.pid)
    inodes = {os.stat(f"/proc/{pid}/ns/net").st_ino for pid in servers}
    os.killpg(cli.pid, signal.SIGTERM)
    cli.wait(30)
    assert leaks.wait_until_gone(inodes, pids) == []
