"""The Python API: :class:`Sandbox`, :class:`Host` and :class:`Process`.

The caller never enters a namespace. A forked supervisor process builds and
runs the sandbox; this module talks to it over the control channel, and gets
back sockets made inside hosts and the pipes of spawned processes as file
descriptors, so they work here like local ones.
"""

from __future__ import annotations

import atexit
import gc
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from typing import Any, Sequence

import attrs

from ..core.addressing import DEFAULT_SUBNET, Subnet
from ..core.divergence import DivergenceReport
from ..core.names import default_name
from ..errors import (
    CassetteMissing,
    ConfigError,
    NetplayTimeout,
    SandboxClosed,
    SandboxError,
)
from . import control

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT

MODES = ("live", "record", "replay")

__all__ = ["Sandbox", "Host", "Process", "PIPE", "DEVNULL", "STDOUT"]


def _signal_number(value: int | str | signal.Signals) -> int:
    if isinstance(value, str):
        name = value.upper()
        if name.isdigit():
            return int(name)
        if not name.startswith("SIG"):
            name = "SIG" + name
        try:
            return int(signal.Signals[name])
        except KeyError:
            from ..errors import ConfigError

            raise ConfigError(
                f"unknown signal {value!r}: use a name like TERM, INT, KILL or a number"
            ) from None
    return int(value)


class _Channel:
    """Request/response over the control socket, collecting exit events on the way."""

    def __init__(self, sock: socket.socket, supervisor_pid: int):
        self.sock = sock
        self.pid = supervisor_pid
        self.lock = threading.RLock()
        self.exits: dict[int, int] = {}
        self.replies: dict[int, tuple[bool, Any, list[int]]] = {}
        self.closed_info: object = None
        self.gone = False
        self._ids = iter(range(1, 1 << 62))

    def _receive_one(self, timeout: float | None) -> bool:
        """Read one message if one comes within ``timeout``; False on timeout."""
        if self.gone:
            raise SandboxClosed("the sandbox's supervisor has exited")
        if timeout is not None:
            ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
            if not ready:
                return False
        try:
            message, fds = control.receive(self.sock)
        except (EOFError, ConnectionResetError, OSError):
            self.gone = True
            raise SandboxClosed("the sandbox's supervisor has exited") from None
        kind = message[0]
        if kind == "exit":
            self.exits[message[1]] = message[2]
        elif kind == "reply":
            self.replies[message[1]] = (message[2], message[3], fds)
        elif kind == "closed":
            self.closed_info = message[1]
            self.gone = True
        return True

    def call(self, op: str, fds: Sequence[int] = (), **args: Any) -> tuple[Any, list[int]]:
        with self.lock:
            if self.gone:
                raise SandboxClosed("the sandbox is closed")
            request_id = next(self._ids)
            try:
                control.send(self.sock, (request_id, op, args), fds)
            except OSError as exc:
                self.gone = True
                raise SandboxClosed("the sandbox's supervisor has exited") from exc
            while request_id not in self.replies:
                self._receive_one(None)
            ok, value, got = self.replies.pop(request_id)
        if not ok:
            raise value
        return value, got

    def wait_exit(self, pid: int, timeout: float | None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self.lock:
                if pid in self.exits:
                    return self.exits[pid]
                if self.gone:
                    return self.exits.get(pid)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    # Out of time (poll() has none at all): still take the
                    # messages already waiting, which may hold this exit.
                    while not self.gone and self._receive_one(0):
                        if pid in self.exits:
                            return self.exits[pid]
                    return self.exits.get(pid)
                self._receive_one(0.05 if remaining is None else min(0.05, remaining))


@attrs.define(eq=False)
class Process:
    """A process running in a host; behaves like :class:`subprocess.Popen`."""

    host: "Host"
    pid: int
    args: Any
    stdin: Any = None
    stdout: Any = None
    stderr: Any = None
    returncode: int | None = None
    output_files: dict = attrs.field(factory=dict)

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self.returncode = self.host.sandbox._channel.wait_exit(self.pid, 0)
            except SandboxClosed:
                pass
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            code = self.host.sandbox._channel.wait_exit(self.pid, timeout)
            if code is None:
                if self.host.sandbox._channel.gone:
                    raise SandboxClosed(f"the sandbox closed before process {self.pid} was seen to exit")
                raise subprocess.TimeoutExpired(self.args, timeout)
            self.returncode = code
        return self.returncode

    def send_signal(self, sig: int, group: bool = False) -> None:
        """Send ``sig`` to the process (or, with ``group``, to its whole process group)."""
        if self.returncode is None:
            self.host.sandbox._channel.call("signal", pid=self.pid, signal=int(sig), group=group)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, input: bytes | str | None = None, timeout: float | None = None):
        """Send ``input``, read stdout and stderr to EOF, wait; like Popen.communicate."""
        deadline = None if timeout is None else time.monotonic() + timeout
        chunks: dict[Any, list[bytes]] = {}
        sel = selectors.DefaultSelector()
        pending_input = b""
        if self.stdin is not None:
            if input:
                pending_input = input.encode() if isinstance(input, str) else bytes(input)
                os.set_blocking(self.stdin.fileno(), False)
                sel.register(self.stdin, selectors.EVENT_WRITE)
            else:
                self.stdin.close()
        for stream in (self.stdout, self.stderr):
            if stream is not None and not stream.closed:
                chunks[stream] = []
                sel.register(stream, selectors.EVENT_READ)
        while sel.get_map():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                sel.close()
                raise subprocess.TimeoutExpired(self.args, timeout)
            for key, _ in sel.select(remaining):
                if key.fileobj is self.stdin:
                    try:
                        n = os.write(self.stdin.fileno(), pending_input[:65536])
                    except BrokenPipeError:
                        n = len(pending_input)
                    except BlockingIOError:
                        continue
                    pending_input = pending_input[n:]
                    if not pending_input:
                        sel.unregister(self.stdin)
                        self.stdin.close()
                    continue
                data = os.read(key.fileobj.fileno(), 65536)
                if data:
                    chunks[key.fileobj].append(data)
                else:
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
        sel.close()
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        self.wait(remaining)
        results = []
        for stream in (self.stdout, self.stderr):
            if stream is None:
                results.append(None)
                continue
            data = b"".join(chunks.get(stream, []))
            results.append(data.decode() if getattr(stream, "_netplay_text", False) else data)
        return tuple(results)

    def __enter__(self) -> "Process":
        return self

    def __exit__(self, *exc: object) -> None:
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        if self.returncode is None:
            try:
                self.kill()
                self.wait(5)
            except (SandboxClosed, subprocess.TimeoutExpired):
                pass


@attrs.define(eq=False)
class Host:
    """One sandboxed machine: a network namespace with a TUN device and an address."""

    sandbox: "Sandbox"
    index: int
    address: str
    name: str

    def spawn(
        self,
        args: Sequence[str] | str,
        *,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
        user: int | str | None = None,
        group: int | str | None = None,
        stdin: Any = None,
        stdout: Any = None,
        stderr: Any = None,
        text: bool = False,
        shell: bool | None = None,
    ) -> Process:
        """Start a process in this host: an argv list, or a string run by ``/bin/sh -c``."""
        if shell is None:
            shell = isinstance(args, str)
        argv = ["/bin/sh", "-c", args if isinstance(args, str) else " ".join(args)] if shell else list(args)
        if not argv:
            raise ValueError("spawn needs a command")
        modes: list[str] = []
        fds: list[int] = []
        opened: list[Any] = []
        output_files: dict[str, str] = {}
        if self.sandbox.output_dir is not None:
            number = sum(1 for p in self.sandbox._processes if p.host is self) + 1
            for stream_name, spec in (("stdout", stdout), ("stderr", stderr)):
                if spec is None:
                    path = os.path.join(self.sandbox.output_dir, f"{self.name}-{number}.{stream_name}")
                    f = open(path, "ab")
                    opened.append(f)
                    output_files[stream_name] = path
                    if stream_name == "stdout":
                        stdout = f
                    else:
                        stderr = f
        for i, spec in enumerate((stdin, stdout, stderr)):
            if spec is None:
                modes.append("fd")
                fds.append(i)
            elif spec == PIPE:
                modes.append("pipe")
            elif spec == DEVNULL:
                modes.append("devnull")
            elif spec == STDOUT and i == 2:
                modes.append("stdout")
            else:
                modes.append("fd")
                fds.append(spec if isinstance(spec, int) else spec.fileno())
        try:
            result, got = self.sandbox._channel.call(
                "spawn",
                fds=fds,
                host=self.index,
                argv=[os.fspath(a) for a in argv],
                env=dict(os.environ) if env is None else dict(env),
                cwd=os.fspath(cwd) if cwd is not None else os.getcwd(),
                user=user,
                group=group,
                stdio=modes,
            )
        finally:
            for f in opened:
                f.close()
        got_iter = iter(got)
        streams: list[Any] = []
        for i, mode in enumerate(modes):
            if mode != "pipe":
                streams.append(None)
                continue
            fd = next(got_iter)
            if i == 0:
                stream = open(fd, "w" if text else "wb", buffering=-1 if text else 0)
            else:
                stream = open(fd, "r" if text else "rb", buffering=-1 if text else 0)
            try:
                stream._netplay_text = text  # type: ignore[attr-defined]
            except AttributeError:
                pass
            streams.append(stream)
        process = Process(self, result["pid"], args, *streams)
        process.output_files = output_files
        self.sandbox._processes.append(process)
        return process

    def run(
        self,
        args: Sequence[str] | str,
        *,
        timeout: float | None = None,
        input: bytes | str | None = None,
        check: bool = False,
        capture_output: bool = True,
        text: bool = False,
        **kwargs: Any,
    ) -> subprocess.CompletedProcess:
        """Run a command to completion in this host, like :func:`subprocess.run`."""
        if capture_output:
            kwargs.setdefault("stdout", PIPE)
            kwargs.setdefault("stderr", PIPE)
        if input is not None:
            kwargs["stdin"] = PIPE
        process = self.spawn(args, text=text, **kwargs)
        try:
            out, err = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                pass
            raise
        result = subprocess.CompletedProcess(args, process.returncode, out, err)
        if check:
            result.check_returncode()
        return result

    def wait_for_port(self, port: int, timeout: float = 5.0) -> None:
        """Return once a TCP socket in this host listens on ``port``."""
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            listening, _ = self.sandbox._channel.call("listening", host=self.index, port=int(port))
            if listening:
                return
            if time.monotonic() >= deadline:
                exited = [
                    f"{p.args!r} exited with {p.poll()}"
                    for p in self.sandbox._processes
                    if p.host is self and p.poll() is not None
                ]
                hint = f" ({'; '.join(exited)})" if exited else ""
                raise NetplayTimeout(
                    f"nothing listened on TCP port {port} in host {self.name} ({self.address}) "
                    f"within {timeout} s{hint}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> socket.socket:
        """A new socket that lives in this host's network namespace."""
        _, got = self.sandbox._channel.call("socket", host=self.index, family=int(family), type=int(type))
        return socket.socket(fileno=got[0])

    def connect(self, address: tuple[str, int], timeout: float | None = 5.0) -> socket.socket:
        """A TCP connection from this host to ``address``."""
        sock = self.socket()
        sock.settimeout(timeout)
        try:
            sock.connect(tuple(address))
        except BaseException:
            sock.close()
            raise
        return sock

    def listen(self, port: int, address: str = "", backlog: int = 128) -> socket.socket:
        """A TCP socket listening on ``port`` in this host."""
        sock = self.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(backlog)
        return sock

    def udp_socket(self, bind: tuple[str, int] | None = None) -> socket.socket:
        """A UDP socket in this host, bound to ``bind`` if given."""
        sock = self.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if bind is not None:
            sock.bind(tuple(bind))
        return sock

    def __str__(self) -> str:
        return f"{self.name} ({self.address})"


def _close_channel(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


class Sandbox:
    """A set of hosts joined by the userspace router. Use as a context manager."""

    def __init__(
        self,
        subnet: str | Subnet = DEFAULT_SUBNET,
        *,
        kill_signal: int | str = signal.SIGTERM,
        grace: float = 5.0,
        verbose: bool = False,
        mode: str = "live",
        cassette: str | os.PathLike | None = None,
        pace: str = "causal",
        speed: float = 1.0,
        stall_timeout: float = 5.0,
        settle: float = 0.2,
        match: str = "connection",
        output_dir: str | os.PathLike | None = None,
        ignore: object = (),
        check: object = (),
    ):
        from ..core.replay import ReplayConfig

        self.subnet = Subnet.parse(subnet)
        if mode not in MODES:
            raise ConfigError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
        if mode != "live" and cassette is None:
            raise ConfigError(f"mode {mode!r} needs a cassette path")
        self.mode = mode
        self.cassette = None if cassette is None else os.path.abspath(os.fspath(cassette))
        self.replay_config = ReplayConfig(
            pacing=pace,
            speed=speed,
            stall_timeout=stall_timeout,
            settle=settle,
            ignore=ignore,
            check=check,
            match=match,
        )
        self.divergences = DivergenceReport((), mode=mode)
        self.cassette_written: str | None = None
        self.truncated_at: int | None = None
        self.udp: tuple = ()  # UDP seen while recording or replaying (core.events.UdpSeen)
        # Where output of processes spawned without stdout/stderr goes, one
        # file per process and stream, so it can be shown per host.
        self.output_dir = None if output_dir is None else os.fspath(output_dir)
        self.kill_signal = _signal_number(kill_signal)
        self.grace = grace
        self.verbose = verbose
        self.hosts: list[Host] = []
        self._processes: list[Process] = []
        self._channel: _Channel | None = None
        self._supervisor_pid: int | None = None
        self._finalizer = None
        self.closed = False
        self.dropped: dict[str, int] = {}

    # -- life cycle -----------------------------------------------------------

    def _supervisor_options(self) -> dict:
        if self.mode == "live":
            return {}
        if self.mode == "replay" and not os.path.exists(self.cassette):
            raise CassetteMissing(
                f"no cassette at {self.cassette} to replay: record it first "
                f"(pytest --netplay=record, or netplay record -f {self.cassette} ...)"
            )
        return {"session": {"mode": self.mode, "cassette": self.cassette, "replay": self.replay_config}}

    def start(self) -> "Sandbox":
        if self._channel is not None:
            return self
        if self.closed:
            raise SandboxClosed("this sandbox was closed; make a new one")
        from pyroute2 import IPRoute  # noqa: F401  (imported before fork: children share it)

        from . import supervisor as supervisor_module

        _reap_pending(block=False)
        options = self._supervisor_options()
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
                supervisor_module.run_supervisor(theirs, str(self.subnet), self.verbose, **options)
        theirs.close()
        self._supervisor_pid = pid
        try:
            message, _ = control.receive(ours)
            if message[0] == "map_ids":
                # The supervisor made its user namespace; only a process outside
                # it may map all our ids into it.
                control.send(ours, ("mapped", _map_ids(pid)))
                message, _ = control.receive(ours)
        except (EOFError, OSError) as exc:
            ours.close()
            self._reap()
            raise SandboxError("the sandbox's supervisor died while starting") from exc
        _, ok, error = message
        if not ok:
            ours.close()
            self._reap()
            self.closed = True
            raise error
        self._channel = _Channel(ours, pid)
        self._finalizer = weakref.finalize(self, _close_channel, ours)
        return self

    def _reap(self, block: bool = True) -> None:
        if self._supervisor_pid is not None:
            _reap_later(self._supervisor_pid)
            if block:
                _reap_pending(block=True)

    def close(self, cassette: str | tuple = "commit") -> None:
        """Stop every process (kill signal, then SIGKILL after ``grace``) and tear down.

        In record mode ``cassette`` says what becomes of the recording:
        ``"commit"`` replaces the cassette atomically, ``"abort"`` leaves it as
        a ``.partial`` file beside it, ``("keep_as", path)`` moves it there,
        ``"discard"`` deletes it (a test that was skipped or never ran).
        Raises :class:`CassetteError` if the recording could not be written.
        """
        if self.closed:
            return
        self.closed = True
        channel = self._channel
        if channel is None:
            return
        try:
            channel.call("close", signal=self.kill_signal, grace=self.grace, cassette=cassette)
            while not channel.gone:
                channel._receive_one(None)
        except SandboxClosed:
            pass
        info = channel.closed_info if isinstance(channel.closed_info, dict) else {}
        self.dropped = info.get("dropped", {})
        self.divergences = info.get("divergences", self.divergences)
        self.cassette_written = info.get("cassette")
        self.truncated_at = info.get("truncated_at")
        self.udp = info.get("udp", ())
        error = info.get("error")
        for process in self._processes:
            if process.returncode is None and process.pid in channel.exits:
                process.returncode = channel.exits[process.pid]
        if self._finalizer is not None:
            self._finalizer()
        # Everything of ours is stopped; the kernel's unregistering of the TUN
        # devices as the supervisor exits takes ~100 ms, so reap it later.
        self._reap(block=False)
        if error is not None:
            raise error

    @property
    def is_recording(self) -> bool:
        return self.mode == "record"

    def __enter__(self) -> "Sandbox":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        # A recording cut short by an exception never replaces a good cassette.
        self.close("commit" if exc_type is None else "abort")

    # -- hosts ----------------------------------------------------------------------

    def add_host(self, name: str | None = None) -> Host:
        """A new host with the next address of the subnet (.1, .2, ... in order).

        Every host resolves ``name`` (a DNS label, unique in the sandbox) and
        the default name ``hN`` (N = 1, 2, ... in order) of every host, through
        its own ``/etc/hosts``; ``hostname`` in it prints ``name`` (``hN`` if none).
        """
        if len(self.hosts) >= self.subnet.capacity:
            # The caller's mistake: the traceback ends at the caller's line.
            __tracebackhide__ = True
            raise self.subnet.full(len(self.hosts))
        self.start()
        info, _ = self._channel.call("add_host", name=name)
        host = Host(self, info["index"], info["address"], info["name"])
        self.hosts.append(host)
        return host

    def host_output(self, host: Host) -> dict[str, bytes]:
        """What the host's processes wrote, by stream, when ``output_dir`` is set."""
        collected: dict[str, bytes] = {}
        for process in self._processes:
            if process.host is not host:
                continue
            for stream, path in process.output_files.items():
                try:
                    with open(path, "rb") as f:
                        data = f.read()
                except OSError:
                    continue
                if data:
                    collected[stream] = collected.get(stream, b"") + data
        return collected

    def host(self, name_or_address: str) -> Host:
        for index, host in enumerate(self.hosts):
            if name_or_address in (host.name, host.address, default_name(index)):
                return host
        raise KeyError(name_or_address)

    def namespace_inodes(self) -> list[int]:
        """Inode numbers of the sandbox's network namespaces (proxy first): for leak checks."""
        value, _ = self._channel.call("namespaces")
        return value

    @property
    def supervisor_pid(self) -> int | None:
        return self._supervisor_pid

    def stats(self) -> dict:
        value, _ = self._channel.call("stats")
        return value


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


def _reap_later(pid: int) -> None:
    _unreaped.add(pid)


def _reap_pending(block: bool) -> None:
    """Collect exited supervisors; with ``block``, wait for all of them."""
    for pid in list(_unreaped):
        try:
            done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _unreaped.discard(pid)


atexit.register(_reap_pending, True)


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 4096


Sandbox.__module__ = "pytest_netplayground"
Host.__module__ = "pytest_netplayground"
Process.__module__ = "pytest_netplayground"
