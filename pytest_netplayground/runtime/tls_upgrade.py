"""TLS that begins after a plaintext request to upgrade: PostgreSQL's SSLRequest, SMTP's and IMAP's STARTTLS.

A PostgreSQL client asking for TLS first sends an 8-byte SSLRequest in the
clear; the server answers one byte, ``S`` (go on) or ``N``, and only then does
the client's ClientHello follow. SMTP and IMAP servers speak first; later the
client sends ``STARTTLS`` (IMAP: ``tag STARTTLS``), the server says yes
(``220``, ``tag OK``) and the ClientHello follows. :class:`UpgradeWatch` is the
part of the TLS tap that lets such a connection's plaintext start reach the
session's tap as it is (recorded, relayed or replayed like any bytes) while it
watches for the request, the answer and the ClientHello, and then terminates
that TLS as it would at the start of a connection.

The server's answer is read from the live server, when there is one: the
proxy opens its own TLS to the server only after the server said yes. A
replay standing in for the server answers the client from the cassette, and
the client's ClientHello is then terminated at once. What the session's tap
writes past the upgrade's own bytes (its request, its answer) waits for TLS to
begin, and is encrypted then (or goes as it is if TLS does not begin).
"""

from __future__ import annotations

from ..core.events import Direction
from ..core.tls_hello import (
    NEED_MORE,
    ClientHello,
    Upgrade,
    parse_client_hello,
    parse_upgrade_request,
    upgrade_accepted,
)

C2S, S2C = Direction.C2S, Direction.S2C

#: Client bytes of a connection whose server spoke first that are watched for a STARTTLS;
#: past them the connection goes on without being looked at.
WATCH_LIMIT = 8192
#: The states in which the inner tap writes through the facade in the clear.
PLAIN_STATES = ("watch", "upgrade", "await", "upstream")


class UpgradeWatch:
    """Mixed into the TLS tap. States: ``watch`` (the server spoke first, or the client said
    nothing for a while: the client's first bytes may still be a ClientHello, its turns are
    watched for STARTTLS), ``upgrade`` (the request went through; the server's answer and
    the client's ClientHello are watched for) and ``await`` (the ClientHello came before the
    live server's yes: it is held until the answer)."""

    upgrade: Upgrade | None = None
    accepted: bool | None = None  # the live server's answer to the request, once known
    opening = False  # nobody has said anything yet: the client's first bytes may still be TLS

    def _plain_begins(self, now: float) -> None:
        """The inner tap takes the connection's plaintext through the facade, plain for now."""
        from .tls_tap import _TlsPipe

        self.reply, self.turn, self.watched = bytearray(), bytearray(), 0
        self.out_turn, self.out_reply = bytearray(), bytearray()
        self.out_upgrade: Upgrade | None = None
        self.gated = {C2S: False, S2C: False}
        self.facade = _TlsPipe(self, self.pipe)
        self.inner.attach(self.facade, now)

    def _upgrade_begins(self, upgrade: Upgrade, now: float) -> None:
        """The client's first bytes ask to upgrade (PostgreSQL's SSLRequest)."""
        self._plain_begins(now)
        self.upgrade, self.state = upgrade, "upgrade"
        held, self.held, self.first = self.held, [], bytearray()
        for _, direction, data in held:
            self.inner.data(self.facade, direction, memoryview(data), now)

    def _watch_begins(self, now: float) -> None:
        """The server spoke first (or the client said nothing for a while): no TLS at the start,
        but a STARTTLS may come. What was held goes to the inner tap."""
        self._plain_begins(now)
        self.state = "watch"
        self.opening = not self.held
        # Until the client's first bytes show what they are, a replay's recorded client bytes wait.
        self.gated[C2S] = self.opening
        held, self.held, self.first = self.held, [], bytearray()
        for kind, direction, data in held:
            if self.state != "watch" or self.pipe.finished:
                return
            if kind == "data":
                self._watch_data(direction, data, now)
            else:
                self._upgrade_end(kind, direction, now)

    def _watch_data(self, direction: Direction, data: bytes, now: float) -> None:
        if direction is S2C:
            self.turn.clear()
            if self.opening and self.first:  # an unfinished ClientHello, and the server speaks
                self._opening_late()
            if self.opening:
                self._opened()
            self._server_said(data, now)
            return
        if self.opening:
            data = self._opening(data, now)
            if not data:
                return
        self.turn += data
        self.watched += len(data)
        verdict = parse_upgrade_request(bytes(self.turn))
        if isinstance(verdict, Upgrade) and verdict.protocol != "postgres":
            self.upgrade, self.state = verdict, "upgrade"
        self.inner.data(self.facade, direction, memoryview(data), now)
        if self.state == "watch" and self.watched > WATCH_LIMIT and not self.pipe.finished:
            self._upgrade_over(now)

    def _opening(self, data: bytes, now: float) -> bytes:
        """The client's first bytes after a silence: a ClientHello or an SSLRequest is handled as
        if it had come at once (a client that connects early and speaks later: a connection
        pool); anything else is returned, to be watched as usual."""
        self.first += data
        verdict = parse_client_hello(bytes(self.first))
        if verdict is NEED_MORE:
            self.interceptor.loop.call_at(now + self.sniff_patience, lambda tap: tap._opening_late(), owner=self)
            return b""
        if isinstance(verdict, ClientHello) and not self.interceptor.passed(self.pipe.client, self.pipe.server):
            self.opening = False
            self._begin(verdict, now)
            return b""
        self._opened()
        first, self.first = bytes(self.first), bytearray()
        verdict = parse_upgrade_request(first)
        if isinstance(verdict, Upgrade) and verdict.protocol == "postgres":
            self.upgrade, self.state = verdict, "upgrade"
            self.inner.data(self.facade, C2S, memoryview(first), now)
            return b""
        return first

    def _opening_late(self) -> None:
        if self.state == "watch" and self.opening and self.first and not self.pipe.finished:
            self._opened()
            first, self.first = bytes(self.first), bytearray()
            self._watch_data(C2S, first, self.interceptor.loop.now())

    def _opened(self) -> None:
        """The connection's start is no TLS: the recorded client bytes that waited go."""
        self.opening = False
        self.gated[C2S] = False
        self.facade.release(encrypting=False)

    def _upgrade_data(self, direction: Direction, data: bytes, now: float) -> None:
        if direction is S2C:
            self._server_said(data, now)
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

    def _server_said(self, data: bytes, now: float) -> None:
        """The live server's bytes, to the inner tap; those after the request it was sent (by the
        live client, or by a replay sending the recorded one, perhaps ahead of the live client)
        are its answer. A replay may send the request while it is given these bytes: they came
        before it, so they are no answer to it."""
        asked = self.out_upgrade is not None
        self.inner.data(self.facade, S2C, memoryview(data), now)
        if asked:
            self._server_answered(data, now)

    def _server_answered(self, data: bytes, now: float) -> None:
        if self.accepted is not None or self.pipe.finished:
            return
        self.reply += data
        verdict = upgrade_accepted(self.out_upgrade, bytes(self.reply))
        if verdict is NEED_MORE:
            return
        self.accepted = verdict is True
        if self.state == "await":
            if self.accepted:
                self._begin(self.hello, now)
            else:
                self._upgrade_over(now)
        elif not self.accepted and self.state in ("watch", "upgrade"):
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

    # -- what the inner tap writes in the clear ----------------------------------------------

    def plain_waits(self, direction: Direction) -> bool:
        """Whether a write in ``direction`` must wait for TLS: the upgrade's own bytes (the
        request toward the server, the yes toward the client) went already."""
        return self.state in PLAIN_STATES and self.gated[direction]

    def plain_wrote(self, direction: Direction, data) -> None:
        """Follow what the inner tap wrote in the clear, to know when the upgrade's bytes went.

        Written bytes, not the live ones: a replay writes the recorded request and answer,
        on its own schedule."""
        if self.state not in PLAIN_STATES:
            return
        if direction is C2S:
            if self.out_upgrade is None and len(self.out_turn) < 4096:
                self.out_turn += data
                verdict = parse_upgrade_request(bytes(self.out_turn))
                if isinstance(verdict, Upgrade):
                    self.out_upgrade, self.gated[C2S] = verdict, True
            return
        self.out_turn.clear()
        self.turn.clear()  # a client's turn ends at an answer, live or, standing in, from the cassette
        upgrade = self.out_upgrade or self.upgrade
        if upgrade is not None and not self.gated[S2C]:
            self.out_reply += data
            verdict = upgrade_accepted(upgrade, bytes(self.out_reply))
            if verdict is True:
                self.gated[S2C] = True
            elif verdict is False:
                self.out_reply.clear()
