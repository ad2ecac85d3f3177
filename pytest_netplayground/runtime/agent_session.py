"""One sandbox's hosts on an agent's machine: built, run and torn down for one supervisor.

The agent forks one of these per supervisor that proved the key. It builds
its hosts the way the supervisor builds local ones (:mod:`netns`,
:mod:`hostfs`, :class:`Processes`), carries their IP packets to the
supervisor's router in sealed UDP datagrams, and runs the requests that come
over the control stream. It ends, and everything it made with it, when the
supervisor says ``close``, goes quiet, or the agent is stopped.
"""

from __future__ import annotations

import collections
import os
import select
import signal
import socket
import sys
import time

from ..core import agent_protocol as proto
from ..errors import CommandNotFound, NetplayError
from . import hostfs, netns
from .agent_stream import BufferedWriter, ControlStream
from .control import Spawn, StdioMode
from .loop import Loop
from .network import Network
from .processes import Processes
from .udp_batch import BatchReceiver, BatchSender

HOST_TUN = "eth0"
#: Silence from the supervisor after which the session ends on its own (its machine went away).
SUPERVISOR_DEAD_AFTER = 30.0


def say(text: str) -> None:
    sys.stderr.write(f"netplay agent: {text}\n")
    sys.stderr.flush()


class _Remote:
    """A process this agent started for the supervisor: its id there, its pid here, its pipes."""

    __slots__ = ("id", "pid", "stdin", "readers")

    def __init__(self, id: int, pid: int) -> None:
        self.id = id
        self.pid = pid
        self.stdin: BufferedWriter | None = None
        self.readers: dict[str, int] = {}


class AgentSession:
    """See the module docstring. Built in the session's own process; :meth:`serve` returns at the end."""

    def __init__(self, conn: socket.socket, udp: socket.socket, keys, rest: bytes, peer: str, rootless: bool):
        self.peer = peer
        self.peer_ip = conn.getpeername()[0]
        self.loop = Loop()
        self.stream = ControlStream(conn, keys.control(), rest, self._message, self._gone)
        self.datagrams = keys.datagrams()
        self.udp = udp
        udp.setblocking(False)
        self.receiver = BatchReceiver(udp)
        self.udp_peer: tuple | None = None
        self.batch: BatchSender | None = None  # to udp_peer, once the supervisor said hello
        self.dropped: collections.Counter = collections.Counter()
        self.stopping = False
        self.kill_signal = signal.SIGTERM
        self.grace = 2.0
        self.home = netns.new_netns()
        self.network = Network(self.home, -1)
        self.host_files = hostfs.HostFiles()
        self.processes = Processes(
            self.loop, self.network, self.host_files, lambda host, argv: None, self._exited, rootless
        )
        self.local: dict[int, int] = {}  # the supervisor's host index -> ours
        self.by_address: dict[bytes, int] = {}  # packed address -> its host's TUN
        self.remote: dict[int, _Remote] = {}  # by the supervisor's id
        self.by_pid: dict[int, _Remote] = {}
        self.stream.attach(self.loop)
        self.loop.watch(udp.fileno(), select.EPOLLIN, self._udp_readable)
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wakeup_w)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self.loop.watch(self._wakeup_r, select.EPOLLIN, lambda ev: os.read(self._wakeup_r, 4096))
        self.loop.call_at(time.monotonic() + proto.KEEPALIVE, self._keepalive)

    # -- life ---------------------------------------------------------------------

    def _on_sigterm(self, signum, frame) -> None:
        self.stopping = True
        self.kill_signal = signal.SIGKILL
        self.grace = 0.0

    def _gone(self, why: str) -> None:
        if not self.stopping:
            say(f"supervisor {self.peer} {why}: ending its hosts")
        self.stopping = True
        self.kill_signal = signal.SIGKILL
        self.grace = 0.0

    def _keepalive(self) -> None:
        if self.stopping:
            return
        if time.monotonic() - self.stream.last_heard > SUPERVISOR_DEAD_AFTER:
            self.stream.close(f"was silent for {SUPERVISOR_DEAD_AFTER:.0f} s")
            return
        self.stream.send("ping")
        self.loop.call_at(time.monotonic() + proto.KEEPALIVE, self._keepalive)

    def serve(self) -> None:
        while not self.stopping:
            self.loop.run_once(None)
        self.processes.stop(self.kill_signal, self.grace)
        for remote in list(self.remote.values()):
            self._drain(remote)
        dropped = {**self.dropped, **self.datagrams.dropped}
        self.stream.send("closed", dropped=dropped)
        self.stream.drain(5.0)
        self.host_files.close()
        if dropped:
            say(f"session of {self.peer} ended; dropped: {dict(dropped)}")
        else:
            say(f"session of {self.peer} ended")

    # -- the tunnel -----------------------------------------------------------------

    def _udp_readable(self, events: int) -> None:
        open_, receive, by_address = self.datagrams.open, self.receiver.receive, self.by_address
        write = os.write
        for _ in range(64):
            try:
                datagrams = receive()
            except BlockingIOError:
                return
            except OSError:
                self.dropped["receive failed"] += 1
                return
            for data in datagrams:
                packet = open_(data)
                if packet is None:
                    continue
                version = packet[0] >> 4 if packet else 0
                dst = packet[16:20] if version == 4 else packet[24:40] if version == 6 else b""
                tun = by_address.get(bytes(dst))
                if tun is None:
                    self.dropped["no such host"] += 1
                    continue
                try:
                    write(tun, packet)
                except OSError:
                    self.dropped["write failed"] += 1

    def _tun_reader(self, tun: int, own: set[bytes]):
        buf = bytearray(65536)
        view = memoryview(buf)
        readv = os.readv
        seal = self.datagrams.seal

        def readable(events: int) -> None:
            batch = self.batch
            try:
                for _ in range(64):
                    n = readv(tun, [buf])
                    version = buf[0] >> 4
                    src = bytes(buf[12:16]) if version == 4 else bytes(buf[8:24])
                    if src not in own or batch is None:
                        self.dropped["not from its host"] += 1
                        continue
                    batch.add(seal(view[:n]))
            except BlockingIOError:
                pass
            if batch is not None:
                batch.flush()

        return readable

    # -- requests -------------------------------------------------------------------

    def _message(self, fields: dict, payload: bytes) -> None:
        op = fields["op"]
        rid = fields.get("rid")
        try:
            handler = getattr(self, "_op_" + op, None)
            if handler is None:
                raise ValueError(f"unknown request {op!r}")
            value = handler(fields, payload)
        except NetplayError as exc:
            if rid is not None:
                kind = "not_found" if isinstance(exc, CommandNotFound) else "error"
                self.stream.send("reply", rid=rid, ok=False, kind=kind, error=str(exc))
            return
        except (KeyError, TypeError, ValueError, OSError) as exc:
            if rid is not None:
                self.stream.send("reply", rid=rid, ok=False, kind="error", error=f"{op}: {exc}")
            return
        if rid is not None:
            self.stream.send("reply", rid=rid, ok=True, value=value)

    def _op_ping(self, fields: dict, payload: bytes) -> None:
        return None

    def _op_hello(self, fields: dict, payload: bytes) -> dict:
        if fields.get("version") != proto.VERSION:
            raise ValueError(
                f"control protocol version {fields.get('version')}; this agent speaks {proto.VERSION}"
            )
        self.udp_peer = (self.peer_ip, int(fields["udp_port"]))
        self.batch = BatchSender(self.udp, self.dropped, self.udp_peer)
        return {"pid": os.getpid()}

    def _op_add_host(self, fields: dict, payload: bytes) -> int:
        address, address6 = fields["address"], fields.get("address6")
        ns = tun = -1
        try:
            ns = netns.new_netns()
            try:
                tun = netns.open_tun(HOST_TUN)
                netns.configure_host(
                    HOST_TUN, address, int(fields["prefixlen"]), address6, int(fields["prefixlen6"]),
                    mtu=int(fields["mtu"]),
                )
            finally:
                netns.setns(self.home)
            self.host_files.add(fields["name"], fields["hosts"])
        except BaseException:
            for fd in (tun, ns):
                if fd >= 0:
                    os.close(fd)
            raise
        local = len(self.network.host_ns)
        self.network.host_ns.append(ns)
        self.network.host_tun.append(tun)
        self.network.host_names.append(fields["name"])
        self.local[int(fields["index"])] = local
        own = {socket.inet_aton(address)}
        if address6:
            own.add(socket.inet_pton(socket.AF_INET6, address6))
        for packed in own:
            self.by_address[packed] = tun
        self.loop.watch(tun, select.EPOLLIN, self._tun_reader(tun, own))
        return local

    def _op_hosts(self, fields: dict, payload: bytes) -> None:
        if self.host_files.home is not None:
            self.host_files.set_hosts(fields["hosts"])

    def _op_spawn(self, fields: dict, payload: bytes) -> int:
        local = self.local[int(fields["host"])]
        cwd = fields["cwd"] if os.path.isdir(fields["cwd"]) else os.getcwd()
        stdio = tuple(StdioMode(fields[name]) for name in ("stdin", "stdout", "stderr"))
        request = Spawn(
            host=local,
            argv=fields["argv"],
            env=fields["env"],
            cwd=cwd,
            stdio=stdio,
            user=fields.get("user"),
            group=fields.get("group"),
        )
        child, ends = self.processes.spawn(request)
        remote = _Remote(int(fields["id"]), child.pid)
        got = iter(ends)
        for name, mode in zip(("stdin", "stdout", "stderr"), stdio):
            if mode is not StdioMode.PIPE:
                continue
            fd = next(got)
            if name == "stdin":
                remote.stdin = BufferedWriter(self.loop, fd)
            else:
                os.set_blocking(fd, False)
                remote.readers[name] = fd
                self.loop.watch(fd, select.EPOLLIN, lambda ev, r=remote, s=name: self._read_output(r, s))
        self.remote[remote.id] = remote
        self.by_pid[child.pid] = remote
        return child.pid

    def _op_stdin(self, fields: dict, payload: bytes) -> None:
        remote = self.remote.get(int(fields["id"]))
        if remote is not None and remote.stdin is not None:
            if payload:
                remote.stdin.write(payload)
            if fields.get("eof"):
                remote.stdin.close_when_done()

    def _op_signal(self, fields: dict, payload: bytes) -> None:
        remote = self.remote.get(int(fields["id"]))
        if remote is not None and remote.pid in self.processes.children:
            self.processes.signal(remote.pid, int(fields["signal"]), bool(fields.get("group")))

    def _op_listening(self, fields: dict, payload: bytes) -> bool:
        local = self.local[int(fields["host"])]
        if fields.get("proto") == "udp":
            return self.processes.udp_bound(local, int(fields["port"]))
        return self.processes.listening(local, int(fields["port"]))

    def _op_close(self, fields: dict, payload: bytes) -> None:
        self.stopping = True
        self.kill_signal = int(fields.get("signal", signal.SIGTERM))
        self.grace = float(fields.get("grace", 2.0))

    # -- processes' output and ends --------------------------------------------------------

    def _read_output(self, remote: _Remote, stream: str) -> None:
        fd = remote.readers.get(stream)
        if fd is None:
            return
        for _ in range(16):
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.loop.unwatch(fd)
                os.close(fd)
                del remote.readers[stream]
                self.stream.send("eof", id=remote.id, stream=stream)
                return
            self.stream.send("output", data, id=remote.id, stream=stream)

    def _drain(self, remote: _Remote) -> None:
        """Send what the process wrote before it ended (its pipes may hold more than one read)."""
        for stream in list(remote.readers):
            self._read_output(remote, stream)

    def _exited(self, pid: int, code: int) -> None:
        remote = self.by_pid.pop(pid, None)
        if remote is None:
            return
        self._drain(remote)
        if remote.stdin is not None:
            remote.stdin.close()
        self.stream.send("exit", id=remote.id, code=code)
