"""One agent as the supervisor sees it: the control stream, the tunnel, the remote processes.

The link proves the key, sizes the remote hosts' MTU for the path, carries
requests (new hosts, spawn, signals, listening ports) and notices the agent
going away (end of the stream, or silence past the keepalives). Packets go
through :class:`TunnelEnds`. Processes in remote hosts get ids above every
local pid; their output comes over the control stream and is written where
the caller asked (a pipe passed back, a file, the supervisor's own stdout).
"""

from __future__ import annotations

import itertools
import os
import select
import signal
import socket
import stat
import sys
import time
from typing import Callable

from ..core import agent_protocol as proto
from ..errors import AgentError, AgentLost, CommandNotFound, NetplayError, NetplayTimeout, TunnelProtocolError
from .agent_stream import BufferedWriter, ControlStream, handshake
from .control import Spawn, StdioMode
from .loop import Loop
from .tunnel import Handshake
from .tunnel_ends import TunnelEnds

HANDSHAKE_TIMEOUT = 10.0
IP_MTU = 14
IPV6_MTU = 24
_ids = itertools.count(proto.REMOTE_PID_BASE + 1)


class RemoteChild:
    """A process in a remote host: its id, its host, and where its input comes from."""

    __slots__ = ("pid", "host", "stdin")

    def __init__(self, pid: int, host: int) -> None:
        self.pid = pid
        self.host = host
        self.stdin = -1


def _path_mtu(sock: socket.socket, ipv6: bool) -> int:
    try:
        if ipv6:
            return sock.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU)
        return sock.getsockopt(socket.IPPROTO_IP, IP_MTU)
    except OSError:
        return 1500


class AgentLink:
    """See the module docstring. Connects and proves the key when made (before the supervisor
    leaves the machine's network namespace); :meth:`attach` then joins the supervisor's loop."""

    def __init__(
        self, address: proto.AgentAddress, key: bytes, plaintext: bool = False, tunnel_mtu: int | None = None
    ) -> None:
        self.address = address
        self.error: NetplayError | None = None
        self.closed = False
        self.report: dict = {}
        self.children: dict[int, RemoteChild] = {}
        # Where each remote process's output goes, by (id, stream): until its end of stream
        # arrives, which may be after its exit (a daemon it started may hold the pipe).
        self.sinks: dict[tuple[int, str], BufferedWriter] = {}
        self.asked_close = False
        self.hosts: dict[int, str] = {}
        self.loop: Loop | None = None
        self.on_exit: Callable[[int, int], None] = lambda pid, code: None
        sock = self._connect()
        try:
            peer = f"{address.name}={address.text}"
            shake = Handshake.supervisor(key, insecure_plaintext=plaintext, peer=peer)
            self._prove(sock, shake)
            self.datagrams = shake.keys.datagrams()
            self.tunnel = TunnelEnds(address.host, address.port, address.ipv6, self.datagrams)
            self.path_mtu = _path_mtu(sock, address.ipv6)
            # ``tunnel_mtu`` over the path's own: the kernel fragments the sealed datagrams.
            self.mtu = proto.tun_mtu(tunnel_mtu or self.path_mtu, self.datagrams.overhead, address.ipv6)
            self.stream = ControlStream(sock, shake.keys.control(), shake.rest, self._message, self._gone)
            self._call("hello", version=proto.VERSION, udp_port=self.tunnel.port)
        except BaseException:
            sock.close()
            raise

    def _connect(self) -> socket.socket:
        where = f"{self.address.host}:{self.address.port}"
        try:
            return socket.create_connection((self.address.host, self.address.port), timeout=5.0)
        except OSError as exc:
            raise AgentError(
                f"cannot reach agent {self.address} ({exc.strerror or exc}): start "
                f"'netplay agent --listen {where} --key-file FILE' on that machine, and check the address"
            ) from exc

    def _prove(self, sock: socket.socket, shake) -> None:
        try:
            handshake(sock, shake, time.monotonic() + HANDSHAKE_TIMEOUT, f"agent {self.address}")
        except TunnelProtocolError as exc:
            raise AgentError(
                f"agent {self.address}: {exc} (an agent serving another sandbox hangs up at once)"
            ) from exc
        except NetplayTimeout as exc:
            raise AgentError(
                f"agent {self.address} did not answer the handshake in {HANDSHAKE_TIMEOUT:.0f} s"
            ) from exc
        except OSError as exc:
            raise AgentError(
                f"the connection to agent {self.address} failed ({exc.strerror or exc})"
            ) from exc

    # -- requests -----------------------------------------------------------------------

    def _call(self, op: str, **fields: object) -> object:
        self._check()
        try:
            reply = self.stream.call(op, **fields)
        except EOFError:
            self._check()
            raise AgentLost(f"agent {self.address} went away during {op!r}") from None
        except NetplayTimeout:
            raise AgentError(
                f"agent {self.address} did not answer {op!r} in {proto.REQUEST_TIMEOUT:.0f} s"
            ) from None
        if not reply.get("ok"):
            message = f"agent {self.address}: {reply.get('error')}"
            raise CommandNotFound(message) if reply.get("kind") == "not_found" else AgentError(message)
        return reply.get("value")

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

    def attach(self, loop: Loop, on_exit: Callable[[int, int], None]) -> None:
        self.loop = loop
        self.on_exit = on_exit
        self.stream.attach(loop)
        self.tunnel.attach(loop)
        loop.call_at(time.monotonic() + proto.KEEPALIVE, self._keepalive)

    def add_host(
        self, index: int, name: str, address: str, address6: str | None, prefixes: tuple, hosts: str
    ) -> int:
        """Make the host on the agent (``prefixes``: of the IPv4 and IPv6 subnets); the descriptor the
        router uses as its TUN."""
        self._call(
            "add_host", index=index, name=name, address=address, prefixlen=prefixes[0],
            address6=address6, prefixlen6=prefixes[1], hosts=hosts, mtu=self.mtu,
        )
        self.hosts[index] = name
        return self.tunnel.add(address, address6)

    def hosts_changed(self, text: str) -> None:
        if self.hosts and self.error is None:
            self.stream.send("hosts", hosts=text)

    def spawn(self, request: Spawn) -> tuple[RemoteChild, list[int]]:
        self._check()
        child = RemoteChild(next(_ids), request.host)
        modes, to_caller, data = remote_stdio(self.loop, request, child, self.sinks)
        try:
            self._call(
                "spawn", id=child.pid, host=request.host, argv=list(request.argv), env=request.env,
                cwd=request.cwd, user=request.user, group=request.group, **modes,
            )
        except BaseException:
            self._forget(child)
            for fd in to_caller:
                os.close(fd)
            raise
        self.children[child.pid] = child
        if data is not None:
            self.stream.send("stdin", data, id=child.pid, eof=True)
        elif child.stdin >= 0:
            self.loop.watch(child.stdin, select.EPOLLIN, lambda ev, c=child: self._read_stdin(c))
        return child, to_caller

    def _read_stdin(self, child: RemoteChild) -> None:
        try:
            data = os.read(child.stdin, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self.stream.send("stdin", data, id=child.pid, eof=not data)
        if not data:
            self.loop.unwatch(child.stdin)
            os.close(child.stdin)
            child.stdin = -1

    def signal(self, pid: int, signum: int, group: bool) -> None:
        if pid in self.children and self.error is None:
            self.stream.send("signal", id=pid, signal=signum, group=group)

    def listening(self, host: int, port: int, proto_name: str = "tcp") -> bool:
        return bool(self._call("listening", host=host, port=port, proto=proto_name))

    def busy(self, host: int) -> bool:
        return any(child.host == host for child in self.children.values())

    # -- messages from the agent ---------------------------------------------------------------

    def _message(self, fields: dict, payload: bytes) -> None:
        op = fields["op"]
        child = self.children.get(fields.get("id"))
        if op == "output":
            sink = self.sinks.get((fields.get("id"), fields.get("stream")))
            if sink is not None:
                sink.write(payload)
        elif op == "eof":
            sink = self.sinks.pop((fields.get("id"), fields.get("stream")), None)
            if sink is not None:
                sink.close_when_done()
        elif op == "exit" and child is not None:
            self._end(child, int(fields["code"]))
        elif op == "closed":
            self.report = fields
            if not self.asked_close:
                self._gone("was stopped on its machine")
            self.closed = True
        elif op == "fatal":
            self.stream.close(f"could not serve: {fields.get('error')}")

    def _end(self, child: RemoteChild, code: int) -> None:
        self.children.pop(child.pid, None)
        self._forget(child, sinks=False)
        self.on_exit(child.pid, code)

    def _forget(self, child: RemoteChild, sinks: bool = True) -> None:
        if child.stdin >= 0:
            if self.loop is not None:
                self.loop.unwatch(child.stdin)
            os.close(child.stdin)
            child.stdin = -1
        for key in [key for key in self.sinks if key[0] == child.pid] if sinks else ():
            self.sinks.pop(key).close()

    def _end_all(self) -> None:
        """Every remote process ended (killed with its agent), and its output's end written."""
        for sink in self.sinks.values():
            sink.close_when_done()
        self.sinks.clear()
        for child in list(self.children.values()):
            self._end(child, -signal.SIGKILL)

    def _gone(self, why: str) -> None:
        if self.closed:
            return
        self.error = AgentLost(
            f"agent {self.address} went away: it {why}; its hosts "
            f"({', '.join(self.hosts.values()) or 'none yet'}) ended with it"
        )
        sys.stderr.write(f"netplay: {self.error}\n")
        sys.stderr.flush()
        self._shut()
        self._end_all()

    def _shut(self) -> None:
        self.tunnel.close()

    def _keepalive(self) -> None:
        if self.error is not None or self.closed or self.stream.closed:
            return
        if time.monotonic() - self.stream.last_heard > proto.DEAD_AFTER:
            self.stream.close(
                f"was silent for {proto.DEAD_AFTER:.0f} s (its machine or the network between is down)"
            )
            return
        self.stream.send("ping")
        self.loop.call_at(time.monotonic() + proto.KEEPALIVE, self._keepalive)

    # -- the end --------------------------------------------------------------------------------

    def ask_close(self, signum: int, grace: float) -> None:
        self.asked_close = True
        if self.error is None and not self.closed:
            self.stream.send("close", signal=signum, grace=grace)

    def finish(self) -> None:
        """After the agent said ``closed`` (or went away, or the wait ran out): let go of everything."""
        self._end_all()
        if self.error is None:
            self.closed = True
            self.stream.close("closed")
            self._shut()


def remote_stdio(
    loop: Loop, request: Spawn, child: RemoteChild, sinks: dict
) -> tuple[dict, list[int], bytes | None]:
    """What the agent does with a remote process's three streams (its output goes to ``sinks``), the
    caller's ends of the new pipes, and stdin's bytes when they come from a file (sent at once)."""
    fds = iter(request.fds)
    modes: dict[str, str] = {}
    to_caller: list[int] = []
    data = None
    for i, (name, mode) in enumerate(zip(("stdin", "stdout", "stderr"), request.stdio)):
        agent_mode = StdioMode.DEVNULL
        if name == "stdin":
            if mode is StdioMode.PIPE:
                r, w = os.pipe2(os.O_CLOEXEC)
                os.set_blocking(r, False)  # ours only: the caller's end stays as pipes are
                to_caller.append(w)
                child.stdin = r
                agent_mode = StdioMode.PIPE
            elif mode is StdioMode.FD:
                fd = next(fds)
                if stat.S_ISREG(os.fstat(fd).st_mode):
                    data = _read_file(fd)
                    agent_mode = StdioMode.PIPE
                os.close(fd)
        elif mode is StdioMode.PIPE:
            r, w = os.pipe2(os.O_CLOEXEC)
            to_caller.append(r)
            sinks[child.pid, name] = BufferedWriter(loop, w, ours=True)
            agent_mode = StdioMode.PIPE
        elif mode is StdioMode.FD:
            sinks[child.pid, name] = BufferedWriter(loop, next(fds), ours=False)
            agent_mode = StdioMode.PIPE
        elif mode is StdioMode.INHERIT:
            sinks[child.pid, name] = BufferedWriter(loop, os.dup(i), ours=False)
            agent_mode = StdioMode.PIPE
        elif mode is StdioMode.STDOUT:
            agent_mode = StdioMode.STDOUT
        modes[name] = agent_mode.value
    return modes, to_caller, data


def _read_file(fd: int) -> bytes:
    chunks = []
    offset = 0
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)
