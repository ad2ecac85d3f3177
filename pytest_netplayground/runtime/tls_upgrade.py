"""TLS that begins after a plaintext request to upgrade (PostgreSQL's SSLRequest and its ``S``).

A PostgreSQL client asking for TLS first sends an 8-byte SSLRequest in the
clear; the server answers one byte, ``S`` (go on) or ``N``, and only then does
the client's ClientHello follow. :class:`UpgradeWatch` is the part of the TLS
tap that lets such a connection's plaintext start reach the session's tap as
it is (recorded, relayed or replayed like any bytes) while it keeps watching
for the ClientHello, and then terminates that TLS as it would at the start of
a connection.

The server's answer is read from the live server, when there is one: the
proxy opens its own TLS to the server only after the server said ``S``. A
replay standing in for the server answers the client from the cassette, and
the client's ClientHello is then terminated at once.
"""

from __future__ import annotations

from ..core.events import Direction
from ..core.tls_hello import NEED_MORE, ClientHello, Upgrade, parse_client_hello, upgrade_accepted

C2S, S2C = Direction.C2S, Direction.S2C


class UpgradeWatch:
    """Mixed into the TLS tap. States: ``upgrade`` (the request went through; the server's
    answer and the client's ClientHello are watched for) and ``await`` (the ClientHello came
    before the live server's ``S``: it is held until the answer)."""

    upgrade: Upgrade | None = None
    accepted: bool | None = None  # the live server's answer to the request, once known
    reply: bytearray

    def plain_room(self, direction: Direction, sent: int) -> int | None:
        """How many more plain bytes may be written in ``direction`` before TLS begins: the
        request toward the server, the one-byte answer toward the client; None: no limit (the
        upgrade is over, one way or the other)."""
        if self.state not in ("upgrade", "await", "upstream"):
            return None
        return max(0, (self.upgrade.length if direction is C2S else 1) - sent)

    def _upgrade_begins(self, upgrade: Upgrade, now: float) -> None:
        """The client asked to upgrade: from now on the inner tap sees the plaintext, through the
        pipe facade (plain until TLS begins), while this tap keeps watching."""
        from .tls_tap import _TlsPipe

        self.upgrade, self.reply = upgrade, bytearray()
        self.state = "upgrade"
        self.facade = _TlsPipe(self, self.pipe)
        self.inner.attach(self.facade, now)
        held, self.held, self.first = self.held, [], bytearray()
        for _, direction, data in held:
            self.inner.data(self.facade, direction, memoryview(data), now)

    def _upgrade_data(self, direction: Direction, data: bytes, now: float) -> None:
        if direction is S2C:
            self.inner.data(self.facade, S2C, memoryview(data), now)
            self._server_answered(data, now)
            return
        if self.state == "await":
            self.first += data
            return
        self.first += data
        verdict = parse_client_hello(bytes(self.first))
        if verdict is NEED_MORE:
            self.interceptor.loop.call_at(now + self.sniff_patience, lambda tap: tap._upgrade_late(), owner=self)
            return
        if not isinstance(verdict, ClientHello) or self.interceptor.passed(self.pipe.client, self.pipe.server):
            self._upgrade_over(now)
            return
        self.hello = verdict
        if self.pipe.server_leg is None or self.accepted:
            self._begin(verdict, now)
        elif self.accepted is None:
            self.state = "await"
            self.interceptor.loop.call_at(now + self.handshake_patience, lambda tap: tap._upgrade_late(), owner=self)
        else:
            self._upgrade_over(now)

    def _server_answered(self, data: bytes, now: float) -> None:
        if self.accepted is not None:
            return
        self.reply += data
        verdict = upgrade_accepted(self.upgrade, bytes(self.reply))
        if verdict is NEED_MORE:
            return
        self.accepted = verdict is True
        if self.state == "await":
            if self.accepted:
                self._begin(self.hello, now)
            else:
                self._upgrade_over(now)
        elif not self.accepted:
            self._upgrade_over(now)

    def _upgrade_late(self) -> None:
        """Held client bytes waited too long (a ClientHello never completed, or the server never
        answered): they go on as they are."""
        if self.state in ("upgrade", "await") and self.first and self.pipe is not None and not self.pipe.finished:
            self._upgrade_over(self.interceptor.loop.now())

    def _upgrade_over(self, now: float) -> None:
        """No TLS to terminate here after all: the inner tap takes the rest of the connection."""
        pipe, first = self.pipe, bytes(self.first)
        self.state, self.first = "gone", bytearray()
        pipe.tap = self.inner
        self.facade.release(encrypting=False)
        if first and not pipe.finished:
            self.inner.data(self.facade, C2S, memoryview(first), now)

    def _upgrade_end(self, kind: str, direction: Direction, now: float) -> None:
        """The connection ends (or half-ends) before TLS began."""
        self._upgrade_over(now)
        if not self.pipe.finished:
            getattr(self.inner, kind)(self.facade, direction, now)
