"""Rootless: the same sandbox for an ordinary user, inside a user namespace of its own.

Each test forks a child of the test process that drops root (uid/gid 54321, no
capabilities) and, in a private mount namespace, sees ``/dev/net/tun`` as a
0666 node (or the machine's own 0600 device, or none); the machine's device
is never changed.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import socket
import sys
import tempfile
import textwrap

import pytest

from pytest_netplayground import PermissionProblem, Sandbox, SandboxError
from tests.support import leaks, unprivileged
from tests.support.unprivileged import GID, UID, run_unprivileged

pytestmark = pytest.mark.root


@pytest.fixture(autouse=True, scope="module")
def _modules_loaded():
    """The unprivileged child cannot read the interpreter's files: load what it uses first."""
    import pytest_netplayground.cassette  # noqa: F401
    import pytest_netplayground.cli  # noqa: F401
    import pytest_netplayground.core.render  # noqa: F401
    import pytest_netplayground.plugin  # noqa: F401

    with Sandbox(mode="live") as sb:
        sb.add_host().run(["true"], timeout=10)


@pytest.fixture
def user_dir():
    with unprivileged.user_dir() as path:
        yield path


def _live_checks() -> dict:
    with Sandbox() as sb:
        server, client = sb.add_host(), sb.add_host()
        listener = server.listen(9000)
        conn = client.connect(("10.0.0.1", 9000))
        accepted, peer = listener.accept()
        conn.sendall(b"ping")
        got = accepted.recv(10)
        conn.shutdown(socket.SHUT_WR)
        eof = accepted.recv(10)
        accepted.sendall(b"after eof")
        after = conn.recv(20)
        refused = client.socket()
        refused.settimeout(5)
        refused_code = refused.connect_ex(("10.0.0.1", 9999))
        unowned = client.socket()
        unowned.settimeout(5)
        unowned_code = unowned.connect_ex(("10.0.0.99", 80))
        receiver = server.udp_socket(("0.0.0.0", 5000))
        receiver.settimeout(5)
        client.udp_socket().sendto(b"datagram", ("10.0.0.1", 5000))
        datagram = receiver.recvfrom(100)
        ids = client.run("id -u; id -g", timeout=10).stdout.split()
        inodes = sb.namespace_inodes()
        pids = [sb.supervisor_pid]
    return {
        "peer": peer,
        "sockname": conn.getsockname(),
        "got": got,
        "eof": eof,
        "after": after,
        "refused": refused_code,
        "unowned": unowned_code,
        "datagram": datagram,
        "ids": [int(x) for x in ids],
        "inodes": inodes,
        "pids": pids,
    }


def test_live_mode_works_for_an_unprivileged_user():
    result = run_unprivileged(_live_checks)
    assert result["peer"] == result["sockname"] and result["peer"][0] == "10.0.0.2"
    assert (result["got"], result["eof"], result["after"]) == (b"ping", b"", b"after eof")
    assert result["refused"] == errno.ECONNREFUSED
    assert result["unowned"] == errno.EHOSTUNREACH
    assert result["datagram"][0] == b"datagram" and result["datagram"][1][0] == "10.0.0.2"


def test_processes_run_as_the_invoking_user():
    result = run_unprivileged(_live_checks)
    assert result["ids"] == [UID, GID]


def test_nothing_of_a_rootless_sandbox_remains():
    result = run_unprivileged(_live_checks)
    assert leaks.wait_until_gone(result["inodes"], result["pids"]) == []


def _record_then_replay(directory: str) -> dict:
    path = os.path.join(directory, "talk.netplay")

    def talk(sb, server_runs: bool) -> bytes:
        server, client = sb.add_host(), sb.add_host()
        listener = server.listen(7000) if server_runs else None
        conn = client.connect(("10.0.0.1", 7000))
        if listener is not None:
            accepted, _ = listener.accept()
            accepted.sendall(os.urandom(8).hex().encode())
            accepted.close()
        data = b""
        conn.settimeout(5)
        while chunk := conn.recv(100):
            data += chunk
        return data

    with Sandbox(mode="record", cassette=path) as sb:
        recorded = talk(sb, server_runs=True)
    with Sandbox(mode="replay", cassette=path) as sb:
        replayed = talk(sb, server_runs=False)
    stat = os.stat(path)
    return {
        "recorded": recorded,
        "replayed": replayed,
        "ok": sb.divergences.ok,
        "owner": (stat.st_uid, stat.st_gid),
    }


def test_record_and_replay_work_for_an_unprivileged_user(user_dir):
    result = run_unprivileged(_record_then_replay, user_dir)
    assert len(result["recorded"]) == 16
    assert result["replayed"] == result["recorded"]
    assert result["ok"]


def test_written_cassette_belongs_to_the_invoking_user(user_dir):
    result = run_unprivileged(_record_then_replay, user_dir)
    assert result["owner"] == (UID, GID)


PLUGIN_SUITE = textwrap.dedent(
    """
    def test_talk(netplay):
        server, client = netplay.add_host(), netplay.add_host()
        listener = server.listen(7000) if netplay.mode != "replay" else None
        conn = client.connect(("10.0.0.1", 7000))
        if listener is not None:
            accepted, _ = listener.accept()
            accepted.sendall(b"hello from " + accepted.getsockname()[0].encode())
            accepted.close()
        conn.settimeout(5)
        assert conn.recv(100) == b"hello from 10.0.0.1"
    """
)


def _pytest_in_process(directory: str, *options: str) -> tuple[int, str]:
    """Run PLUGIN_SUITE with pytest in this process; its exit code and what it printed."""
    import pytest as inner_pytest

    with open(os.path.join(directory, "test_rootless_suite.py"), "w") as f:
        f.write(PLUGIN_SUITE)
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    out = io.StringIO()
    real_stdout = sys.stdout
    sys.stdout = out
    try:
        code = inner_pytest.main(
            [directory, "-p", "pytest_netplayground.plugin", "-p", "no:cacheprovider", "-q", *options]
            + ["--rootdir", directory, "-c", os.devnull]
        )
    finally:
        sys.stdout = real_stdout
    return int(code), out.getvalue()


def _run_plugin(directory: str) -> dict:
    codes, output = {}, ""
    for mode in ("record", "replay"):
        codes[mode], printed = _pytest_in_process(directory, f"--netplay={mode}")
        output += printed
    cassette = os.path.join(directory, "cassettes", "test_rootless_suite", "test_talk.netplay")
    return {"codes": codes, "output": output, "cassette_owner": os.stat(cassette).st_uid}


def test_plugin_records_and_replays_for_an_unprivileged_user(user_dir):
    result = run_unprivileged(_run_plugin, user_dir)
    assert result["codes"] == {"record": 0, "replay": 0}, result["output"]
    assert "1 cassette recorded" in result["output"] and "1 cassette replayed" in result["output"]
    assert result["cassette_owner"] == UID


def _start() -> None:
    Sandbox().start().close()


def test_inaccessible_tun_device_is_a_clear_error():
    with pytest.raises(PermissionProblem, match=r"/dev/net/tun is not accessible to uid 54321.*0666"):
        run_unprivileged(_start, tun="host")


def test_missing_tun_device_is_a_clear_error():
    with pytest.raises(SandboxError, match=r"/dev/net/tun does not exist"):
        run_unprivileged(_start, tun="absent")


def test_user_namespaces_switched_off_names_the_sysctl():
    with pytest.raises(
        PermissionProblem, match=r"user\.max_user_namespaces = 0.*sysctl -w user\.max_user_namespaces"
    ):
        run_unprivileged(_start, limit_userns=True)


def _spawn_as_other_user() -> None:
    with Sandbox() as sb:
        sb.add_host().spawn(["true"], user=0)


def test_running_a_command_as_another_user_is_a_clear_error():
    with pytest.raises(SandboxError, match="runs without root"):
        run_unprivileged(_spawn_as_other_user)


def _cli_without_permission() -> tuple[int, str]:
    from pytest_netplayground import cli

    err = io.StringIO()
    real = sys.stderr
    sys.stderr = err
    try:
        code = cli.main(["run", "true"])
    finally:
        sys.stderr = real
    return code, err.getvalue()


def test_cli_says_what_is_missing_without_permission():
    code, message = run_unprivileged(_cli_without_permission, tun="host")
    assert code == 1
    assert message.startswith("netplay: error: /dev/net/tun is not accessible")


def _run_plugin_without_tun(directory: str) -> tuple[int, str]:
    return _pytest_in_process(directory, "-rE", "--netplay=record")


def test_plugin_reports_the_missing_permission_as_a_setup_error_once(user_dir):
    code, output = run_unprivileged(_run_plugin_without_tun, user_dir, tun="host")
    assert code == 1, output
    assert "1 error" in output
    assert "cannot start the sandbox: /dev/net/tun is not accessible to uid 54321" in output
    # Once in the error's own section; pytest's one-line summary below it may
    # repeat it in full (it does not cut the line short when CI is set).
    report = output.split("short test summary info")[0]
    assert report.count("/dev/net/tun is not accessible") == 1, output
    assert "During handling" not in output


def test_a_setup_error_while_recording_leaves_no_cassette_directory(user_dir):
    code, output = run_unprivileged(_run_plugin_without_tun, user_dir, tun="host")
    assert code == 1, output
    assert sorted(os.listdir(user_dir)) == ["test_rootless_suite.py"]


def _temporary_entries() -> set[str]:
    return set(os.listdir(tempfile.gettempdir()))


def test_the_unprivileged_runs_leave_nothing_in_the_temporary_directory():
    before = _temporary_entries()
    for tun in ("open", "absent"):
        with pytest.raises(SandboxError) if tun == "absent" else contextlib.nullcontext():
            run_unprivileged(_start, tun=tun)
    with unprivileged.user_dir() as path:
        run_unprivileged(_record_then_replay, path)
    assert _temporary_entries() == before
