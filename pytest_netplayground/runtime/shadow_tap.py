"""One mirrored connection: the client's bytes copied to a candidate server, its answer compared.

A :class:`ShadowTap` wraps a connection's tap (inside TLS interception, outside
toxics, so it sees what the client and the primary really sent) and hands
everything on unchanged first; then its :class:`Mirror` writes the client's
bytes to the candidate as they pass, from the client's alias address (so the
candidate sees the client's address), and feeds both answers to the sans-io
:class:`~..core.shadow.AnswerDiff`. The mirror never blocks and never touches
the primary's pipe: a candidate that refuses, resets, stalls or falls behind
by more than the spec's buffer loses its shadow, which is reported failed.
Every wait has the spec's patience as its deadline.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
from typing import TYPE_CHECKING

from ..core.addressing import ConnectionKey, Endpoint, family
from ..core.events import Direction
from ..core.shadow import AnswerDiff
from ..core.shadow_report import verdict
from .pipes import Tap
from .proxy import _proxy_socket

if TYPE_CHECKING:
    from .shadowing import Shadowing

C2S = Direction.C2S
_LINGER_ABORT = struct.pack("ii", 1, 0)
# Reads of the candidate's answer per readiness event, so a flooding candidate cannot hog the loop.
_READS = 16


def _why(err: int, doing: str = "connecting to") -> str:
    return {
        errno.ECONNREFUSED: "the candidate refused the connection (nothing listens there?)",
        errno.ECONNRESET: "the candidate reset the connection",
        errno.EHOSTUNREACH: "the candidate's host is unreachable",
        errno.ENETUNREACH: "the candidate's network is unreachable",
        errno.ETIMEDOUT: "the connection to the candidate timed out",
    }.get(err, f"{doing} the candidate failed: {os.strerror(err)}")


class Mirror:
    """The shadow of one connection; see the module docstring."""

    def __init__(self, owner: "Shadowing", loop, client: Endpoint, alias: str, conn: int, ordinal: int, buf):
        self.owner = owner
        self.spec = owner.spec
        self.loop = loop
        self.client = client
        self.alias = alias
        self.conn = conn
        self.ordinal = ordinal
        self.key = ConnectionKey.of(client, self.spec.primary)
        self.read_buffer = buf
        self.diff = AnswerDiff(self.spec.rules, self.spec.buffer)
        self.sock: socket.socket | None = None
        self.mask = -1
        self.connected = False
        self.out = bytearray()
        self.shut_pending = False
        self.candidate_eof = False
        self.primary_over = False
        self.cut = False
        self.failure = ""
        self.done = False
        self.waited = 0.0
        self.times: dict[str, float] = {}

    # -- the candidate's socket ------------------------------------------------------------

    def start(self, now: float) -> None:
        candidate = self.spec.candidate
        if family(candidate.host) != family(self.client.host):
            self.fail("the candidate's address family differs from the client's: it cannot see the client's address")
            return
        if candidate.host == self.client.host:
            self.fail("the candidate is on the client's own host: packets to itself never reach the sandbox's router")
            return
        for port in (self.client.port, 0):  # the client's port, or any if that one is taken
            sock = _proxy_socket(candidate.host)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                sock.bind((self.alias, port))
                err = sock.connect_ex((candidate.host, candidate.port))
            except OSError as exc:
                err = exc.errno or errno.EADDRINUSE
            if err in (0, errno.EINPROGRESS):
                break
            sock.close()
            if err not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL) or port == 0:
                self.fail(_why(err))
                return
        self.sock = sock
        self._watch(select.EPOLLOUT)
        self.loop.call_at(now + self.spec.patience, Mirror._connect_deadline, owner=self)

    def _watch(self, mask: int) -> None:
        """Watch the socket for ``mask``; with nothing to wait for, not at all (a closed
        socket would report its hang-up at every turn of the loop)."""
        if self.sock is None or mask == self.mask:
            return
        if mask == 0:
            if self.mask != -1:
                self.loop.unwatch(self.sock.fileno())
            self.mask = -1
            return
        self.loop.watch(self.sock.fileno(), mask, self._ready, registered=self.mask != -1)
        self.mask = mask

    def _update(self) -> None:
        if not self.connected:
            return
        self._watch((0 if self.candidate_eof else select.EPOLLIN) | (select.EPOLLOUT if self.out else 0))

    def _connect_deadline(self) -> None:
        if not self.done and not self.connected:
            self.fail(f"the candidate did not accept the connection within {self.spec.patience:g} s")

    def _ready(self, events: int) -> None:
        try:
            if not self.connected:
                err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self.fail(_why(err))
                    return
                self.connected = True
            if events & select.EPOLLOUT:
                self._flush()
            if events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR) and not self.done:
                self._read()
            if not self.done:
                self._update()
        except Exception as exc:  # a shadow's trouble never reaches the primary's connection
            self.fail(f"internal error: {exc!r}")

    def _send(self) -> None:
        if not self.out or not self.connected:
            return
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.fail(_why(exc.errno or errno.ECONNRESET, "writing to"))
            return
        del self.out[:sent]

    def _flush(self) -> None:
        self._send()
        if not self.out and self.shut_pending and not self.done:
            self.shut_pending = False
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _read(self) -> None:
        for _ in range(_READS):
            try:
                n = self.sock.recv_into(self.read_buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if self.cut:
                    self.finish()
                else:
                    sent = self.diff.sent["candidate"]
                    self.fail(f"{_why(exc.errno or errno.ECONNRESET)} after answering {sent} bytes")
                return
            if n == 0:
                self.candidate_eof = True
                if self.primary_over:
                    self.finish()
                return
            self.times.setdefault("candidate", self.loop.now())
            self._answer("candidate", memoryview(self.read_buffer)[:n])
            if self.done:
                return

    def _answer(self, side: str, data) -> None:
        self.diff.feed(side, data)
        if self.diff.overflow and self.diff.rules:
            self.fail(f"an answer went over {self.spec.buffer} bytes, more than ignore rules compare (see buffer)")
        elif self.diff.overflow == "primary":
            self.fail(f"the candidate fell behind: the primary answered over {self.spec.buffer} bytes it had not")
        elif self.diff.overflow:
            self.fail(f"the candidate answered over {self.spec.buffer} bytes more than the primary had")

    # -- what the primary's connection does -------------------------------------------------

    def client_sent(self, data, now: float) -> None:
        self.times.setdefault("client", now)
        self.out += data
        self._send()
        if len(self.out) > self.spec.buffer:
            self.fail(f"the candidate fell behind: over {self.spec.buffer} bytes of the client's were waiting for it")
        elif not self.done:
            self._update()

    def client_ended(self) -> None:
        self.shut_pending = True
        if self.connected and not self.done:
            self._flush()
            self._update()

    def primary_sent(self, data, now: float) -> None:
        self.times.setdefault("primary", now)
        self._answer("primary", data)

    def primary_cut(self) -> None:
        """The primary's connection was reset: so is the candidate's, and only what both sent counts."""
        self.cut = True
        self.finish()

    def primary_closed(self, now: float) -> None:
        self.primary_over = True
        self.times["end"] = now
        if self.candidate_eof:
            self.finish()
        else:
            self.loop.call_at(now + self.spec.patience, Mirror._patience_over, owner=self)

    def _patience_over(self) -> None:
        if not self.done:
            self.waited = self.spec.patience
            self.finish()

    # -- the end ------------------------------------------------------------------------------------

    def fail(self, reason: str) -> None:
        if not self.done:
            self.failure = reason
            self.finish()

    def finish(self) -> None:
        """Close the candidate's socket (a reset unless it ended cleanly) and hand in the verdict."""
        if self.done:
            return
        self.done = True
        if self.sock is not None:
            if self.mask != -1:
                self.loop.unwatch(self.sock.fileno())
            if not self.candidate_eof or self.failure or self.cut:
                try:
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORT)
                except OSError:
                    pass
            self.sock.close()
        self.out = bytearray()
        if not self.waited and "end" in self.times:
            self.waited = self.loop.now() - self.times["end"]
        if self.failure:
            findings = self.diff.findings(self.conn, self.key, self.ordinal, complete=True, cut=True, waited=0)
            findings = findings if self.diff.differs else []
        else:
            findings = self.diff.findings(
                self.conn, self.key, self.ordinal, complete=self.candidate_eof, cut=self.cut, waited=self.waited
            )
        start = self.times.get("client")
        self.owner.finished(
            self,
            verdict(
                self.conn,
                self.key,
                self.ordinal,
                self.client,
                findings,
                self.failure,
                primary_bytes=self.diff.sent["primary"],
                candidate_bytes=self.diff.sent["candidate"],
                primary_first=None if start is None or "primary" not in self.times else self.times["primary"] - start,
                candidate_first=None
                if start is None or "candidate" not in self.times
                else self.times["candidate"] - start,
            ),
        )


class ShadowTap(Tap):
    """Hands every event to ``inner`` unchanged, then to its mirror; see the module docstring."""

    def __init__(self, inner: Tap, mirror: Mirror):
        self.inner = inner
        self.mirror = mirror
        self.started = False

    def __getattr__(self, name: str):
        # Hooks of the inner tap that the pipe or a wrapping tap call by name (``drained``, ``tls_started``).
        if name.startswith("__") or name in ("inner", "mirror", "started"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _mirror(self, method: str, *args) -> None:
        mirror = self.mirror
        if mirror.done:
            return
        try:
            getattr(mirror, method)(*args)
        except Exception as exc:  # a shadow's trouble never reaches the primary's connection
            mirror.fail(f"internal error: {exc!r}")

    def attach(self, pipe, now):
        self.inner.attach(pipe, now)
        if not self.started:
            self.started = True
            self._mirror("start", now)

    def data(self, pipe, direction, data, now):
        self.inner.data(pipe, direction, data, now)
        self._mirror("client_sent" if direction is C2S else "primary_sent", data, now)

    def eof(self, pipe, direction, now):
        self.inner.eof(pipe, direction, now)
        if direction is C2S:
            self._mirror("client_ended")

    def reset(self, pipe, direction, now):
        self.inner.reset(pipe, direction, now)
        self._mirror("primary_cut")

    def write_failed(self, pipe, direction, now):
        self.inner.write_failed(pipe, direction, now)
        self._mirror("primary_cut")

    def closed(self, pipe, now):
        self.inner.closed(pipe, now)
        if not self.started:
            self.mirror.owner.never_started(self.mirror)
        else:
            self._mirror("primary_closed", now)
