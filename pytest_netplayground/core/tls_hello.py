"""Recognise TLS from the first bytes of a turn: a ClientHello, a STARTTLS upgrade, a refusal alert.

The proxy looks at the start of a client's turn (the connection's first, or
the first after an accepted STARTTLS-style upgrade) and must decide, without
blocking, whether TLS begins there, and for which name (SNI) and protocols
(ALPN), before it answers as the server. Every function here takes bytes and
returns a verdict; malformed input is "not TLS", never an exception, since
the bytes come from whatever program the test runs.

Verdicts: :data:`NOT_TLS`, :data:`NEED_MORE` (a prefix of what is looked for:
call again with more bytes; the caller bounds how long it waits) or a value.
"""

from __future__ import annotations

import enum
import struct

import attrs


class Verdict(enum.Enum):
    NOT_TLS = "not TLS"
    NEED_MORE = "need more bytes"

    def __repr__(self) -> str:
        return self.name


NOT_TLS = Verdict.NOT_TLS
NEED_MORE = Verdict.NEED_MORE

HANDSHAKE = 0x16
ALERT = 0x15
CLIENT_HELLO = 1
EXT_SERVER_NAME = 0
EXT_ALPN = 16
EXT_SUPPORTED_VERSIONS = 43

# A record's plaintext is at most 2**14 bytes; a ClientHello is far smaller, but may
# span records. Past this many bytes it is not one the proxy will terminate.
MAX_RECORD = 1 << 14
MAX_HELLO = 1 << 16


@attrs.frozen
class ClientHello:
    """What the proxy needs from a client's ClientHello.

    ``server_name``: the SNI host name (ASCII, lower case) or None when absent.
    ``alpn``: the offered application protocols in the client's order (e.g. ``("h2", "http/1.1")``).
    ``versions``: the offered TLS versions as (major, minor) pairs, highest first
    (from supported_versions, else the legacy version).
    ``length``: bytes of the records that carried the hello.
    """

    server_name: str | None
    alpn: tuple[str, ...]
    versions: tuple[tuple[int, int], ...]
    length: int


class _Malformed(Exception):
    """Internal: the bytes cannot be a ClientHello."""


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.at = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.data):
            raise _Malformed
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("!H", self.take(2))[0]

    def vector(self, length_bytes: int) -> "_Reader":
        n = int.from_bytes(self.take(length_bytes), "big")
        return _Reader(self.take(n))

    def done(self) -> bool:
        return self.at == len(self.data)


def _record_header(data: bytes, at: int, kind: int) -> Verdict | int:
    """The record at ``at`` must be of ``kind`` with a TLS version; its length, or a verdict."""
    header = data[at : at + 5]
    expected = (kind, 3)
    for i, byte in enumerate(header[:2]):
        if byte != expected[i]:
            return NOT_TLS
    if len(header) >= 3 and header[2] > 4:
        return NOT_TLS
    if len(header) < 5:
        return NEED_MORE
    length = struct.unpack("!H", header[3:5])[0]
    if length == 0 or length > MAX_RECORD + 2048:
        return NOT_TLS
    return length


def _handshake_bytes(data: bytes) -> Verdict | tuple[bytes, int]:
    """Join the handshake records at the start of ``data`` until a whole ClientHello is there."""
    body = b""
    at = 0
    while True:
        length = _record_header(data, at, HANDSHAKE)
        if isinstance(length, Verdict):
            return length
        fragment = data[at + 5 : at + 5 + length]
        body += fragment
        if len(fragment) < length:
            # The record itself is incomplete; what is there must still look like a hello.
            return NEED_MORE if _hello_header_ok(body) else NOT_TLS
        at += 5 + length
        if not _hello_header_ok(body):
            return NOT_TLS
        if len(body) >= 4:
            needed = 4 + int.from_bytes(body[1:4], "big")
            if len(body) >= needed:
                return body[:needed], at
        if at >= len(data):
            return NEED_MORE


def _hello_header_ok(body: bytes) -> bool:
    if body[:1] not in (b"", bytes([CLIENT_HELLO])):
        return False
    if len(body) >= 4:
        length = int.from_bytes(body[1:4], "big")
        return 38 <= length <= MAX_HELLO
    return True


def parse_client_hello(data: bytes) -> Verdict | ClientHello:
    """Whether ``data`` (the start of a client's turn) begins with a TLS ClientHello, and its SNI and ALPN."""
    joined = _handshake_bytes(bytes(data))
    if isinstance(joined, Verdict):
        return joined
    message, length = joined
    try:
        return _parse_hello_body(_Reader(message[4:]), length)
    except (_Malformed, UnicodeDecodeError):
        return NOT_TLS


def _parse_hello_body(reader: _Reader, length: int) -> ClientHello:
    legacy = tuple(reader.take(2))
    if legacy[0] != 3:
        raise _Malformed
    reader.take(32)  # random
    session_id = reader.vector(1)
    if len(session_id.data) > 32:
        raise _Malformed
    suites = reader.vector(2)
    if not suites.data or len(suites.data) % 2:
        raise _Malformed
    if not reader.vector(1).data:  # compression methods: at least "null"
        raise _Malformed
    server_name: str | None = None
    alpn: tuple[str, ...] = ()
    versions: tuple[tuple[int, int], ...] = ((legacy[0], legacy[1]),)
    if not reader.done():
        extensions = reader.vector(2)
        seen: set[int] = set()
        while not extensions.done():
            kind = extensions.u16()
            content = extensions.vector(2)
            if kind in seen:
                raise _Malformed  # a repeated extension is illegal (RFC 8446 4.2)
            seen.add(kind)
            if kind == EXT_SERVER_NAME:
                server_name = _server_name(content)
            elif kind == EXT_ALPN:
                alpn = _alpn(content)
            elif kind == EXT_SUPPORTED_VERSIONS:
                versions = _versions(content) or versions
    if not reader.done():
        raise _Malformed
    return ClientHello(server_name, alpn, versions, length)


def _server_name(content: _Reader) -> str | None:
    names = content.vector(2)
    if not content.done() or names.done():
        raise _Malformed
    found = None
    while not names.done():
        kind = names.u8()
        name = names.vector(2).data
        if kind == 0 and found is None:
            if not name or not name.isascii() or any(b <= 0x20 or b == 0x7F for b in name):
                raise _Malformed
            found = name.decode("ascii").lower().rstrip(".")
    return found or None


def _alpn(content: _Reader) -> tuple[str, ...]:
    protocols = content.vector(2)
    if not content.done():
        raise _Malformed
    offered = []
    while not protocols.done():
        name = protocols.vector(1).data
        if not name:
            raise _Malformed
        offered.append(name.decode("ascii"))
    return tuple(offered)


def _versions(content: _Reader) -> tuple[tuple[int, int], ...]:
    listed = content.vector(1)
    if not content.done() or len(listed.data) % 2:
        raise _Malformed
    pairs = [tuple(listed.data[i : i + 2]) for i in range(0, len(listed.data), 2)]
    # Drop GREASE values (0x?a?a) and anything that is not TLS.
    real = [p for p in pairs if p[0] == 3 and p[1] <= 4]
    return tuple(sorted(set(real), reverse=True))


# -- refusals ---------------------------------------------------------------------

ALERT_NAMES = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    40: "handshake_failure",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    109: "missing_extension",
    110: "unsupported_extension",
    112: "unrecognized_name",
    116: "certificate_required",
    120: "no_application_protocol",
}

# What a client sends when it rejects the certificate it was shown.
DISTRUST_ALERTS = frozenset({42, 43, 45, 46, 48})


@attrs.frozen
class Alert:
    """A plaintext TLS alert record: ``level`` 1 warning, 2 fatal; ``description`` its code."""

    level: int
    description: int

    @property
    def name(self) -> str:
        return ALERT_NAMES.get(self.description, f"alert {self.description}")

    @property
    def distrusts_certificate(self) -> bool:
        """The peer refused the certificate: for a client of the proxy, it does not trust the sandbox CA."""
        return self.description in DISTRUST_ALERTS


def parse_alert(data: bytes) -> Verdict | Alert:
    """Whether ``data`` begins with a plaintext alert record (what a TLS 1.2 client sends
    when it refuses the server's certificate; TLS 1.3 encrypts it, see the TLS bridge)."""
    length = _record_header(bytes(data[:5]), 0, ALERT)
    if isinstance(length, Verdict):
        return length
    if length != 2:
        return NOT_TLS
    if len(data) < 7:
        return NEED_MORE
    level, description = data[5], data[6]
    if level not in (1, 2):
        return NOT_TLS
    return Alert(level, description)


# -- STARTTLS-style upgrades --------------------------------------------------------

# PostgreSQL's SSLRequest: length 8, code 80877103. The server answers one byte: S (go) or N.
PG_SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"


@attrs.frozen
class Upgrade:
    """A client's request to switch to TLS on this connection, in a given protocol.

    ``protocol``: ``postgres``, ``smtp`` or ``imap``; ``length``: bytes of the request;
    ``tag``: the IMAP command tag (the server's answer must carry it), else empty.
    """

    protocol: str
    length: int
    tag: bytes = b""


def _line(data: bytes, limit: int = 256) -> Verdict | bytes:
    end = data.find(b"\r\n", 0, limit)
    if end < 0:
        return NEED_MORE if len(data) < limit and b"\n" not in data else NOT_TLS
    return data[:end]


def parse_upgrade_request(data: bytes) -> Verdict | Upgrade:
    """Whether a client's turn is a request to start TLS (PostgreSQL SSLRequest, SMTP
    ``STARTTLS``, IMAP ``tag STARTTLS``). The whole turn must be the request."""
    data = bytes(data)
    if not data:
        return NEED_MORE
    if data[0] == 0:
        if PG_SSL_REQUEST.startswith(data[:8]):
            return NEED_MORE if len(data) < 8 else (Upgrade("postgres", 8) if len(data) == 8 else NOT_TLS)
        return NOT_TLS
    line = _line(data)
    if isinstance(line, Verdict):
        if line is NEED_MORE and not _could_be_starttls(data):
            return NOT_TLS
        return line
    if len(line) + 2 != len(data):
        return NOT_TLS
    words = line.split(b" ")
    if len(words) == 1 and words[0].upper() == b"STARTTLS":
        return Upgrade("smtp", len(data))
    if len(words) == 2 and words[1].upper() == b"STARTTLS" and _imap_tag(words[0]):
        return Upgrade("imap", len(data), tag=words[0])
    return NOT_TLS


def _could_be_starttls(data: bytes) -> bool:
    words = data.split(b" ")
    if len(words) == 1:
        return b"STARTTLS".startswith(words[0].upper()) or _imap_tag(words[0])
    return len(words) == 2 and _imap_tag(words[0]) and b"STARTTLS".startswith(words[1].upper())


def _imap_tag(word: bytes) -> bool:
    return 0 < len(word) <= 64 and all(33 <= b <= 126 and b not in b'(){%*"\\]+' for b in word)


def upgrade_accepted(upgrade: Upgrade, reply: bytes) -> Verdict | bool:
    """Whether the server's answer to ``upgrade`` lets TLS begin (True), refuses it (False),
    or is still incomplete (NEED_MORE). After True the client's next bytes are its ClientHello."""
    reply = bytes(reply)
    if not reply:
        return NEED_MORE
    if upgrade.protocol == "postgres":
        return reply == b"S" if len(reply) == 1 else False
    line = _line(reply, limit=4096)
    if isinstance(line, Verdict):
        return NEED_MORE if line is NEED_MORE else False
    if upgrade.protocol == "smtp":
        lines = reply.split(b"\r\n")
        if not reply.endswith(b"\r\n"):
            return NEED_MORE
        last = lines[-2]
        if last[3:4] == b"-":  # a continued multi-line reply
            return NEED_MORE
        return last[:4] == b"220 " or last == b"220"
    if upgrade.protocol == "imap":
        if not reply.endswith(b"\r\n"):
            return NEED_MORE
        for reply_line in reply.split(b"\r\n")[:-1]:
            words = reply_line.split(b" ", 2)
            if words[0] == upgrade.tag:
                return len(words) > 1 and words[1].upper() == b"OK"
        return NEED_MORE  # only untagged lines so far
    return False
