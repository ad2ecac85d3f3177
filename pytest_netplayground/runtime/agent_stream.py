"""The authenticated control stream between a supervisor and an agent, and buffered pipe writes.

Both ends use the same pieces: a blocking handshake with a deadline (the
crypto's :class:`Handshake` decides), then a non-blocking stream of sealed
messages driven by the owner's event loop, and, for blocking request/reply
exchanges at set-up time, :meth:`ControlStream.wait_for` with a deadline.
"""

from __future__ import annotations

import errno
import itertools
import os
import select
import socket
import time
from typing import Callable

from ..core import agent_protocol as proto
from ..errors import NetplayError, NetplayTimeout, TunnelError
from .loop import Loop

MessageHandler = Callable[[dict, bytes], None]


def handshake(sock: socket.socket, shake, deadline: float, peer: str) -> None:
    """Run ``shake`` (a :class:`Handshake`) over ``sock`` until both sides proved the key.

    Raises the handshake's own errors (having told the peer why, when the crypto says
    what to tell it), :class:`NetplayTimeout` past ``deadline``.
    """
    first = shake.initial()
    if first:
        _send_all(sock, first, deadline)
    while not shake.done:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([sock], [], [], remaining)[0]:
            raise NetplayTimeout(f"{peer} did not complete the tunnel handshake in time")
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            shake.eof()
        try:
            answer = shake.receive(data)
        except TunnelError as exc:
            if exc.reply:
                try:
                    _send_all(sock, exc.reply, time.monotonic() + 1.0)
                except (OSError, NetplayTimeout):
                    pass
            raise
        if answer:
            _send_all(sock, answer, deadline)


def _send_all(sock: socket.socket, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    while view:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([], [sock], [], remaining)[1]:
            raise NetplayTimeout("the peer stopped reading the control stream")
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            continue


class ControlStream:
    """Sealed messages over a TCP socket, read and written from an event loop without blocking it."""

    def __init__(
        self, sock: socket.socket, channel, rest: bytes, on_message: MessageHandler, on_gone
    ) -> None:
        self.sock = sock
        self.channel = channel
        self.on_message = on_message
        self.on_gone = on_gone
        self.out = bytearray()
        self.loop: Loop | None = None
        self.closed = False
        self.last_heard = time.monotonic()
        self._ids = itertools.count(1)
        self.replies: dict[int, dict] = {}
        sock.setblocking(False)
        self._pending = list(channel.feed(rest)) if rest else []

    def attach(self, loop: Loop) -> None:
        self.loop = loop
        loop.watch(self.sock.fileno(), select.EPOLLIN, self.readable)
        for message in self._pending:
            self._deliver(message)
        self._pending.clear()

    def send(self, op: str, payload: bytes = b"", **fields: object) -> None:
        if self.closed:
            return
        self.out += self.channel.seal(proto.encode(op, payload, **fields))
        self.flush()

    def flush(self) -> None:
        while self.out and not self.closed:
            try:
                sent = self.sock.send(self.out)
            except BlockingIOError:
                break
            except OSError as exc:
                self.close(f"the connection failed ({exc.strerror or exc})")
                return
            del self.out[:sent]
        if self.loop is not None and not self.closed:
            mask = select.EPOLLIN | (select.EPOLLOUT if self.out else 0)
            self.loop.watch(self.sock.fileno(), mask, self.readable, registered=True)

    def readable(self, events: int) -> None:
        if events & select.EPOLLOUT:
            self.flush()
        if not events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
            return
        for _ in range(64):
            if self.closed:
                return
            try:
                data = self.sock.recv(262144)
            except BlockingIOError:
                return
            except OSError as exc:
                self.close(f"the connection failed ({exc.strerror or exc})")
                return
            if not data:
                self.close("closed the connection")
                return
            self.last_heard = time.monotonic()
            try:
                messages = self.channel.feed(data)
            except NetplayError as exc:
                self.close(f"sent a message that failed authentication ({exc})")
                return
            for message in messages:
                self._deliver(message)

    def _deliver(self, message: bytes) -> None:
        try:
            fields, payload = proto.decode(message)
        except ValueError as exc:
            self.close(f"sent a malformed message ({exc})")
            return
        if fields["op"] == "reply" and isinstance(fields.get("rid"), int):
            self.replies[fields["rid"]] = fields
            return
        self.on_message(fields, payload)

    def call(self, op: str, timeout: float = proto.REQUEST_TIMEOUT, **fields: object) -> dict:
        """Send a request and wait for its reply (handling other messages meanwhile); the reply's fields."""
        rid = next(self._ids)
        self.send(op, rid=rid, **fields)
        return self.wait_for(rid, timeout, op)

    def wait_for(self, rid: int, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while rid not in self.replies:
            if self.closed:
                raise EOFError(what)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NetplayTimeout(what)
            r, w, _ = select.select([self.sock], [self.sock] if self.out else [], [], remaining)
            events = (select.EPOLLIN if r else 0) | (select.EPOLLOUT if w else 0)
            self.readable(events)
        return self.replies.pop(rid)

    def close(self, why: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self.loop is not None:
            self.loop.unwatch(self.sock.fileno())
        try:
            self.sock.close()
        except OSError:
            pass
        self.on_gone(why)

    def drain(self, timeout: float) -> None:
        """Write what is buffered, blocking up to ``timeout`` seconds (at teardown)."""
        deadline = time.monotonic() + timeout
        while self.out and not self.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([], [self.sock], [], remaining)[1]:
                return
            self.flush()


class BufferedWriter:
    """Writes to a pipe or file, and closes it when done, without blocking the loop on a pipe
    of ours whose reader is slow (``ours``: made non-blocking; a descriptor that came from the
    caller is left as it is, since the flag would change the caller's own file too)."""

    def __init__(self, loop: Loop, fd: int, ours: bool = True) -> None:
        self.loop = loop
        self.fd = fd
        self.buffer = bytearray()
        self.closing = False
        self.watched = False
        if ours:
            os.set_blocking(fd, False)

    def write(self, data: bytes) -> None:
        if self.fd < 0:
            return
        self.buffer += data
        self._flush()

    def close_when_done(self) -> None:
        self.closing = True
        self._flush()

    def _flush(self, events: int = 0) -> None:
        while self.buffer and self.fd >= 0:
            try:
                n = os.write(self.fd, self.buffer)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.EBADF, errno.EIO):
                    raise
                self.buffer.clear()
                self.closing = True
                break
            del self.buffer[:n]
        if self.buffer and not self.watched:
            self.loop.watch(self.fd, select.EPOLLOUT, self._flush)
            self.watched = True
        elif not self.buffer and self.watched:
            self.loop.unwatch(self.fd)
            self.watched = False
        if self.closing and not self.buffer:
            self.close()

    def close(self) -> None:
        if self.fd < 0:
            return
        if self.watched:
            self.loop.unwatch(self.fd)
            self.watched = False
        os.close(self.fd)
        self.fd = -1
