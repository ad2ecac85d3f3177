from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from tests.support import leaks, programs


def _privileged() -> str | None:
    if os.geteuid() != 0:
        return "needs root: network namespaces and /dev/net/tun (see README, 'Privileges')"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    return None


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "needs(*programs): runs these programs; skipped with a reason where one is missing"
    )


def pytest_collection_modifyitems(config, items):
    privileged = _privileged()
    for item in items:
        if privileged is not None and item.get_closest_marker("root"):
            item.add_marker(pytest.mark.skip(reason=privileged))
        for marker in item.iter_markers("needs"):
            reason = programs.missing(*marker.args)
            if reason is not None:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session", autouse=True)
def _adopt_orphans():
    """Orphans of our sandboxes come to this process, where the leak check looks; and
    mounts made on the machine by others do not, so the mount check sees only ours."""
    if _privileged() is None:
        leaks.become_subreaper()
        leaks.private_mount_namespace()
    yield


@pytest.fixture(scope="session", autouse=True)
def _temporary_directory_left_clean(tmp_path_factory):
    """Nothing the suite makes may stay in the temporary directory.

    For the session the temporary directory is a fresh one of its own
    (world-writable like /tmp, for the rootless tests' unprivileged user), so
    what others on the machine put in /tmp is not counted; whatever is left
    in it at the end is a leak, and fails the session. pytest's own tmp_path
    stays where it was.
    """
    tmp_path_factory.getbasetemp()
    private = tempfile.mkdtemp(prefix="netplay-suite-")
    os.chmod(private, 0o1777)
    saved = (tempfile.tempdir, os.environ.get("TMPDIR"))
    tempfile.tempdir = os.environ["TMPDIR"] = private
    try:
        yield
    finally:
        tempfile.tempdir = saved[0]
        if saved[1] is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = saved[1]
        left = sorted(os.listdir(private))
        shutil.rmtree(private, ignore_errors=True)
    assert not left, f"the suite left these in the temporary directory: {left}"


@pytest.fixture(autouse=True)
def _host_untouched(request):
    """Every root test must leave no process of its own in another network namespace,
    and the root namespace's network and mounts as it found them."""
    if request.node.get_closest_marker("root") is None or _privileged():
        yield
        return
    before = leaks.root_network_state()
    mounts_before = leaks.mounts()
    processes_before = leaks.processes_in_other_netns()
    yield
    left = leaks.new_processes_in_other_netns(processes_before)
    assert not left, f"processes of a sandbox outlived it: {left}"
    assert leaks.root_network_state() == before, "the root namespace's network configuration changed"
    assert leaks.mounts() == mounts_before, "mounts changed"


@pytest.fixture
def sandbox():
    """A started sandbox that is checked for leaks after the test."""
    with leaks.running() as sb:
        yield sb
