"""Proxy pipes: the two kernel sockets that terminate one TCP connection.

The *client leg* is the socket the proxy accepted from the real client; the
*server leg* is the socket the proxy connected to the real server. A pipe
moves bytes between them without ever blocking the supervisor's loop (the
router carries the proxy's own packets, so a blocking send would deadlock it):
non-blocking sockets, an output buffer per leg, and a leg is not read while
its peer's buffer is full.

What happens to the bytes is the job of a :class:`Tap`: forward them (live),
forward and record them, or drop them and write recorded bytes instead.
"""

from __future__ import annotations

import errno
import select
import socket
import struct
from typing import Callable

from ..core.addressing import Endpoint
from ..core.events import Direction

C2S = Direction.C2S
S2C = Direction.S2C

READ_SIZE = 256 * 1024
# Stop reading the source once this much is queued for the peer.
HIGH_WATER = 1 << 20

_LINGER_ABORT = struct.pack("ii", 1, 0)


class Leg:
    """One socket of a pipe and the bytes queued to be written to it."""

    __slots__ = (
        "sock",
        "fd",
        "out",
        "reading",
        "shut_pending",
        "shut_done",
        "read_eof",
        "closed",
        "mask",
        "handler",
    )

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.fd = sock.fileno()
        self.out = bytearray()
        self.reading = False
        self.shut_pending = False  # shutdown(SHUT_WR) once ``out`` drains
        self.shut_done = False
        self.read_eof = False
        self.closed = False
        self.mask = -1
        self.handler = None


class Tap:
    """Decides what a pipe does with what each side sends. Default: forward."""

    def attach(self, pipe: "Pipe", now: float) -> None:
        """Both legs exist (or the client leg alone, for a stand-in)."""

    def data(self, pipe: "Pipe", direction: Direction, data: memoryview, now: float) -> None:
        pipe.write(direction, data)

    def eof(self, pipe: "Pipe", direction: Direction, now: float) -> None:
        pipe.shut_write(direction)

    def reset(self, pipe: "Pipe", direction: Direction, now: float) -> None:
        pipe.abort()

    def write_failed(self, pipe: "Pipe", direction: Direction, now: float) -> None:
        """Writing to the live receiver of ``direction`` failed (it reset or went away)."""
        pipe.abort()

    def closed(self, pipe: "Pipe", now: float) -> None:
        """Both legs are closed; the pipe is finished."""


class Pipe:
    """A proxied TCP connection between ``client`` and ``server``.

    ``read_buffer`` is where its legs read into (the proxy lends every pipe
    the same one: a read is handed on before the next); ``on_finished`` is
    told when the pipe closes, so its owner can forget it.
    """

    def __init__(
        self,
        loop,
        key: bytes,
        client: Endpoint,
        server: Endpoint,
        tap: Tap,
        read_buffer: bytearray,
        on_finished: Callable[["Pipe"], None] | None = None,
    ):
        self.loop = loop
        self.key = key
        self.client = client
        self.server = server
        self.tap = tap
        self.read_buffer = read_buffer
        self.on_finished = on_finished
        self.client_leg: Leg | None = None
        self.server_leg: Leg | None = None
        self.finished = False
        self.retry_until: float | None = None

    # -- wiring -----------------------------------------------------------------

    def leg_for(self, direction: Direction) -> Leg | None:
        """The leg that *receives* bytes travelling in ``direction``."""
        return self.server_leg if direction is C2S else self.client_leg

    def _source_leg(self, direction: Direction) -> Leg | None:
        return self.client_leg if direction is C2S else self.server_leg

    def start(self, now: float) -> None:
        for leg in (self.client_leg, self.server_leg):
            if leg is not None:
                leg.reading = True
                self._update(leg)
        self.tap.attach(self, now)

    def _update(self, leg: Leg) -> None:
        if leg.closed:
            return
        mask = 0
        if leg.reading and not leg.read_eof:
            mask |= select.EPOLLIN
        if leg.out:
            mask |= select.EPOLLOUT
        if mask != leg.mask:
            if leg.handler is None:
                leg.handler = self._handler(leg)
            self.loop.watch(leg.fd, mask, leg.handler, registered=leg.mask != -1)
            leg.mask = mask

    def _handler(self, leg: Leg):
        def handle(events: int) -> None:
            now = self.loop.now()
            if events & select.EPOLLOUT:
                self._flush(leg)
            if events & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP) and not leg.closed:
                self._read(leg, now)

        return handle

    # -- moving bytes --------------------------------------------------------------

    def _read(self, leg: Leg, now: float) -> None:
        direction = C2S if leg is self.client_leg else S2C
        if not leg.reading or leg.read_eof:
            return
        buf = self.read_buffer
        try:
            n = leg.sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ETIMEDOUT, errno.EHOSTUNREACH):
                self.tap.reset(self, direction, now)
                return
            raise
        if n == 0:
            leg.read_eof = True
            self._update(leg)
            self.tap.eof(self, direction, now)
            self._maybe_finish(now)
            return
        self.tap.data(self, direction, memoryview(buf)[:n], now)

    def write(self, direction: Direction, data) -> None:
        """Queue ``data`` for the receiver of ``direction`` and try to send it now."""
        leg = self.leg_for(direction)
        if leg is None or leg.closed or leg.shut_done:
            return
        if not leg.out:
            try:
                sent = leg.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self.tap.write_failed(self, direction, self.loop.now())
                return
            if sent == len(data):
                return
            data = data[sent:]
        leg.out += data
        self._update(leg)
        if len(leg.out) >= HIGH_WATER:
            source = self._source_leg(direction)
            if source is not None and source.reading:
                source.reading = False
                self._update(source)

    def _flush(self, leg: Leg) -> None:
        if leg.out:
            try:
                sent = leg.sock.send(leg.out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.tap.write_failed(self, C2S if leg is self.server_leg else S2C, self.loop.now())
                return
            del leg.out[:sent]
        if not leg.out:
            if leg.shut_pending:
                self._shutdown(leg)
            drained = getattr(self.tap, "drained", None)
            if drained is not None:
                drained(self, C2S if leg is self.server_leg else S2C, self.loop.now())
            source = self._source_leg(C2S if leg is self.server_leg else S2C)
            if source is not None and not source.reading and not source.closed:
                source.reading = True
                self._update(source)
        self._update(leg)
        self._maybe_finish(self.loop.now())

    def shut_write(self, direction: Direction) -> None:
        """Half-close toward the receiver of ``direction`` once its queue drains."""
        leg = self.leg_for(direction)
        if leg is None or leg.closed:
            return
        if leg.out:
            leg.shut_pending = True
        else:
            self._shutdown(leg)

    def _shutdown(self, leg: Leg) -> None:
        leg.shut_pending = False
        if leg.shut_done:
            return
        leg.shut_done = True
        try:
            leg.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def drop_leg(self, direction: Direction) -> None:
        """Close the leg that receives ``direction`` alone (its peer went away); the other goes on."""
        leg = self.leg_for(direction)
        if leg is None or leg.closed:
            return
        leg.closed = leg.read_eof = True
        leg.shut_pending = False
        leg.out.clear()
        if leg.mask != -1:
            self.loop.unwatch(leg.fd)
        leg.sock.close()
        leg.handler = None
        self._maybe_finish(self.loop.now())

    def abort(self) -> None:
        """Reset both legs (SO_LINGER 0): each real peer sees a reset."""
        for leg in (self.client_leg, self.server_leg):
            if leg is not None and not leg.closed:
                try:
                    leg.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORT)
                except OSError:
                    pass
        self.close()

    def _maybe_finish(self, now: float) -> None:
        if self.finished:
            return
        legs = [leg for leg in (self.client_leg, self.server_leg) if leg is not None]
        if legs and all(leg.read_eof and (leg.shut_done or leg.closed) and not leg.out for leg in legs):
            self.close()

    check_finished = _maybe_finish

    def close(self) -> None:
        if self.finished:
            return
        self.finished = True
        for leg in (self.client_leg, self.server_leg):
            if leg is not None and not leg.closed:
                leg.closed = True
                if leg.mask != -1:
                    self.loop.unwatch(leg.fd)
                leg.sock.close()
            if leg is not None:
                leg.handler = None  # it refers to this pipe: without the cycle, the pipe is freed at once
        if self.on_finished is not None:
            self.on_finished(self)
        self.tap.closed(self, self.loop.now())
