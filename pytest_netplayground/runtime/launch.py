"""Starting a sandbox's supervisor: the fork, the start-up handshake, and reaping it later.

The supervisor is a child of the caller's process; it is collected in the
background once it has exited, because the kernel takes a while to unregister
its TUN devices and no caller should wait for that.
"""

from __future__ import annotations

import atexit
import gc
import os
import socket
import sys

from . import control


def fork_supervisor(subnet: str, verbose: bool, options: dict) -> tuple[socket.socket, int]:
    """Fork the supervisor; returns our end of the control channel and its pid."""
    from pyroute2 import IPRoute  # noqa: F401  (imported before fork: children share it)

    from . import supervisor as supervisor_module

    reap_pending(block=False)
    ours, theirs = control.make_pair()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the supervisor
        try:
            # Objects inherited from the parent may own descriptors that are
            # closed just below; were the collector to finalize one of them
            # later, it would close whatever the supervisor had opened under
            # that number since (a TUN, a proxy socket, a netlink socket).
            gc.freeze()
            keep = theirs.fileno()
            os.closerange(3, keep)
            os.closerange(keep + 1, _max_fd())
        finally:
            supervisor_module.run_supervisor(theirs, subnet, verbose, **options)
    theirs.close()
    return ours, pid


def handshake(sock: socket.socket, pid: int) -> tuple[bool, BaseException | None]:
    """Wait until the supervisor has built the sandbox: (True, None), or (False, its error).

    Raises EOFError or OSError if it died before saying either.
    """
    message, _ = control.receive(sock)
    if message[0] == "map_ids":
        # The supervisor made its user namespace; only a process outside
        # it may map all our ids into it.
        control.send(sock, ("mapped", _map_ids(pid)))
        message, _ = control.receive(sock)
    _, ok, error = message
    return ok, error


def _map_ids(pid: int) -> str | None:
    """Map every uid and gid we have into ``pid``'s new user namespace, one to one."""
    try:
        for kind in ("uid_map", "gid_map"):
            with open(f"/proc/self/{kind}") as f:
                extents = [line.split() for line in f if line.strip()]
            mapping = "".join(f"{inside} {inside} {count}\n" for inside, _outside, count in extents)
            with open(f"/proc/{pid}/{kind}", "w") as f:
                f.write(mapping)
    except OSError as exc:
        return f"mapping ids into the sandbox's user namespace failed: {exc}"
    return None


_unreaped: set[int] = set()


def reap_later(pid: int) -> None:
    _unreaped.add(pid)


def reap_pending(block: bool) -> None:
    """Collect exited supervisors; with ``block``, wait for all of them."""
    for pid in list(_unreaped):
        try:
            done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _unreaped.discard(pid)


atexit.register(reap_pending, True)


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 4096
