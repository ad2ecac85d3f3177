"""TLS interception in the proxy: a tap that terminates TLS and hands the plaintext to the session's tap.

With ``tls="intercept"`` every connection's tap (live, record or replay) is
wrapped in a :class:`TlsTap`. It holds the client's first bytes until they
show whether TLS begins (a ClientHello) or not. Not TLS: it steps aside and
the connection goes on byte for byte, unless TLS may still follow (a
PostgreSQL SSLRequest, a server that speaks first and may be asked for
STARTTLS: see :mod:`.tls_upgrade`). TLS: it opens TLS to the real server
first (offering the client's ALPN list), then answers the client as the server
with a certificate of the sandbox CA for the name it asked for and the
protocol the server chose; with no server (a replay standing in) it answers at
once, with the protocol recorded. From then on the inner tap sees plaintext and
writes through a pipe facade whose writes are encrypted toward their side.

Nothing here blocks: the bridges are in memory, and every wait (the client's
first bytes, the server's handshake) has a deadline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.events import Direction
from ..core.tls_hello import (
    NEED_MORE,
    NOT_TLS,
    ClientHello,
    Upgrade,
    parse_client_hello,
    parse_upgrade_request,
)
from ..errors import TlsError, TlsUntrusted
from .pipes import Pipe, Tap
from .tls_bridge import TlsBridge
from .tls_upgrade import UpgradeWatch

if TYPE_CHECKING:
    from .tls_interceptor import Interceptor

C2S, S2C = Direction.C2S, Direction.S2C

#: Seconds the client's first bytes may take to show whether its connection starts with TLS;
#: then the session's tap takes the connection, which is still watched (see tls_upgrade).
SNIFF_PATIENCE = 1.0
#: Seconds the real server may take to finish its TLS handshake with the proxy.
HANDSHAKE_PATIENCE = 10.0


class _TlsPipe:
    """What the inner tap sees as its pipe once TLS is terminated: writes and closes go
    through the bridge of their side; everything else is the real pipe's.

    Before TLS begins (``plain``: a connection that asked to upgrade) the upgrade's own bytes
    (the request, the server's answer) go to the real pipe as they are; what comes after them
    waits until TLS begins (then it is encrypted) or will not (then it goes as it is).
    """

    def __init__(self, tap: "TlsTap", pipe: Pipe):
        self._tap = tap
        self._pipe = pipe
        self.plain = True
        self.waiting: list[tuple[Direction, bytes | None]] = []

    def __getattr__(self, name: str):
        return getattr(self._pipe, name)

    def write(self, direction: Direction, data) -> None:
        if self.plain:
            if self._tap.plain_waits(direction):
                self.waiting.append((direction, bytes(data)))
                return
            self._pipe.write(direction, data)
            self._tap.plain_wrote(direction, data)
            return
        bridge = self._tap.bridge(direction)
        if bridge is None or bridge.error is not None or bridge.close_sent:
            return
        if direction is C2S and S2C in self._tap.ended:
            return  # the server ended its TLS: servers then close, and bytes sent would draw a reset
        try:
            bridge.write_plaintext(bytes(data))
        except TlsError:
            pass
        self._tap.flush(direction)

    def shut_write(self, direction: Direction) -> None:
        if self.plain and self._tap.plain_waits(direction):
            self.waiting.append((direction, None))
            return
        bridge = None if self.plain else self._tap.bridge(direction)
        # A server that ended its TLS already is not sent a close_notify: it may have closed its
        # socket, which would answer a reset (a plain half-close sends nothing, so it cannot).
        if bridge is not None and not (direction is C2S and S2C in self._tap.ended):
            try:
                bridge.close()
            except TlsError:
                pass
            self._tap.flush(direction)
        self._pipe.shut_write(direction)

    def abort(self) -> None:
        self._pipe.abort()

    def release(self, encrypting: bool) -> None:
        """TLS began (``encrypting``: writes are encrypted from now on) or will not: those that
        waited go first."""
        self.plain = not encrypting
        waiting, self.waiting = self.waiting, []
        for direction, data in waiting:
            if data is None:
                self.shut_write(direction)
            else:
                self.write(direction, data)

    def check_finished(self, now: float) -> None:
        self._pipe.check_finished(now)


class TlsTap(UpgradeWatch, Tap):
    """See the module docstring. States: sniff, upstream (the server's handshake), tls, gone;
    upgrade and await for TLS after a plaintext upgrade request (see :class:`UpgradeWatch`)."""

    sniff_patience = SNIFF_PATIENCE
    handshake_patience = HANDSHAKE_PATIENCE

    def __init__(self, interceptor: Interceptor, inner: Tap, recorded_alpn: str | None):
        self.interceptor = interceptor
        self.inner = inner
        self.recorded_alpn = recorded_alpn
        self.state = "sniff"
        self.pipe: Pipe | None = None
        self.facade: _TlsPipe | None = None
        self.held: list[tuple[str, Direction, bytes]] = []
        self.first = bytearray()  # the client's ciphertext not yet given to its bridge
        self.hello: ClientHello | None = None
        self.upstream: TlsBridge | None = None
        self.downstream: TlsBridge | None = None
        self.ended: set[Direction] = set()

    # -- the bridges ----------------------------------------------------------------

    def bridge(self, direction: Direction) -> TlsBridge | None:
        """The bridge bytes travelling in ``direction`` are encrypted by."""
        return self.upstream if direction is C2S else self.downstream

    def flush(self, direction: Direction) -> None:
        """Send what the bridge toward the receiver of ``direction`` has for it."""
        bridge = self.bridge(direction)
        if bridge is not None and self.pipe is not None:
            data = bridge.pending_ciphertext()
            if data:
                self.pipe.write(direction, data)

    # -- the pipe's events ----------------------------------------------------------

    def attach(self, pipe, now):
        self.pipe = pipe
        self.interceptor.loop.call_at(now + SNIFF_PATIENCE, lambda tap: tap._patience_over(), owner=self)

    def data(self, pipe, direction, data, now):
        if self.state == "tls":
            self._ciphertext(direction, bytes(data), now)
        elif self.state == "sniff":
            self.held.append(("data", direction, bytes(data)))
            if direction is S2C:
                self._watch_begins(now)  # the server spoke first: TLS may come after a STARTTLS
                return
            self.first += data
            verdict = parse_client_hello(bytes(self.first))
            if verdict is NOT_TLS and self.first[:1] == b"\0":  # perhaps PostgreSQL's SSLRequest
                verdict = parse_upgrade_request(bytes(self.first))
                if isinstance(verdict, Upgrade) and not self.interceptor.passed(pipe.client, pipe.server):
                    self._upgrade_begins(verdict, now)
                    return
            if verdict is NEED_MORE:
                return
            if not isinstance(verdict, ClientHello) or self.interceptor.passed(pipe.client, pipe.server):
                self._pass(now)
                return
            self.held.clear()
            self._begin(verdict, now)
        elif self.state == "upstream":
            if direction is C2S:
                self.first += data
            else:
                self._upstream_handshake(bytes(data), now)
        elif self.state in ("upgrade", "await"):
            self._upgrade_data(direction, bytes(data), now)
        elif self.state == "watch":
            self._watch_data(direction, bytes(data), now)

    def eof(self, pipe, direction, now):
        if self.state == "tls":
            bridge = self.downstream if direction is C2S else self.upstream
            if bridge is not None:
                try:
                    bridge.feed_eof()
                except TlsError as exc:
                    self._failed(direction, exc, now, at_eof=True)
                    return
            self._end(direction, now)
        elif self.state == "sniff":
            self.held.append(("eof", direction, b""))
            self._pass(now)
        elif self.state == "upstream":
            self._give_up("eof", direction, now, "the server" if direction is S2C else "the client")
        elif self.state in ("watch", "upgrade", "await"):
            self._upgrade_end("eof", direction, now)

    def reset(self, pipe, direction, now):
        if self.state == "tls":
            bridge = self.downstream if direction is C2S else self.upstream
            if bridge is not None and (
                (bridge.peer_closed and not bridge.truncated) or (bridge.handshake_done and bridge.close_sent)
            ):
                # Its TLS ended with close_notify, or ours had gone to it: the conversation is whole.
                # The reset is only its kernel's word that our close_notify was still unread when it
                # closed (curl does this; so does Python's ssl, closing without its own close_notify).
                self._end(direction, now)
                return
            self.inner.reset(self.facade, direction, now)
        elif self.state == "sniff":
            self.held.append(("reset", direction, b""))
            self._pass(now)
        elif self.state == "upstream":
            self._give_up("reset", direction, now, "the server" if direction is S2C else "the client")
        elif self.state in ("watch", "upgrade", "await"):
            self._upgrade_end("reset", direction, now)

    def write_failed(self, pipe, direction, now):
        if self.state == "tls":
            self.inner.write_failed(self.facade, direction, now)
        else:
            pipe.abort()

    def drained(self, pipe, direction, now):
        drained = getattr(self.inner, "drained", None)
        if drained is not None and self.facade is not None and self.state != "gone":
            drained(self.facade, direction, now)  # TLS, or the plaintext before an upgrade

    def closed(self, pipe, now):
        if self.state == "tls" or (self.facade is not None and self.state != "gone"):
            self.inner.closed(self.facade, now)
        elif self.state != "gone":
            self.state = "gone"
            self.inner.attach(pipe, now)
            self.inner.closed(pipe, now)
        self.state = "gone"
        self.pipe = self.facade = None

    # -- deciding -------------------------------------------------------------------

    def _patience_over(self) -> None:
        if self.state == "sniff" and self.pipe is not None and not self.pipe.finished:
            self._watch_begins(self.interceptor.loop.now())

    def _pass(self, now: float) -> None:
        """Not TLS (or not ours to open): the inner tap takes the connection as it is."""
        pipe, held = self.pipe, self.held
        self.state, self.held = "gone", []
        pipe.tap = self.inner
        self.inner.attach(pipe, now)
        for kind, direction, data in held:
            if pipe.finished:
                return
            if kind == "data":
                self.inner.data(pipe, direction, memoryview(data), now)
            else:
                getattr(self.inner, kind)(pipe, direction, now)

    def _begin(self, hello: ClientHello, now: float) -> None:
        """A ClientHello: open TLS to the real server first, or, with none, answer the client now."""
        self.hello = hello
        pipe = self.pipe
        if self.facade is not None:  # attached in the clear: nothing more goes so until TLS
            self.gated = {C2S: True, S2C: True}
        if pipe.server_leg is None:
            alpn = self.recorded_alpn if self.recorded_alpn in hello.alpn else None
            self._terminate(alpn, now)
            return
        self.state = "upstream"
        try:
            self.upstream = TlsBridge.client(
                hello.server_name or pipe.server.host,
                f"server {pipe.server}",
                context=self.interceptor.upstream_context(hello.alpn),
            )
        except TlsError as exc:
            self._give_up("reset", S2C, now, None, str(exc))
            return
        self.flush(C2S)
        self.interceptor.loop.call_at(now + HANDSHAKE_PATIENCE, lambda tap: tap._handshake_late(), owner=self)

    def _upstream_handshake(self, data: bytes, now: float) -> None:
        try:
            self.upstream.feed_ciphertext(data)
        except TlsError as exc:
            self.flush(C2S)
            self._give_up("reset", S2C, now, None, f"the proxy's TLS to server {self.pipe.server} failed: {exc}")
            return
        self.flush(C2S)
        if self.upstream.handshake_done:
            self._terminate(self.upstream.alpn, now)

    def _handshake_late(self) -> None:
        if self.state == "upstream" and self.pipe is not None and not self.pipe.finished:
            self._give_up(
                "reset",
                S2C,
                self.interceptor.loop.now(),
                None,
                f"server {self.pipe.server} did not finish its TLS handshake within {HANDSHAKE_PATIENCE:g} s",
            )

    def _give_up(self, kind: str, direction: Direction, now: float, who: str | None, problem: str = "") -> None:
        """The connection ended before TLS was set up: the inner tap gets the end, no bytes."""
        pipe = self.pipe
        if who is not None:
            problem = f"{who} ended connection {pipe.client} -> {pipe.server} during the TLS handshake"
        if problem:
            self.interceptor.problem(problem)
        self.state = "gone"
        pipe.tap = self.inner
        if self.facade is not None:  # attached since its upgrade request: the waiting writes go plain
            self.facade.release(encrypting=False)
            getattr(self.inner, kind)(self.facade, direction, now)
            return
        self.inner.attach(pipe, now)
        getattr(self.inner, kind)(pipe, direction, now)

    def _terminate(self, alpn: str | None, now: float) -> None:
        """Answer the client as the server, with ``alpn``; from now on the inner tap sees plaintext."""
        pipe, hello = self.pipe, self.hello
        name = hello.server_name or pipe.server.host
        try:
            self.downstream = TlsBridge.server(
                self.interceptor.authority, name, f"client {pipe.client}", alpn=(alpn,) if alpn else ()
            )
        except TlsError as exc:
            self._give_up("reset", C2S, now, None, str(exc))
            return
        self.state = "tls"
        self.interceptor.intercepted += 1
        if self.facade is None:
            self.facade = _TlsPipe(self, pipe)
            self.facade.plain = False
            self.inner.attach(self.facade, now)
        started = getattr(self.inner, "tls_started", None)
        if started is not None:
            started(hello.server_name, alpn, now)
        self.facade.release(encrypting=True)
        first, self.first = bytes(self.first), bytearray()
        self._ciphertext(C2S, first, now)
        if self.state == "tls" and self.upstream is not None:
            self._ciphertext(S2C, b"", now)  # what the server sent with the end of its handshake

    # -- TLS in both directions -------------------------------------------------------

    def _ciphertext(self, direction: Direction, data: bytes, now: float) -> None:
        """Bytes from the sender of ``direction``: through its bridge, the plaintext to the inner tap."""
        bridge = self.downstream if direction is C2S else self.upstream
        if bridge is None or bridge.error is not None:
            return
        try:
            bridge.feed_ciphertext(data)
        except TlsError as exc:
            self._failed(direction, exc, now)
            return
        # The bridge's answers (handshake, alerts) go back to the sender.
        self.flush(direction.reverse)
        plaintext = bridge.read_plaintext()
        if plaintext and direction not in self.ended and self.state == "tls":
            self.inner.data(self.facade, direction, memoryview(plaintext), now)
        if bridge.peer_closed and self.state == "tls":
            self._end(direction, now)

    def _end(self, direction: Direction, now: float) -> None:
        """The sender of ``direction`` ended its TLS (close_notify, or its TCP ended)."""
        if direction not in self.ended and self.state == "tls":
            self.ended.add(direction)
            self.inner.eof(self.facade, direction, now)

    def _failed(self, direction: Direction, exc: TlsError, now: float, at_eof: bool = False) -> None:
        """A bridge failed: say why, and end that side for the inner tap.

        A client that refuses the certificate with an alert, or hangs up in the middle
        of the handshake, does not trust the sandbox CA: it is reported as such.
        """
        pipe = self.pipe
        self.flush(direction.reverse)  # the alert, if any
        refused = isinstance(exc, TlsUntrusted) or at_eof
        if direction is C2S and refused and not self.downstream.handshake_done:
            name = self.hello.server_name or pipe.server.host
            alert = exc.alert if isinstance(exc, TlsUntrusted) else None
            self.interceptor.refused(pipe.client, pipe.server, name, alert)
            self._end(C2S, now)
            return
        side = "client" if direction is C2S else "server"
        self.interceptor.problem(f"TLS with the {side} of {pipe.client} -> {pipe.server} failed: {exc}")
        if self.state == "tls":
            self.inner.reset(self.facade, direction, now)

