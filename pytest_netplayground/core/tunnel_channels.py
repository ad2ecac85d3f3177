"""The tunnel's two channels once the handshake is done: control frames and datagrams.

Both seal with ChaCha20-Poly1305 under a key of their own per direction, with a
counter as the nonce, so a nonce is never used twice with one key. A datagram
names its session and counter in a clear header (the associated data), so the
receiver can drop what is not for it, replayed or too old before paying for the
cipher; a control frame's counter is implicit (the stream is ordered), so any
frame lost, repeated or reordered fails authentication. In the insecure plaintext
mode the framing and the tags stay, only the encryption goes: the packet is
readable on the wire but still authenticated and replay-checked.
"""

from __future__ import annotations

import collections
import struct
import threading

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ..errors import TunnelAuthError, TunnelError

__all__ = [
    "ControlChannel",
    "DatagramChannel",
    "HEADER_SIZE",
    "MAX_CONTROL_MESSAGE",
    "REPLAY_WINDOW",
    "ReplayWindow",
    "TAG_SIZE",
    "datagram_session",
    "inner_mtu",
]

#: Bytes of a datagram's header. It is laid out as a Geneve header (RFC 8926)
#: with one experimental option holding the session id and the counter, so
#: ``tshark -d udp.port==PORT,geneve`` shows it and, in the plaintext mode, the
#: IP packet inside.
HEADER_SIZE = 24
TAG_SIZE = 16
#: Packets a receiver may see out of order before an older one counts as too old.
REPLAY_WINDOW = 1024
#: Largest control message: a frame announcing more is garbage or an attack.
MAX_CONTROL_MESSAGE = 16 << 20

#: Geneve: version 0, options 16 bytes (4 words), no flags.
_GENEVE_START = b"\x04\x00"
#: Geneve protocol types: sealed payload (IEEE local experimental), or the inner IP version.
PROTO_SEALED = 0x88B5
PROTO_IPV4 = 0x0800
PROTO_IPV6 = 0x86DD
#: VNI (24 bits) spells the magic, the reserved byte is the format version.
MAGIC_VNI = b"NPT"
DATAGRAM_VERSION = 1
#: The option: experimental class 0xFF4E, type 1 (not critical), 3 words of data.
_OPTION = b"\xff\x4e\x01\x03"
_AFTER_PROTO = MAGIC_VNI + bytes([DATAGRAM_VERSION]) + _OPTION  # bytes 4..12

_COUNTER = struct.Struct(">Q")
_LENGTH = struct.Struct(">I")
_COUNTER_LIMIT = 1 << 64
_SMALLEST = HEADER_SIZE + TAG_SIZE


def _header_prefix(proto: int, session: bytes) -> bytes:
    """The first 16 bytes of every datagram of one session and payload kind (all but the counter)."""
    return _GENEVE_START + proto.to_bytes(2, "big") + _AFTER_PROTO + session


def inner_mtu(path_mtu: int, *, ipv6: bool = False) -> int:
    """The largest host packet whose datagram crosses a path of ``path_mtu`` unfragmented (IPv6 underlay or not)."""
    return path_mtu - (40 if ipv6 else 20) - 8 - HEADER_SIZE - TAG_SIZE


def datagram_session(datagram: bytes) -> bytes | None:
    """The session id a datagram names, or None when it is not a tunnel datagram (for demultiplexing)."""
    if len(datagram) < HEADER_SIZE or datagram[:2] != _GENEVE_START or datagram[4:12] != _AFTER_PROTO:
        return None
    return bytes(datagram[12:16])


@attrs.define(on_setattr=attrs.setters.NO_OP)
class ReplayWindow:
    """Which of the last ``size`` counters were already accepted: one flag per counter, in a ring.

    ``check`` says whether a counter may be accepted without changing anything (so a
    forged datagram cannot move the window); ``accept`` records it once authenticated.
    The ring is indexed by the counter modulo ``size`` (a power of two); moving the
    top up clears the slots it passes, so an in-order packet costs a few small steps.
    The size is validated once, at creation: no hook on every assignment of the hot path.
    """

    size: int = attrs.field(default=REPLAY_WINDOW)
    highest: int = -1
    seen: bytearray = attrs.field(init=False, repr=False)
    _mask: int = attrs.field(init=False, repr=False)

    @size.validator
    def _power_of_two(self, attribute, value: int) -> None:
        if value < 1 or value & (value - 1):
            raise ValueError(f"a replay window is a power of two, not {value}")

    def __attrs_post_init__(self) -> None:
        self.seen = bytearray(self.size)
        self._mask = self.size - 1

    def check(self, counter: int) -> str | None:
        """None if ``counter`` is new and recent enough, else the reason to drop it."""
        if counter > self.highest:
            return None
        if self.highest - counter >= self.size:
            return "too old"
        if self.seen[counter & self._mask]:
            return "replayed"
        return None

    def accept(self, counter: int) -> None:
        ahead = counter - self.highest
        if ahead == 1:  # in order: the slot held the counter that just left the window
            self.seen[counter & self._mask] = 1
            self.highest = counter
            return
        if ahead > 1:
            self._clear(self.highest + 1, min(ahead - 1, self.size))
            self.highest = counter
        self.seen[counter & self._mask] = 1

    def _clear(self, first: int, count: int) -> None:
        """Forget the slots of ``count`` counters from ``first`` on (skipped by a jump ahead)."""
        start = first & self._mask
        head = min(count, self.size - start)
        self.seen[start : start + head] = bytes(head)
        self.seen[: count - head] = bytes(count - head)


@attrs.define
class DatagramChannel:
    """One side's view of the tunnel datagrams: seal what it sends, open what it receives.

    ``open`` never raises on what arrives: a datagram that is short, malformed, of
    another session, replayed, too old or fails authentication is dropped and
    counted in ``dropped`` by reason. Any number of threads may seal (each
    datagram takes the next counter under a lock: a counter used twice would
    reuse a nonce); one thread opens.
    """

    send_key: bytes = attrs.field(repr=False)
    receive_key: bytes = attrs.field(repr=False)
    send_session: bytes
    receive_session: bytes
    insecure_plaintext: bool = False
    window: ReplayWindow = attrs.field(factory=ReplayWindow)
    dropped: collections.Counter = attrs.field(factory=collections.Counter)
    delivered: int = 0
    sent: int = 0
    _seal_aead: ChaCha20Poly1305 = attrs.field(init=False, repr=False)
    _open_aead: ChaCha20Poly1305 = attrs.field(init=False, repr=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, repr=False)
    _send_prefix: bytes = attrs.field(init=False, repr=False)
    _receive_prefixes: frozenset = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._seal_aead = ChaCha20Poly1305(self.send_key)
        self._open_aead = ChaCha20Poly1305(self.receive_key)
        self._send_prefix = _header_prefix(PROTO_SEALED, self.send_session)
        protos = (PROTO_IPV4, PROTO_IPV6) if self.insecure_plaintext else (PROTO_SEALED,)
        self._receive_prefixes = frozenset(_header_prefix(proto, self.receive_session) for proto in protos)

    @property
    def overhead(self) -> int:
        """Bytes each packet grows by inside the UDP payload (header and tag)."""
        return HEADER_SIZE + TAG_SIZE

    def seal(self, packet: bytes) -> bytes:
        """One IP packet -> one UDP payload: header, then the sealed packet (or the packet and a tag)."""
        with self._lock:
            counter = self.sent
            if counter >= _COUNTER_LIMIT:
                raise TunnelError("the tunnel sent 2**64 datagrams in one session: reconnect to start a new one")
            self.sent = counter + 1
        if self.insecure_plaintext:
            proto = PROTO_IPV6 if packet[:1] and packet[0] >> 4 == 6 else PROTO_IPV4
            header = _header_prefix(proto, self.send_session) + _COUNTER.pack(counter)
            signed = header + packet
            return signed + self._seal_aead.encrypt(header[12:], b"", signed)
        header = self._send_prefix + _COUNTER.pack(counter)
        return header + self._seal_aead.encrypt(header[12:], packet, header)

    def open(self, datagram: bytes) -> bytes | None:
        """The IP packet a datagram carries, or None (dropped and counted) if it is not one to deliver."""
        if len(datagram) < _SMALLEST:
            self.dropped["short"] += 1
            return None
        if type(datagram) is not bytes:
            datagram = bytes(datagram)
        if datagram[:16] not in self._receive_prefixes:
            self.dropped[self._misfit(datagram)] += 1
            return None
        counter = _COUNTER.unpack_from(datagram, 16)[0]
        window = self.window
        if counter <= window.highest:
            reason = window.check(counter)
            if reason is not None:
                self.dropped[reason] += 1
                return None
        try:
            if self.insecure_plaintext:
                self._open_aead.decrypt(datagram[12:24], datagram[-TAG_SIZE:], datagram[:-TAG_SIZE])
                packet = datagram[HEADER_SIZE:-TAG_SIZE]
            else:
                packet = self._open_aead.decrypt(datagram[12:24], datagram[HEADER_SIZE:], datagram[:HEADER_SIZE])
        except InvalidTag:
            self.dropped["auth"] += 1
            return None
        window.accept(counter)
        self.delivered += 1
        return packet

    def _misfit(self, datagram: bytes) -> str:
        """Why a datagram's header is not this session's: "malformed" or "session"."""
        if datagram[:2] != _GENEVE_START or datagram[4:12] != _AFTER_PROTO:
            return "malformed"
        if datagram[2:4] not in {prefix[2:4] for prefix in self._receive_prefixes}:
            return "malformed"
        return "session"


@attrs.define
class ControlChannel:
    """One side's view of the control stream after the handshake: frames out, messages in.

    A frame is a 4-byte big-endian length, then the sealed message (or, in the
    plaintext mode, the message and a tag); the length is the associated data and
    the nonce is the frame's number in its direction. Any frame that fails makes
    ``feed`` raise TunnelAuthError, now and on every later call: the stream must close.
    Frames must reach the stream in the order they were sealed: a writer shared by
    threads seals and writes under one lock.
    """

    send_key: bytes = attrs.field(repr=False)
    receive_key: bytes = attrs.field(repr=False)
    insecure_plaintext: bool = False
    sent: int = 0
    received: int = 0
    _buffer: bytearray = attrs.field(factory=bytearray, repr=False)
    _failed: str | None = None
    _seal_aead: ChaCha20Poly1305 = attrs.field(init=False, repr=False)
    _open_aead: ChaCha20Poly1305 = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._seal_aead = ChaCha20Poly1305(self.send_key)
        self._open_aead = ChaCha20Poly1305(self.receive_key)

    def seal(self, message: bytes) -> bytes:
        """One frame carrying ``message``, to write to the stream."""
        if len(message) > MAX_CONTROL_MESSAGE:
            raise TunnelError(
                f"a control message of {len(message)} bytes is over the limit of {MAX_CONTROL_MESSAGE}: "
                "send it in pieces"
            )
        if self.sent >= _COUNTER_LIMIT:
            raise TunnelError("the control stream sent 2**64 frames: reconnect")
        nonce = b"\0\0\0\0" + _COUNTER.pack(self.sent)
        self.sent += 1
        length = _LENGTH.pack(len(message) + TAG_SIZE)
        if self.insecure_plaintext:
            return length + message + self._seal_aead.encrypt(nonce, b"", length + message)
        return length + self._seal_aead.encrypt(nonce, message, length)

    def feed(self, data: bytes) -> list[bytes]:
        """Bytes read from the stream -> the messages completed by them, in order."""
        if self._failed is not None:
            raise TunnelAuthError(self._failed)
        self._buffer += data
        messages = []
        while len(self._buffer) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(self._buffer)
            if size < TAG_SIZE or size > MAX_CONTROL_MESSAGE + TAG_SIZE:
                largest = MAX_CONTROL_MESSAGE + TAG_SIZE
                self._fail(f"frame {self.received} announces {size} bytes, outside {TAG_SIZE}..{largest}")
            end = _LENGTH.size + size
            if len(self._buffer) < end:
                break
            frame = bytes(self._buffer[:end])
            del self._buffer[:end]
            messages.append(self._open(frame))
        return messages

    def _open(self, frame: bytes) -> bytes:
        nonce = b"\0\0\0\0" + _COUNTER.pack(self.received)
        try:
            if self.insecure_plaintext:
                self._open_aead.decrypt(nonce, frame[-TAG_SIZE:], frame[:-TAG_SIZE])
                message = frame[_LENGTH.size : -TAG_SIZE]
            else:
                message = self._open_aead.decrypt(nonce, frame[_LENGTH.size :], frame[: _LENGTH.size])
        except InvalidTag:
            self._fail(f"frame {self.received} fails authentication (forged, damaged, replayed or reordered)")
        self.received += 1
        return message

    def _fail(self, why: str) -> None:
        self._failed = f"control stream: {why}; the stream is closed"
        self._buffer.clear()
        raise TunnelAuthError(self._failed)

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame waiting for the rest (nonzero at end of stream: cut short)."""
        return len(self._buffer)
