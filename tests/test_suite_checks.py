"""The suite's own checks (tests/conftest.py), shown to catch what they must and only that.

The leak check: a process in another network namespace that someone else on
the machine runs is none of the test's business; an orphan of the test's own
is, even after its parent is gone (the test process adopts it). Likewise a
mount made on the machine by someone else, and one of our own. The
temporary-directory check fails a session that leaves something there. A
test needing a program that is missing is skipped, saying which.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time

import pytest

from tests.support import leaks

CLONE_NEWNET = 0x40000000


def _orphan_in_a_new_netns() -> int:
    """Fork a child that forks a sleeper in a network namespace of its own and exits at once;
    the sleeper's pid. Its new parent is whoever adopts orphans of this process's children."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the short-lived middle process
        try:
            os.close(read_end)
            os.setsid()
            sleeper = os.fork()
            if sleeper == 0:
                os.close(write_end)
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.unshare(CLONE_NEWNET) == 0:
                    os.closerange(0, 3)
                    time.sleep(30)
                os._exit(0)
            os.write(write_end, str(sleeper).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        sleeper = int(f.read())
    os.waitpid(child, 0)  # the sleeper is orphaned, and adopted, when this returns
    own = os.readlink("/proc/self/ns/net")
    deadline = time.monotonic() + 10
    while os.readlink(f"/proc/{sleeper}/ns/net") == own:
        assert time.monotonic() < deadline, "the sleeper never got a network namespace of its own"
        time.sleep(0.005)
    return sleeper


@contextlib.contextmanager
def killed_at_the_end(pid: int, ours: bool):
    try:
        yield pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if ours:
            os.waitpid(pid, 0)


@pytest.mark.root
def test_a_process_in_another_netns_that_someone_else_runs_is_not_blamed():
    leaks.become_subreaper(False)  # so the orphan goes past this process, as a stranger's would
    try:
        stranger = _orphan_in_a_new_netns()
    finally:
        leaks.become_subreaper(True)
    with killed_at_the_end(stranger, ours=False):
        assert stranger not in leaks.descendants(os.getpid())
        assert leaks.alive(stranger)
        assert stranger not in leaks.processes_in_other_netns()


@pytest.mark.root
def test_an_orphan_of_our_own_in_another_netns_is_found():
    orphan = _orphan_in_a_new_netns()
    with killed_at_the_end(orphan, ours=True):
        assert orphan in leaks.children_of(os.getpid())
        assert orphan in leaks.processes_in_other_netns()
        assert orphan in leaks.new_processes_in_other_netns({}, timeout=0)


def _outside_mount_namespace() -> int:
    """A process in the mount namespace the test process left: its parent's, normally."""
    parent = os.getppid()
    assert os.readlink(f"/proc/{parent}/ns/mnt") != os.readlink("/proc/self/ns/mnt"), (
        "the test process shares the machine's mount namespace: others' mounts would count as ours"
    )
    return parent


@pytest.mark.root
@pytest.mark.needs("nsenter", "mount", "umount")
def test_a_mount_someone_else_makes_on_the_machine_is_not_blamed(tmp_path):
    outside = _outside_mount_namespace()
    point = tmp_path / "theirs"
    point.mkdir()
    enter = ["nsenter", "-t", str(outside), "-m"]
    subprocess.run([*enter, "mount", "-t", "tmpfs", "-o", "size=64k", "none", str(point)], check=True)
    try:
        assert not any(str(point) in line for line in leaks.mounts())
    finally:
        subprocess.run([*enter, "umount", str(point)], check=True)


@pytest.mark.root
@pytest.mark.needs("mount", "umount")
def test_a_mount_of_our_own_is_found(tmp_path):
    before = leaks.mounts()
    point = tmp_path / "ours"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "none", str(point)], check=True)
    try:
        assert [line for line in leaks.mounts() if line not in before] == [f"{point} " + _device(point)]
    finally:
        subprocess.run(["umount", str(point)], check=True)
    assert leaks.mounts() == before


def _device(path) -> str:
    st = os.stat(path)
    return f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"


SUITE_CONFTEST = "from tests.conftest import pytest_configure, pytest_collection_modifyitems, {fixtures}\n"


def test_a_session_leaving_something_in_the_temporary_directory_fails(pytester):
    pytester.makeconftest(SUITE_CONFTEST.format(fixtures="_temporary_directory_left_clean"))
    pytester.makepyfile(
        test_leaves="""
        import tempfile

        def test_tidy():
            tempfile.mkstemp(prefix="netplay-tidy-")[1]

        def test_leaves():
            tempfile.mkdtemp(prefix="netplay-left-")
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["*the suite left these in the temporary directory: ?'netplay-left-*', 'netplay-tidy-*'?"]
    )


def test_a_session_leaving_nothing_passes(pytester):
    pytester.makeconftest(SUITE_CONFTEST.format(fixtures="_temporary_directory_left_clean"))
    pytester.makepyfile(
        test_tidy="""
        import os
        import tempfile

        def test_tidy():
            fd, path = tempfile.mkstemp(prefix="netplay-tidy-")
            os.close(fd)
            os.unlink(path)
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_a_test_needing_a_missing_program_is_skipped_saying_which(pytester):
    pytester.makeconftest(SUITE_CONFTEST.format(fixtures="_privileged"))
    pytester.makepyfile(
        test_needs="""
        import pytest

        @pytest.mark.needs("sh")
        def test_present():
            pass

        @pytest.mark.needs("sh", "no-such-program-here", "ping")
        def test_absent():
            pass
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "SKIPPED * needs no-such-program-here, not installed here (apt-get install no-such-program-here, or run .ci/run)"
        ]
    )
