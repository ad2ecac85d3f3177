"""One side of a TLS session, driven by bytes in and bytes out: no socket, no thread.

The proxy owns the sockets and the loop; a bridge only turns ciphertext from
a peer into plaintext for the recorder (and back). The proxy terminates the
client's TLS with a *server* bridge (a leaf certificate from the sandbox CA
for the name the client asked for) and speaks TLS to the real server with a
*client* bridge. Both are :class:`ssl.SSLObject` over a pair of
:class:`ssl.MemoryBIO`, so the loop never blocks on a handshake.

Use: hand every byte from the peer to :meth:`TlsBridge.feed_ciphertext`, send
:meth:`TlsBridge.pending_ciphertext` to the peer after every call, take
:meth:`TlsBridge.read_plaintext`. Plaintext written before the handshake ends
is held and sent when it does.
"""

from __future__ import annotations

import ssl

import attrs

from ..errors import TlsError, TlsUntrusted
from .tls_authority import CertificateAuthority

# OpenSSL's reasons for alerts that mean "I do not accept your certificate".
_DISTRUST = {
    "TLSV1_ALERT_UNKNOWN_CA": "unknown_ca",
    "SSLV3_ALERT_BAD_CERTIFICATE": "bad_certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "certificate_unknown",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "unsupported_certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "certificate_expired",
}
_READ_SIZE = 1 << 16


def client_context(
    cadata: str | bytes | None = None,
    cafile: str | None = None,
    verify: bool = True,
    alpn: tuple[str, ...] | list[str] = (),
) -> ssl.SSLContext:
    """A context for the proxy's TLS to a real server.

    Trusts ``cadata`` (PEM) and/or ``cafile`` when given, else the system's
    trust store; ``verify=False`` accepts any certificate (a test server's
    self-signed one). ``alpn``: the protocols to offer (usually the client's own list).
    """
    if verify:
        if cadata is None and cafile is None:
            context = ssl.create_default_context()
        else:
            if isinstance(cadata, bytes):
                cadata = cadata.decode("ascii")
            try:
                context = ssl.create_default_context(cafile=cafile, cadata=cadata)
            except (OSError, ssl.SSLError) as exc:
                raise TlsError(f"cannot load the CA to trust ({cafile or 'the PEM given'}): {exc}") from exc
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


@attrs.define
class TlsBridge:
    """See the module docstring. Make one with :meth:`server` or :meth:`client`.

    ``peer`` names the other end in error messages (e.g. ``client 10.0.0.2:41234``).
    After an error, :attr:`error` holds it and :meth:`pending_ciphertext` may still
    hold the alert that tells the peer; pass that on, then close the connection.
    """

    peer: str
    server_side: bool
    _tls: ssl.SSLObject = attrs.field(repr=False)
    _incoming: ssl.MemoryBIO = attrs.field(repr=False)
    _outgoing: ssl.MemoryBIO = attrs.field(repr=False)
    handshake_done: bool = False
    peer_closed: bool = False
    """The peer ended its TLS: with close_notify, or (see :attr:`truncated`) without."""
    truncated: bool = False
    """The peer's TCP ended without a close_notify (many HTTP/1.0 servers do this)."""
    close_sent: bool = False
    error: TlsError | None = None
    _held: list[bytes] = attrs.field(factory=list, repr=False)
    _plaintext: bytearray = attrs.field(factory=bytearray, repr=False)

    @classmethod
    def server(
        cls, authority: CertificateAuthority, name: str, peer: str, alpn: tuple[str, ...] | list[str] = ()
    ) -> "TlsBridge":
        """Terminate a client's TLS, presenting the sandbox CA's leaf for ``name`` (its SNI or the
        server's address). ``alpn``: protocols to accept (the one the real server chose, usually)."""
        return cls._wrap(authority.server_context(name, alpn), peer, server_side=True)

    @classmethod
    def client(
        cls,
        server_hostname: str | None,
        peer: str,
        context: ssl.SSLContext | None = None,
        alpn: tuple[str, ...] | list[str] = (),
    ) -> "TlsBridge":
        """Speak TLS to a real server as ``server_hostname`` (sent as SNI and checked against
        its certificate; an IP address is checked but not sent). ``context`` defaults to
        :func:`client_context` with the system's trust and ``alpn``."""
        if context is None:
            context = client_context(alpn=alpn)
        elif alpn:
            raise TlsError("give the ALPN list either in the context or as alpn=, not both")
        return cls._wrap(context, peer, server_side=False, server_hostname=server_hostname)

    @classmethod
    def _wrap(
        cls, context: ssl.SSLContext, peer: str, server_side: bool, server_hostname=None
    ) -> "TlsBridge":
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        try:
            tls = context.wrap_bio(
                incoming, outgoing, server_side=server_side, server_hostname=server_hostname
            )
        except (ValueError, ssl.SSLError) as exc:
            raise TlsError(f"cannot start TLS with {peer} as {server_hostname!r}: {exc}") from exc
        bridge = cls(peer, server_side, tls, incoming, outgoing)
        if not server_side:
            bridge._step()  # the client speaks first: its ClientHello is pending at once
        return bridge

    # -- the peer's side ------------------------------------------------------------

    def feed_ciphertext(self, data: bytes) -> None:
        """Bytes the peer sent. Raises :class:`TlsError` (:class:`TlsUntrusted` when the
        peer refused our certificate) if the session fails; the error is kept in :attr:`error`."""
        if data:
            self._incoming.write(data)
        self._step()

    def feed_eof(self) -> None:
        """The peer's TCP ended (it will send nothing more)."""
        if not self._incoming.eof:
            self._incoming.write_eof()
        self._step()

    def pending_ciphertext(self) -> bytes:
        """Bytes to send to the peer now (handshake, records, alerts)."""
        return self._outgoing.read()

    # -- the plaintext side ---------------------------------------------------------

    def write_plaintext(self, data: bytes) -> None:
        """Application bytes to send to the peer (held until the handshake is done)."""
        if self.close_sent:
            raise TlsError(f"TLS to {self.peer} is closed: cannot send more")
        if data:
            self._held.append(bytes(data))
        self._step()

    def read_plaintext(self) -> bytes:
        """Application bytes the peer sent since the last call."""
        data = bytes(self._plaintext)
        self._plaintext.clear()
        return data

    def close(self) -> None:
        """Send close_notify (after anything still held); the peer's may come later or never."""
        if self.close_sent or self.error is not None:
            return
        self._step()
        if not self.handshake_done:
            self.close_sent = True
            return
        self.close_sent = True
        try:
            self._tls.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass  # ours is out; theirs has not come yet
        except ssl.SSLError as exc:
            self._fail(exc)

    # -- what was agreed ------------------------------------------------------------

    @property
    def alpn(self) -> str | None:
        """The negotiated application protocol (``h2``, ``http/1.1``) or None."""
        return self._tls.selected_alpn_protocol() if self.handshake_done else None

    @property
    def version(self) -> str | None:
        """``TLSv1.3``, ``TLSv1.2``... once the handshake is done."""
        return self._tls.version() if self.handshake_done else None

    @property
    def server_name(self) -> str | None:
        return self._tls.server_hostname

    # -- engine ----------------------------------------------------------------------

    def _step(self) -> None:
        if self.error is not None:
            raise self.error
        try:
            if not self.handshake_done:
                try:
                    self._tls.do_handshake()
                except ssl.SSLWantReadError:
                    if not self._incoming.eof:
                        return
                    raise TlsError(f"{self.peer} closed the connection during the TLS handshake") from None
                except ssl.SSLEOFError as exc:
                    raise TlsError(f"{self.peer} closed the connection during the TLS handshake") from exc
                self.handshake_done = True
            while self._held and not self.close_sent:
                chunk = self._held.pop(0)
                view = memoryview(chunk)
                while view:
                    view = view[self._tls.write(view) :]
            self._read_all()
        except TlsError as exc:
            self.error = exc
            raise
        except ssl.SSLError as exc:
            self._fail(exc)

    def _read_all(self) -> None:
        while not self.peer_closed:
            try:
                data = self._tls.read(_READ_SIZE)
            except ssl.SSLWantReadError:
                return
            except ssl.SSLZeroReturnError:
                self.peer_closed = True
                return
            except ssl.SSLEOFError:
                self.peer_closed = self.truncated = True
                return
            if not data:  # end of stream reported as empty read
                self.peer_closed = True
                return
            self._plaintext += data

    def _fail(self, exc: ssl.SSLError) -> None:
        reason = getattr(exc, "reason", None) or ""
        stage = "the handshake" if not self.handshake_done else "the session"
        if self.server_side and reason in _DISTRUST:
            error: TlsError = TlsUntrusted(
                f"{self.peer} refused the sandbox CA's certificate during {stage} (TLS alert "
                f"{_DISTRUST[reason]}): it does not trust the sandbox CA; make it trust the CA "
                f"(see docs/tls.rst) or leave this connection uninterceptable",
                alert=_DISTRUST[reason],
            )
        elif isinstance(exc, ssl.SSLCertVerificationError):
            error = TlsError(
                f"the certificate of {self.peer} does not verify ({exc.verify_message}): give the CA "
                f"that signed it, or turn verification off for this server"
            )
        else:
            error = TlsError(f"TLS with {self.peer} failed during {stage}: {reason or exc}")
        self.error = error
        raise error from exc
