"""Toxics on the proxy's live TCP connections: a tap that applies them to what its inner tap writes.

Every connection's tap (live, record or replay) is wrapped in a
:class:`ToxicTap`. Live and recording, toxics act on what each side sent
before the session's tap sees it, so a cassette holds what the receiver got,
when it got it. On replay the inner tap writes through a pipe facade, so
toxics act on the recorded bytes each process is about to receive. With no
toxic set, bytes go straight through. The decisions are :class:`~..core.toxics.ToxicStream`'s; here they are
applied with the loop's timers. ``limit_data`` resets both sides only once
the receiver's kernel has acknowledged the bytes let through (a reset
discards unsent bytes), or after :data:`FLUSH_PATIENCE` seconds.
"""

from __future__ import annotations

import fcntl
import random
import struct
import termios
from typing import Callable

from ..core.addressing import pack_ip
from ..core.events import Direction
from ..core.fault_table import ANY
from ..core.toxics import EOF, RESET, Toxics, ToxicStream
from ..errors import ConfigError
from . import fault_control as requests
from .exchange_tap import ExchangeTap
from .pipes import HIGH_WATER, Pipe, Tap
from .replayer import ReplayTap

C2S, S2C = Direction.C2S, Direction.S2C

#: Seconds a connection past its ``limit_data`` may take to deliver the bytes let through before its reset.
FLUSH_PATIENCE = 5.0
_FLUSH_POLL = 0.005


def _unsent(fd: int) -> int:
    """Bytes of a socket's send queue its peer has not acknowledged (SIOCOUTQ)."""
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except OSError:
        return 0


class _ToxicPipe:
    """What the inner tap sees as its pipe: writes and half-closes pass through the toxics."""

    def __init__(self, tap: "ToxicTap", pipe):
        self._tap = tap
        self._pipe = pipe

    def __getattr__(self, name: str):
        return getattr(self._pipe, name)

    def write(self, direction: Direction, data) -> None:
        if self._tap.plain:
            self._pipe.write(direction, data)
        else:
            self._tap.write(self._pipe, direction, data)

    def shut_write(self, direction: Direction) -> None:
        self._tap.shut_write(self._pipe, direction)

    def abort(self) -> None:
        self._pipe.abort()

    def check_finished(self, now: float) -> None:
        self._pipe.check_finished(now)


class ToxicTap(Tap):
    """See the module docstring; ``streams`` holds each direction's toxics and held bytes."""

    def __init__(
        self, box: "ToxicBox", inner: Tap, c2s: Toxics, s2c: Toxics, rng: random.Random, on_input: bool = False
    ):
        self.box = box
        self.inner = inner
        self.on_input = on_input
        self.streams = {C2S: ToxicStream(c2s, rng), S2C: ToxicStream(s2c, rng)}
        self.plain = c2s.is_clear and s2c.is_clear  # no toxic, nothing held: the fast path
        self.key = b""
        self.pipe = None  # the pipe (or TLS facade) the outer side calls with
        self._facade: _ToxicPipe | None = None
        self._armed: dict[Direction, float] = {}

    def __getattr__(self, name: str):
        # Hooks of the inner tap that the wrapping tap calls by name (``tls_started``).
        if name.startswith("__") or name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def facade(self, pipe):
        """What the inner tap is given as its pipe: on input, the pipe itself."""
        if self.on_input:
            self.pipe = pipe
            return pipe
        if self._facade is None or self._facade._pipe is not pipe:
            self._facade = _ToxicPipe(self, pipe)
        self.pipe = pipe
        return self._facade

    # -- the pipe's events, passed to the inner tap --------------------------------------

    def attach(self, pipe, now):
        self.inner.attach(self.facade(pipe), now)

    def data(self, pipe, direction, data, now):
        if self.on_input:
            self.pipe = pipe
            if self.plain:
                self.inner.data(pipe, direction, data, now)
            else:
                self.streams[direction].push(bytes(data))
                self.pump(direction)
            return
        facade = self._facade
        if facade is None or facade._pipe is not pipe:
            facade = self.facade(pipe)
        self.inner.data(facade, direction, data, now)

    def eof(self, pipe, direction, now):
        if self.on_input and not self.plain:
            self.pipe = pipe
            self.streams[direction].push_eof()
            self.pump(direction)
            return
        self.inner.eof(self.facade(pipe), direction, now)

    def reset(self, pipe, direction, now):
        self.inner.reset(self.facade(pipe), direction, now)

    def write_failed(self, pipe, direction, now):
        self.inner.write_failed(self.facade(pipe), direction, now)

    def drained(self, pipe, direction, now):
        drained = getattr(self.inner, "drained", None)
        if drained is not None:
            drained(self.facade(pipe), direction, now)

    def closed(self, pipe, now):
        self.box.forget(self)
        self.inner.closed(self.facade(pipe), now)
        self.pipe = self._facade = None

    # -- what the inner tap writes ---------------------------------------------------------

    def write(self, pipe, direction: Direction, data) -> None:
        if self.plain:
            pipe.write(direction, data)
            return
        stream = self.streams[direction]
        if stream.idle:
            pipe.write(direction, data)
            return
        stream.push(bytes(data))
        self.pump(direction)

    def shut_write(self, pipe, direction: Direction) -> None:
        stream = self.streams[direction]
        if stream.idle:
            pipe.shut_write(direction)
            return
        stream.push_eof()
        self.pump(direction)

    def pump(self, direction: Direction) -> None:
        """Write what the toxics of ``direction`` let go now; ask again when they say."""
        pipe, stream = self.pipe, self.streams[direction]
        if pipe is None or pipe.finished:
            return
        now = self.box.loop.now()
        out, wake = stream.pull(now)
        for item in out:
            if item == RESET:
                self._reset_when_delivered(direction, now + FLUSH_PATIENCE)
            elif self.on_input:
                if item == EOF:
                    self.inner.eof(pipe, direction, now)
                else:
                    self.inner.data(pipe, direction, memoryview(item), now)
            elif item == EOF:
                pipe.shut_write(direction)
            else:
                pipe.write(direction, item)
            if pipe.finished:
                return
        if wake is not None and self._armed.get(direction) != wake:
            self._armed[direction] = wake
            self.box.loop.call_at(wake, lambda tap: tap.pump(direction), owner=self)
        self._hold_back(direction, stream.held > HIGH_WATER)
        self.plain = all(each.idle for each in self.streams.values())

    def _hold_back(self, direction: Direction, full: bool) -> None:
        """Stop reading the sender of ``direction`` while its held bytes are many; read it again after."""
        pipe = self.pipe
        source = pipe.client_leg if direction is C2S else pipe.server_leg
        if source is None or source.closed:
            return
        if full and source.reading:
            source.reading = False
            pipe._update(source)
        elif not full and not source.reading:
            receiver = pipe.leg_for(direction)
            if receiver is None or len(receiver.out) < HIGH_WATER:
                source.reading = True
                pipe._update(source)

    def _reset_when_delivered(self, direction: Direction, deadline: float) -> None:
        pipe = self.pipe
        if pipe is None or pipe.finished:
            return
        leg = pipe.leg_for(direction)
        now = self.box.loop.now()
        if leg is not None and not leg.closed and (leg.out or _unsent(leg.fd)) and now < deadline:
            self.box.loop.call_at(
                now + _FLUSH_POLL, lambda tap: tap._reset_when_delivered(direction, deadline), owner=self
            )
            return
        pipe.abort()

    # -- requests ----------------------------------------------------------------------------

    def set(self, direction: Direction, toxics: Toxics) -> None:
        """New toxics for ``direction``; a ``limit_data`` counts from now."""
        stream = self.streams[direction]
        stream.set(toxics)
        stream.sent = 0
        self.plain = False
        self.pump(direction)

    def half_close(self, direction: Direction) -> None:
        self.streams[direction].close()
        self.plain = False
        self.pump(direction)


class ToxicBox:
    """The toxics of a sandbox: every connection's :class:`ToxicTap` by key, and the toxics
    given per link, which connections made later start with."""

    def __init__(self, loop, seed: int, host_of: Callable[[bytes], int | None]):
        self.loop = loop
        self.seed = seed
        self.host_of = host_of
        self.taps: dict[bytes, ToxicTap] = {}
        self.links: dict[tuple[int, int], Toxics] = {}

    def _link(self, src: int | None, dst: int | None) -> Toxics:
        links = self.links
        return links.get((src, dst)) or links.get((src, ANY)) or links.get((ANY, dst)) or Toxics()

    def wrap(self, inner: Tap, pipe: Pipe) -> ToxicTap:
        client = self.host_of(pack_ip(pipe.client.host))
        server = self.host_of(pack_ip(pipe.server.host))
        rng = random.Random(f"{self.seed}:{pipe.client}:{pipe.server}")
        # A replay writes recorded bytes: toxics act on them as they are written. Otherwise they
        # act on what the sender sent before the session sees it, so a recording holds what the
        # receiver got, when it got it.
        on_input = not isinstance(inner, (ReplayTap, ExchangeTap))
        tap = ToxicTap(self, inner, self._link(client, server), self._link(server, client), rng, on_input)
        tap.key = pipe.key
        self.taps[pipe.key] = tap
        return tap

    def clear(self) -> None:
        """No toxics on any link or live connection; held bytes go on."""
        self.links.clear()
        for tap in list(self.taps.values()):
            if tap.pipe is not None and not tap.pipe.finished:
                for direction in (C2S, S2C):
                    tap.set(direction, Toxics())

    def forget(self, tap: ToxicTap) -> None:
        if self.taps.get(tap.key) is tap:
            del self.taps[tap.key]

    def handlers(self) -> dict[type, Callable]:
        return {
            requests.SetToxics: self._set_toxics,
            requests.HalfClose: self._half_close,
        }

    def _tap(self, key: bytes) -> ToxicTap | None:
        tap = self.taps.get(key)
        if tap is None or tap.pipe is None or tap.pipe.finished:
            return None
        return tap

    def _set_toxics(self, request: "requests.SetToxics") -> tuple[object, list[int]]:
        tap = self._tap(request.key)
        if tap is None:
            return False, []
        for direction in request.directions:
            tap.set(Direction(direction), request.toxics)
        return True, []

    def _half_close(self, request: "requests.HalfClose") -> tuple[object, list[int]]:
        tap = self._tap(request.key)
        if tap is None:
            return False, []
        tap.half_close(Direction(request.direction))
        return True, []

    def describe(self) -> list[str]:
        """One line per link direction whose new connections start with toxics."""
        name = lambda index: "*" if index == ANY else str(index)  # noqa: E731
        return [f"{name(src)}->{name(dst)}: {value.describe()}" for (src, dst), value in sorted(self.links.items())]

    def set_link(self, request: "requests.SetLinkToxics") -> None:
        if request.src == request.dst:
            raise ConfigError(f"a link joins two different hosts, got host {request.src} twice")
        if request.toxics.is_clear:
            self.links.pop((request.src, request.dst), None)
        else:
            self.links[(request.src, request.dst)] = request.toxics
