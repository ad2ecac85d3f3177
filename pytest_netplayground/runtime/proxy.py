"""The proxy's connections: a pipe per TCP connection, its server leg and its listener.

A client's SYN, held by the router, makes the proxy connect a server leg to
the real server from the client's alias and port; once that connects, a
listener for the server's alias takes the released SYN and its accepted
socket becomes the client leg. What the session decides (refuse, stand in
for a server absent on replay) is applied here.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import time
from typing import Callable

import attrs

from ..core.addressing import AddressPlan, Endpoint, decode_key, encode_key, family, key_server, pack_ip
from ..core.events import Outcome
from ..core.router import Router
from .loop import Loop
from .network import Network
from .pipes import READ_SIZE, Leg, Pipe, Tap
from .processes import Processes
from .session import Session

# How long the proxy waits for a client whose SYN it passed on to complete the
# handshake before it gives the connection up and resets the server's side
# (the client abandoned its connect, or its SYN was forged).
CLIENT_PATIENCE = 10.0
# What a failed connect of a server leg tells the client; any other error: refused.
_CONNECT_FAILURES = {
    errno.ECONNREFUSED: Outcome.REFUSED,
    errno.EHOSTUNREACH: Outcome.UNREACHABLE,
    errno.ENETUNREACH: Outcome.UNREACHABLE,
    errno.ETIMEDOUT: Outcome.TIMED_OUT,
}


# IPV6_FREEBIND: binding to an IPv6 alias, which a local route covers but no
# interface carries, needs it (IPv4 binds to such addresses as they are).
_IPV6_FREEBIND = 78


def _proxy_socket(address: str) -> socket.socket:
    """A non-blocking TCP socket of the proxy, of ``address``'s family, that may bind an alias."""
    sock = socket.socket(family(address), socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_FREEBIND, 1)
    return sock


@attrs.define(eq=False)
class Proxy:
    """Owns the pipes, the server legs still connecting and the listeners; ``closing()`` says
    whether the sandbox is closing (then a refused connection waits for its server no more)."""

    loop: Loop
    plan: AddressPlan
    router: Router
    network: Network
    session: Session
    processes: Processes
    closing: Callable[[], bool]
    # With ``tls="intercept"``: the :class:`~.tls_interceptor.Interceptor` that wraps every connection's tap.
    tls: object = None
    # The :class:`~.toxic_tap.ToxicBox` that wraps every connection's tap, inside TLS (toxics act on plaintext).
    toxics: object = None
    # The :class:`~.shadowing.ShadowBox` that mirrors connections to shadowed primaries, inside TLS.
    shadows: object = None
    pipes: dict[bytes, Pipe] = attrs.field(init=False, factory=dict)
    connecting: dict[int, Pipe] = attrs.field(init=False, factory=dict)
    listeners: dict[tuple[str, int], socket.socket] = attrs.field(init=False, factory=dict)
    # Every pipe reads into it, one read at a time.
    read_buffer: bytearray = attrs.field(init=False, factory=lambda: bytearray(READ_SIZE))

    def open_server_leg(self, key: bytes) -> None:
        """The router holds a new connection's SYN: answer it as the session says, or connect its server."""
        client, server = decode_key(key)
        outcome = self.session.on_syn(client, server)
        if outcome is not Outcome.ESTABLISHED:
            self._answer_syn(key, outcome)
            return
        pipe = Pipe(self.loop, key, client, server, Tap(), self.read_buffer, self._pipe_finished)
        self.pipes[key] = pipe
        if self.router.host_of(key_server(key)) not in self.processes.inhabited:
            # Nothing ever ran there, so nothing listens: no need to ask its kernel.
            self._server_leg_failed(pipe, errno.ECONNREFUSED)
        else:
            self._connect_server_leg(pipe)

    def host_is_empty(self, address: str) -> bool:
        """Whether nothing was ever run in the host that owns ``address``: no process
        and no socket, so nothing there listens (replay then stands in at once)."""
        return self.router.host_of(pack_ip(address)) not in self.processes.inhabited

    def _connect_server_leg(self, pipe: Pipe) -> None:
        """Connect the proxy's socket to the real server, from the client's alias and port."""
        sock = _proxy_socket(pipe.client.host)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((self.plan.alias(pipe.client.host), pipe.client.port))
        except OSError:
            sock.close()
            self.router.forget(pipe.key)
            self.router.dropped["server leg bind failed"] += 1
            pipe.close()
            return
        pipe.server_leg = Leg(sock)
        err = sock.connect_ex((pipe.server.host, pipe.server.port))
        if err not in (0, errno.EINPROGRESS):
            self._server_leg_failed(pipe, err)
            return
        self.connecting[sock.fileno()] = pipe
        self.loop.watch(sock.fileno(), select.EPOLLOUT, lambda ev, p=pipe: self._server_leg_ready(p))
        pipe.server_leg.mask = select.EPOLLOUT

    def _host_is_busy(self, address: str) -> bool:
        """Whether a process of ours runs in the host that owns ``address``."""
        index = self.router.host_of(pack_ip(address))
        return index is not None and self.processes.busy(index)

    def _server_leg_ready(self, pipe: Pipe) -> None:
        leg = pipe.server_leg
        err = leg.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self.connecting.pop(leg.fd, None)
        if err:
            self._server_leg_failed(pipe, err)
            return
        # Idle until the client leg is accepted: a server that greets first
        # must not have its banner read before there is someone to give it to.
        self.loop.watch(leg.fd, 0, lambda ev: None, registered=True)
        leg.mask = 0
        since = self.processes.inhabited.get(self.router.host_of(key_server(pipe.key)))
        if since is not None:
            self.session.note_listening(pipe.server, self.loop.now() - since)
        self._set_tap(pipe, server_live=True)
        self._release(pipe)

    def _release(self, pipe: Pipe) -> None:
        self._ensure_listener(self.plan.alias(pipe.server.host), pipe.server.port)
        syn = self.router.release(pipe.key)
        if syn is not None:
            os.write(self.network.proxy_tun, syn)
        self.loop.call_at(self.loop.now() + CLIENT_PATIENCE, self._client_never_came, owner=pipe)

    def _client_never_came(self, pipe: Pipe) -> None:
        """Reset the server's side of a connection whose client never completed its handshake."""
        if pipe.finished or pipe.client_leg is not None:
            return
        listener = self.listeners.get((self.plan.alias(pipe.server.host), pipe.server.port))
        if listener is not None:
            self._accept(listener)  # it may be waiting to be accepted
        if not pipe.finished and pipe.client_leg is None:
            pipe.abort()

    def _server_leg_failed(self, pipe: Pipe, err: int) -> None:
        outcome = _CONNECT_FAILURES.get(err, Outcome.REFUSED)
        if outcome is Outcome.REFUSED and self.session.stand_in(pipe):
            self._stand_in(pipe)
            return
        self.session.connect_failed(pipe.client, pipe.server, outcome)
        self._answer_syn(pipe.key, outcome)
        self.router.forget(pipe.key)
        pipe.close()

    def _answer_syn(self, key: bytes, outcome: Outcome) -> None:
        """Answer the client's held SYN as a failed attempt ends: a reset when refused, ICMP host
        unreachable when unreachable; timed out, no answer at all (the SYN stays held)."""
        if outcome is Outcome.REFUSED:
            answer = self.router.refuse(key)
        elif outcome is Outcome.UNREACHABLE:
            answer = self.router.unreachable(key)
        else:
            return
        if answer is not None:
            host, packet = answer
            os.write(self.network.host_tun[host], packet)

    def _stand_in(self, pipe: Pipe) -> None:
        """Replay, and the recorded server refused: wait for it if its host is busy, else the cassette plays it."""
        if pipe.server_leg is not None:
            self.connecting.pop(pipe.server_leg.fd, None)
            self.loop.unwatch(pipe.server_leg.fd)
            pipe.server_leg.sock.close()
        pipe.server_leg = None
        now = time.monotonic()
        if pipe.retry_until is None and self._host_is_busy(pipe.server.host):
            # Wait as long as the recorded server took to listen, from its host's start.
            since = self.processes.inhabited[self.router.host_of(key_server(pipe.key))]
            pipe.retry_until = self.session.stand_in_deadline(pipe.server, since, now)
        if pipe.retry_until is not None and now < pipe.retry_until and not self.closing():
            # Its server may not listen yet: the client's SYN waits, as over a slow network.
            self.loop.call_at(now + 0.02, lambda: pipe.finished or self._connect_server_leg(pipe))
            return
        self._set_tap(pipe, server_live=False)
        self._release(pipe)

    def _set_tap(self, pipe: Pipe, server_live: bool) -> None:
        tap = self.session.tap_for(pipe, server_live=server_live)
        if self.toxics is not None:
            tap = self.toxics.wrap(tap, pipe)
        if self.shadows is not None:
            tap = self.shadows.wrap(tap, pipe)
        pipe.tap = tap if self.tls is None else self.tls.wrap(tap, pipe, self.session)

    def _ensure_listener(self, address: str, port: int) -> None:
        if (address, port) in self.listeners:
            return
        sock = _proxy_socket(address)
        sock.bind((address, port))
        sock.listen(4096)
        self.listeners[(address, port)] = sock
        self.loop.watch(sock.fileno(), select.EPOLLIN, lambda ev, s=sock: self._accept(s))

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(64):
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            local = sock.getsockname()
            key = encode_key(Endpoint(peer[0], peer[1]), Endpoint(self.plan.unalias(local[0]), local[1]))
            pipe = self.pipes.get(key)
            if pipe is None or pipe.client_leg is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                sock.close()
                continue
            pipe.client_leg = Leg(sock)
            pipe.start(self.loop.now())

    def _pipe_finished(self, pipe: Pipe) -> None:
        self.connecting.pop(pipe.server_leg.fd if pipe.server_leg else -1, None)
        if self.pipes.get(pipe.key) is pipe:
            del self.pipes[pipe.key]
        self.router.forget(pipe.key)

    def close(self) -> None:
        """The sandbox is closing: a server leg still connecting timed out, every pipe is closed."""
        for pipe in list(self.connecting.values()):
            self.session.connect_failed(pipe.client, pipe.server, Outcome.TIMED_OUT)
        for pipe in list(self.pipes.values()):
            pipe.close()
