"""The sandbox's processes: started in their hosts, reaped, stopped at teardown.

Every process lands in one PID namespace whose init is a tiny reaper forked
by the supervisor, so nothing a test starts (daemons that double-forked
included) outlives the sandbox.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import time
from typing import Callable

import attrs

from ..errors import CommandNotFound, SandboxError
from . import hostfs, netns
from .control import Spawn, StdioMode
from .loop import Loop
from .network import Network


def _stdio_ends(request: Spawn) -> tuple[list, list[int], list[int]]:
    """What the child's stdin, stdout and stderr are, the caller's ends of the pipes made for
    them, and the descriptors to close here once the child has started."""
    sent = iter(request.fds)
    ends: list[object] = []
    to_caller: list[int] = []
    to_close: list[int] = []
    for i, mode in enumerate(request.stdio):
        if mode is StdioMode.FD:
            fd = next(sent)
            ends.append(fd)
            to_close.append(fd)
        elif mode is StdioMode.PIPE:
            r, w = os.pipe2(os.O_CLOEXEC)
            caller_end, child_end = (w, r) if i == 0 else (r, w)
            ends.append(child_end)
            to_close.append(child_end)
            to_caller.append(caller_end)
        elif mode is StdioMode.DEVNULL:
            ends.append(subprocess.DEVNULL)
        elif mode is StdioMode.STDOUT:
            ends.append(subprocess.STDOUT)
        else:
            ends.append(None)
    return ends, to_caller, to_close


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


class ChildProcess:
    __slots__ = ("pid", "pidfd", "popen", "host", "returncode")

    def __init__(self, popen: subprocess.Popen, host: int):
        self.popen = popen
        self.pid = popen.pid
        self.host = host
        self.pidfd = os.pidfd_open(popen.pid)
        self.returncode: int | None = None


@attrs.define(eq=False)
class Processes:
    """Starts processes and sockets in hosts, and tells ``on_exit(pid, returncode)`` when one ends."""

    loop: Loop
    network: Network
    host_files: hostfs.HostFiles
    note_command: Callable[[int, list[str]], None]
    on_exit: Callable[[int, int], None]
    rootless: bool
    # Variables every spawned process gets on top of its own (those that make it trust the sandbox CA).
    environment: dict[str, str] = attrs.field(factory=dict)
    children: dict[int, ChildProcess] = attrs.field(init=False, factory=dict)
    # Hosts a process was ever started in or a socket made in (only there can a
    # server listen), with when that first happened: listen delays count from then.
    inhabited: dict[int, float] = attrs.field(init=False, factory=dict)
    reaper_pid: int = attrs.field(init=False, default=-1)
    _reaper_alive: int = attrs.field(init=False, default=-1)

    def __attrs_post_init__(self) -> None:
        self._start_reaper()

    def _start_reaper(self) -> None:
        """Make a PID namespace whose init is a tiny reaper forked from here.

        Every process spawned later lands in that namespace. When the reaper
        dies (at teardown, or with the supervisor through PR_SET_PDEATHSIG), the
        kernel kills everything left in it, daemons that double-forked included.
        """
        netns.unshare(netns.CLONE_NEWPID)
        # Held open by the supervisor: EOF tells the reaper its parent died
        # before the parent-death signal was armed (getppid() says 0 in here).
        alive_r, alive_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs as PID 1 of the namespace
            try:
                netns.set_parent_death_signal(signal.SIGKILL)
                os.close(alive_w)
                if select.select([alive_r], [], [], 0)[0]:
                    os._exit(0)
                os.closerange(0, 65536)
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT})
                while True:
                    try:
                        while os.waitpid(-1, os.WNOHANG)[0] > 0:
                            pass
                    except ChildProcessError:
                        pass
                    signal.sigwaitinfo({signal.SIGCHLD})
            finally:
                os._exit(0)
        os.close(alive_r)
        self._reaper_alive = alive_w
        self.reaper_pid = pid

    def spawn(self, request: Spawn) -> tuple[ChildProcess, list[int]]:
        """Start ``request``'s command; returns it and the caller's ends of its new pipes."""
        ends, to_caller, to_close = _stdio_ends(request)
        try:
            child = self._start(request, ends)
        except (FileNotFoundError, PermissionError) as exc:
            _close(to_close + to_caller)
            what = "not found" if isinstance(exc, FileNotFoundError) else "not executable"
            name = self.network.host_names[request.host]
            raise CommandNotFound(
                f"command {request.argv[0]!r} {what} in host {name} (cwd {request.cwd!r})"
            ) from exc
        except OSError as exc:
            _close(to_close + to_caller)
            raise SandboxError(f"cannot start {list(request.argv)!r}: {exc}") from exc
        except BaseException:
            _close(to_close + to_caller)
            raise
        _close(to_close)
        return child, to_caller

    def _start(self, request: Spawn, stdio: list) -> ChildProcess:
        host, argv, user, group = request.host, list(request.argv), request.user, request.group
        self.inhabited.setdefault(host, time.monotonic())
        stdin, stdout, stderr = stdio

        def in_child() -> None:
            netns.set_parent_death_signal(signal.SIGKILL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)

        kwargs = {}
        if (user is not None or group is not None) and self.rootless:
            raise SandboxError(
                f"cannot run {argv[0]!r} as user {user!r} / group {group!r}: the sandbox runs without root "
                "(in a user namespace of this user), so its commands run as this user only"
            )
        if user is not None:
            kwargs["user"] = user
            kwargs["extra_groups"] = []
        if group is not None:
            kwargs["group"] = group
        with self._in_host(host), self.host_files.entered(host):
            popen = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                env={**request.env, **self.environment} if self.environment else request.env,
                cwd=request.cwd,
                start_new_session=True,
                preexec_fn=in_child,
                **kwargs,
            )
        self.note_command(host, argv)
        child = ChildProcess(popen, host)
        self.children[child.pid] = child
        self.loop.watch(child.pidfd, select.EPOLLIN, lambda ev, c=child: self._child_exited(c))
        return child

    def _child_exited(self, child: ChildProcess) -> None:
        """Reap ``child`` (it exited, or was just killed) and tell the caller its exit code."""
        if child.pid not in self.children:
            return
        self.loop.unwatch(child.pidfd)
        os.close(child.pidfd)
        try:
            _, status = os.waitpid(child.pid, 0)
            child.returncode = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            child.returncode = -signal.SIGKILL
        del self.children[child.pid]
        self.on_exit(child.pid, child.returncode)

    def signal(self, pid: int, signum: int, group: bool) -> None:
        """Send ``signum`` to a process of ours (to its process group with ``group``); others are ignored."""
        child = self.children.get(pid)
        if child is None:
            return
        try:
            if group:
                os.killpg(child.pid, signum)
            else:
                os.kill(child.pid, signum)
        except ProcessLookupError:
            pass

    def busy(self, host: int) -> bool:
        """Whether a process of ours runs in ``host``."""
        return any(child.host == host for child in self.children.values())

    def listening(self, host: int, port: int) -> bool:
        """Whether a TCP socket in ``host`` listens on ``port`` (any address)."""
        tables = []
        with self._in_host(host):
            for name in ("tcp", "tcp6"):
                try:
                    with open(f"/proc/thread-self/net/{name}") as f:
                        tables.append(f.read())
                except OSError:
                    pass
        for table in tables:
            for line in table.splitlines()[1:]:
                fields = line.split()
                if len(fields) > 3 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    return True
        return False

    def udp_bound(self, host: int | None, port: int) -> bool:
        """Whether a UDP socket in ``host`` is bound to ``port`` (any address)."""
        if host is None:
            return False
        with self._in_host(host):
            for name in ("udp", "udp6"):
                try:
                    with open(f"/proc/thread-self/net/{name}") as f:
                        table = f.read()
                except OSError:
                    continue
                for line in table.splitlines()[1:]:
                    fields = line.split()
                    if len(fields) > 1 and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        return True
        return False

    def make_socket(self, host: int, family: int, type_: int) -> socket.socket:
        self.inhabited.setdefault(host, time.monotonic())
        with self._in_host(host):
            return socket.socket(family, type_)

    def _in_host(self, host: int) -> contextlib.AbstractContextManager:
        """Run the body in ``host``'s network namespace (what it makes stays there), then come home."""
        return netns.entered(self.network.host_ns[host], self.network.proxy_ns)

    def stop(self, kill_signal: int, grace: float) -> None:
        """Send every process group ``kill_signal``, SIGKILL what is left after ``grace`` seconds,
        reap them all, then end the reaper (and with it whatever hid in its PID namespace)."""
        for child in list(self.children.values()):
            try:
                os.killpg(child.pid, kill_signal)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace
        while self.children and time.monotonic() < deadline:
            self.loop.run_once(min(0.05, max(0.0, deadline - time.monotonic())))
        for child in list(self.children.values()):
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self._child_exited(child)
        try:
            os.kill(self.reaper_pid, signal.SIGKILL)
            os.waitpid(self.reaper_pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
