"""What "nothing leaks" means, as checks: namespaces, processes, mounts, host network."""

from __future__ import annotations

import contextlib
import os
import time


def root_network_state() -> dict:
    """Links, addresses and routes of the current (root) namespace, comparable by value."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = sorted((link.get_attr("IFLA_IFNAME"), link["flags"] & 1) for link in ipr.get_links())
        addrs = sorted((a.get_attr("IFA_ADDRESS"), a["prefixlen"], a["index"]) for a in ipr.get_addr())
        routes = sorted(
            (str(r.get_attr("RTA_DST")), r["dst_len"], r.get_attr("RTA_OIF") or 0, r["table"], r["type"])
            for r in ipr.get_routes(family=2, table=254)
        )
    return {"links": links, "addrs": addrs, "routes": routes}


def mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return sorted(line.split(" ", 5)[4] + " " + line.split(" ")[2] for line in f)


def netns_holders(inodes: set[int]) -> list[str]:
    """Every process or open descriptor that still refers to one of ``inodes``."""
    wanted = {f"net:[{ino}]" for ino in inodes}
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{pid}/ns/net") in wanted:
                found.append(f"process {pid}")
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                        found.append(f"fd {fd} of process {pid}")
                except OSError:
                    pass
        except OSError:
            pass
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("State:"):
                    return "Z" not in line.split()[1]
    except OSError:
        return False
    return False


def wait_until_gone(inodes=(), pids=(), timeout: float = 10.0) -> list[str]:
    """Poll until no holder of ``inodes`` and no live ``pids`` remain; return what is left."""
    deadline = time.monotonic() + timeout
    while True:
        left = netns_holders(set(inodes)) + [f"process {p} alive" for p in pids if alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


@contextlib.contextmanager
def checked(sandbox):
    """Start ``sandbox``, yield it, close it; then nothing of it may be left.

    Its namespaces are taken when it starts and again as the body ends (so
    hosts added meanwhile count too); with its supervisor and every process
    spawned in it, they must all be gone soon after it closes. A body that
    raises skips the check: the sandbox is closed and the error is the news.
    """
    from pytest_netplayground import SandboxClosed

    with sandbox:
        inodes, supervisor = set(sandbox.namespace_inodes()), sandbox.supervisor_pid
        yield sandbox
        with contextlib.suppress(SandboxClosed):
            inodes.update(sandbox.namespace_inodes())
    left = wait_until_gone(inodes, [supervisor, *(p.pid for p in sandbox.processes)])
    assert not left, f"left behind after teardown: {left}"


def running(mode: str = "live", cassette=None, **options):
    """A new sandbox in ``mode``, started and checked like :func:`checked`."""
    from pytest_netplayground import Sandbox

    return checked(Sandbox(mode=mode, cassette=cassette, **options))


def children_of(pid: int) -> list[int]:
    """The pids whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` in the process tree."""
    found, todo = [], [pid]
    while todo:
        children = children_of(todo.pop())
        found += children
        todo += children
    return found


def cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def become_subreaper(adopt: bool = True) -> None:
    """Make this process adopt its orphaned descendants, so a leaked process of
    one of its sandboxes stays below it (and so in view of the checks below)
    instead of being handed to the machine's init, where others' processes are.
    ``adopt=False`` undoes it."""
    import ctypes

    pr_set_child_subreaper = 36
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_child_subreaper, int(adopt), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def private_mount_namespace() -> bool:
    """Give this process a mount namespace of its own, receiving no mount events from the machine's.

    Its children (sandboxes, pytest subprocesses) share it, so a mount they
    leave shows in it; a mount someone else makes on the machine meanwhile
    does not. False where the kernel refuses (a process with threads).
    """
    import ctypes

    clone_newns, ms_rec, ms_private = 0x00020000, 16384, 1 << 18
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(clone_newns) != 0:
        return False
    if libc.mount(b"none", b"/", None, ctypes.c_ulong(ms_rec | ms_private), None) != 0:
        raise OSError(ctypes.get_errno(), "making / private in the test's mount namespace")
    return True


def processes_in_other_netns() -> dict[int, str]:
    """Live descendants of this process whose network namespace is not this
    process's: pid -> command line. Only our own: a sandbox someone else runs on
    the machine at the same time is none of our business."""
    own = os.readlink("/proc/self/ns/net")
    found = {}
    for entry in map(str, descendants(os.getpid())):
        try:
            if os.readlink(f"/proc/{entry}/ns/net") == own:
                continue
        except OSError:
            continue  # gone, or a zombie: holds nothing
        if alive(int(entry)):
            found[int(entry)] = cmdline(int(entry)).replace(b"\0", b" ").decode(errors="replace").strip()
    return found


def new_processes_in_other_netns(before: dict[int, str], timeout: float = 10.0) -> dict[int, str]:
    """Processes in other network namespaces that were not there ``before``, once given time to go."""
    deadline = time.monotonic() + timeout
    while True:
        left = {pid: cmd for pid, cmd in processes_in_other_netns().items() if pid not in before}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)
