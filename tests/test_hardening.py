"""Hardening: what the sandbox does when things go wrong around it or are thrown at it.

Kills in the middle of a recording, a full or unwritable disk. (Hostile
input and isolation: ``test_hostile.py``; sustained load: ``test_load.py``.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pytest_netplayground import CassetteError, NetplayError, Sandbox, SandboxClosed
from pytest_netplayground.cassette import Cassette, CassetteWriter, partial_path_for
from pytest_netplayground.core.events import (
    Closed,
    ConnectionOpened,
    Data,
    Direction,
    Header,
)
from tests.support import leaks, programs

pytestmark = pytest.mark.root

PORT = 9000
REPO = Path(__file__).resolve().parents[1]

# -- helpers -------------------------------------------------------------------------

# Streams numbered chunks to the first client, one every 5 ms, until killed.
STREAM_SERVER = textwrap.dedent(
    """
    import socket, time
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", 9000))
    listener.listen()
    conn, _ = listener.accept()
    for i in range(100000):
        conn.sendall(b"chunk %05d\\n" % i)
        time.sleep(0.005)
    """
)

# Connects to 10.0.0.1:9000 (retrying until it listens) and reads to the end.
STREAM_CLIENT = textwrap.dedent(
    """
    import socket, time
    for _ in range(1000):
        try:
            conn = socket.create_connection(("10.0.0.1", 9000))
            break
        except OSError:
            time.sleep(0.01)
    while conn.recv(65536):
        pass
    """
)

# Sends 1 MiB of binary bytes (4/3 as much once base64 in a cassette) and closes.
BULK_SERVER = textwrap.dedent(
    """
    import socket
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", 9000))
    listener.listen()
    conn, _ = listener.accept()
    conn.sendall(bytes(range(256)) * 4096)
    conn.close()
    """
)

BULK_CLIENT = STREAM_CLIENT


def python_command(script: str) -> str:
    """A shell command running ``script`` with this interpreter."""
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(script)}"


def write_good_cassette(path: Path) -> bytes:
    """A small, complete cassette from an earlier run; returns its bytes."""
    with CassetteWriter(path, Header("10.0.0.0/24", started=1732170000.0, tool_version="0.1.0")) as writer:
        writer.write(ConnectionOpened(0.001, 0, ("10.0.0.2", 40000), ("10.0.0.1", PORT)))
        writer.write(Data(0.002, 0, Direction.C2S, b"the good recording"))
        writer.write(Closed(0.003, 0))
        writer.commit(0.004)
    return path.read_bytes()


def chunks(count: int) -> bytes:
    return b"".join(b"chunk %05d\n" % i for i in range(count))


def streamed_bytes(partial: Path) -> bytes:
    """What the stream server said so far, as far as the recording can be read."""
    return b"".join(
        e.data
        for e in Cassette(partial, tolerate_truncation=True).events()
        if isinstance(e, Data) and e.direction is Direction.S2C
    )


def wait_for_chunks(partial: Path, count: int, timeout: float = 15.0) -> None:
    """Return once the recording in ``partial`` holds ``count`` streamed chunks."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(streamed_bytes(partial)) >= len(chunks(count)):
                return
        except (CassetteError, FileNotFoundError):
            pass  # not made yet, or its header not written yet
        time.sleep(0.02)
    raise AssertionError(f"the recording at {partial} never reached {count} chunks")


def net_namespace(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


@contextlib.contextmanager
def mounted(path: Path, *mount_args: str):
    """Mount over ``path`` for the block; always unmounted after (mounts are checked per test)."""
    if (reason := programs.missing("mount", "umount")) is not None:
        pytest.skip(reason)
    path.mkdir(exist_ok=True)
    subprocess.run(["mount", *mount_args, str(path)], check=True)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)]).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


@contextlib.contextmanager
def small_disk(path: Path):
    """A 256 KiB tmpfs at ``path``."""
    with mounted(path, "-t", "tmpfs", "-o", "size=256k", "tmpfs"):
        yield path


@contextlib.contextmanager
def read_only(path: Path):
    """``path`` bound onto itself read-only."""
    with mounted(path, "--bind", str(path)):
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
        yield path


# -- 1-3. a recording killed half-way ------------------------------------------------


@dataclasses.dataclass
class Killed:
    """What a recording killed half-way left behind."""

    partial: Path
    left: list[str]
    good_before: bytes
    good_after: bytes
    # Only when the supervisor itself was killed: what the Sandbox did after.
    after: dict[str, BaseException | None] = dataclasses.field(default_factory=dict)
    close_seconds: float | None = None


def kill_the_supervisor(directory: Path) -> Killed:
    cassette = directory / "stream.netplay"
    good = write_good_cassette(cassette)
    sb = Sandbox(mode="record", cassette=cassette, grace=1).start()
    server, client = sb.add_host("server"), sb.add_host("client")
    procs = [server.spawn([sys.executable, "-c", STREAM_SERVER])]
    server.wait_for_port(PORT)
    procs.append(client.spawn([sys.executable, "-c", STREAM_CLIENT]))
    inodes = sb.namespace_inodes()
    try:
        wait_for_chunks(partial_path_for(cassette), 5)
    finally:
        os.kill(sb.supervisor_pid, signal.SIGKILL)
    left = leaks.wait_until_gone(inodes, [sb.supervisor_pid, *(p.pid for p in procs)])
    after: dict[str, BaseException | None] = {}
    operations = {
        "add_host": sb.add_host,
        "spawn": lambda: server.spawn(["true"]),
        "connect": lambda: client.connect(("10.0.0.1", PORT)),
        "stats": sb.stats,
        "wait": lambda: procs[0].wait(1),
    }
    for name, operation in operations.items():
        try:
            operation()
            after[name] = None
        except Exception as exc:  # whatever it is, the test shows it
            after[name] = exc
    closing = threading.Thread(target=sb.close, daemon=True)
    start = time.monotonic()
    closing.start()
    closing.join(10)
    close_seconds = None if closing.is_alive() else time.monotonic() - start
    return Killed(partial_path_for(cassette), left, good, cassette.read_bytes(), after, close_seconds)


# Records the stream server and client, prints what it made, then waits to be killed.
MAKER = textwrap.dedent(
    """
    import json, sys, time
    from pytest_netplayground import Sandbox
    cassette, server_script, client_script = sys.argv[1:4]
    sb = Sandbox(mode="record", cassette=cassette).start()
    server, client = sb.add_host("server"), sb.add_host("client")
    procs = [server.spawn([sys.executable, "-c", server_script])]
    server.wait_for_port(9000)
    procs.append(client.spawn([sys.executable, "-c", client_script]))
    print(json.dumps({"supervisor": sb.supervisor_pid, "namespaces": sb.namespace_inodes(),
                      "children": [p.pid for p in procs]}), flush=True)
    time.sleep(1000)
    """
)


def kill_the_maker(directory: Path) -> Killed:
    cassette = directory / "stream.netplay"
    good = write_good_cassette(cassette)
    maker = subprocess.Popen(
        [sys.executable, "-c", MAKER, str(cassette), STREAM_SERVER, STREAM_CLIENT],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        made = json.loads(maker.stdout.readline())
        wait_for_chunks(partial_path_for(cassette), 5)
    finally:
        maker.kill()
        maker.wait(10)
        maker.stdout.close()
    left = leaks.wait_until_gone(made["namespaces"], [made["supervisor"], *made["children"]])
    return Killed(partial_path_for(cassette), left, good, cassette.read_bytes())


def kill_the_cli(directory: Path) -> Killed:
    cassette = directory / "stream.netplay"
    good = write_good_cassette(cassette)
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest_netplayground",
            "record",
            "-f",
            str(cassette),
            "--nolog",
            python_command(STREAM_SERVER),
            python_command(STREAM_CLIENT),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    try:
        wait_for_chunks(partial_path_for(cassette), 5)
        pids = leaks.descendants(cli.pid)
    finally:
        cli.kill()
        cli.wait(10)
    assert len(pids) >= 4, f"expected the supervisor and both commands under the CLI, found {pids}"
    inodes = {ino for ino in map(net_namespace, pids) if ino is not None}
    left = leaks.wait_until_gone(inodes, pids)
    return Killed(partial_path_for(cassette), left, good, cassette.read_bytes())


KILLS = {"supervisor": kill_the_supervisor, "maker": kill_the_maker, "cli": kill_the_cli}


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """``killed(how)``: the aftermath of that kill, made once per module."""
    made: dict[str, Killed] = {}

    def get(how: str) -> Killed:
        if how not in made:
            made[how] = KILLS[how](tmp_path_factory.mktemp(f"killed-{how}"))
        return made[how]

    return get


@pytest.mark.parametrize("how", KILLS)
def test_recording_killed_half_way_leaves_no_namespace_or_process(killed, how):
    assert killed(how).left == []


@pytest.mark.parametrize("how", KILLS)
def test_recording_killed_half_way_reads_up_to_its_last_complete_event(killed, how):
    partial = killed(how).partial
    raw = partial.read_bytes()
    cassette = Cassette(partial, tolerate_truncation=True)
    records = list(cassette.records())
    # Every complete line is a record; at most a cut-off last line is left out.
    assert len(records) == raw.count(b"\n")
    assert cassette.truncated_at in (None, raw.rfind(b"\n") + 1)
    assert cassette.complete is False, "a killed recording has no end marker"
    streamed = streamed_bytes(partial)
    assert len(streamed) >= len(chunks(5))
    assert streamed == chunks(100000)[: len(streamed)]


@pytest.mark.parametrize("how", KILLS)
def test_recording_killed_half_way_leaves_the_previous_cassette_byte_identical(killed, how):
    outcome = killed(how)
    assert outcome.good_after == outcome.good_before


@pytest.mark.parametrize("operation", ["add_host", "spawn", "connect", "stats", "wait"])
def test_after_its_supervisor_is_killed_the_sandbox_raises_sandbox_closed(killed, operation):
    error = killed("supervisor").after[operation]
    assert isinstance(error, SandboxClosed), repr(error)
    assert isinstance(error, NetplayError)


def test_after_its_supervisor_is_killed_close_returns_at_once(killed):
    seconds = killed("supervisor").close_seconds
    assert seconds is not None, "close() hung"
    assert seconds < 1


# -- 4. disk full --------------------------------------------------------------------


def record_bulk(cassette: Path) -> CassetteError | None:
    """Record 1 MiB going from a server to a client; the error close() raised, if any."""
    sb = Sandbox(mode="record", cassette=cassette).start()
    try:
        server, client = sb.add_host("server"), sb.add_host("client")
        server.spawn([sys.executable, "-c", BULK_SERVER])
        server.wait_for_port(PORT)
        result = client.run([sys.executable, "-c", BULK_CLIENT], timeout=30)
        assert result.returncode == 0, result.stderr
    except BaseException:
        sb.close("abort")
        raise
    try:
        sb.close()
    except CassetteError as exc:
        return exc
    return None


def test_disk_full_while_recording_makes_close_raise_naming_the_path_and_reason(tmp_path):
    with small_disk(tmp_path / "disk") as disk:
        error = record_bulk(disk / "bulk.netplay")
    assert error is not None, "close() did not report that the recording could not be written"
    assert str(disk / "bulk.netplay") in str(error)
    assert os.strerror(errno.ENOSPC) in str(error)


def test_disk_full_while_recording_leaves_the_previous_cassette_untouched(tmp_path):
    with small_disk(tmp_path / "disk") as disk:
        cassette = disk / "bulk.netplay"
        good = write_good_cassette(cassette)
        error = record_bulk(cassette)
        after = cassette.read_bytes()
    assert error is not None
    assert after == good


def test_cli_record_onto_a_full_disk_exits_non_zero_naming_the_path(tmp_path):
    with small_disk(tmp_path / "disk") as disk:
        cassette = disk / "bulk.netplay"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest_netplayground",
                "record",
                "-f",
                str(cassette),
                "--nolog",
                python_command(BULK_SERVER),
                python_command(BULK_CLIENT),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
    assert result.returncode != 0
    assert "netplay: error:" in result.stderr
    assert str(cassette) in result.stderr
    assert os.strerror(errno.ENOSPC) in result.stderr


PLUGIN_SUITE = f"""
import sys

BULK_SERVER = {BULK_SERVER!r}
BULK_CLIENT = {BULK_CLIENT!r}

def test_bulk(netplay):
    server, client = netplay.add_host("server"), netplay.add_host("client")
    server.spawn([sys.executable, "-c", BULK_SERVER])
    server.wait_for_port(9000)
    assert client.run([sys.executable, "-c", BULK_CLIENT], timeout=30).returncode == 0
"""


def test_plugin_recording_onto_a_full_disk_fails_the_test(pytester, tmp_path):
    pytester.makepyfile(test_suite=PLUGIN_SUITE)
    with small_disk(tmp_path / "disk") as disk:
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "--netplay=record", f"--netplay-dir={disk}", timeout=120
        )
    result.assert_outcomes(failed=1)
    assert os.strerror(errno.ENOSPC) in result.stdout.str()


# -- 5. a cassette directory that cannot be written ------------------------------------


@pytest.fixture(params=["under a regular file", "read-only mount", "in /proc"])
def unwritable_cassette(request, tmp_path):
    if request.param == "under a regular file":
        (tmp_path / "file").write_text("not a directory\n")
        yield tmp_path / "file" / "c.netplay"
    elif request.param == "read-only mount":
        with read_only(tmp_path / "ro") as directory:
            yield directory / "c.netplay"
    else:
        yield Path("/proc/netplay-hardening/c.netplay")


def test_unwritable_cassette_directory_is_a_cassette_error_at_start(unwritable_cassette):
    sb = Sandbox(mode="record", cassette=unwritable_cassette)
    with pytest.raises(CassetteError) as info:
        sb.start()
    assert str(unwritable_cassette.parent) in str(info.value)
    # Nothing was started: the supervisor is gone and no host can be made.
    assert leaks.wait_until_gone(pids=[sb.supervisor_pid]) == []
    with pytest.raises(SandboxClosed):
        sb.add_host()
