"""Throwaway stand-in for core.tunnel_crypto (same names); NOT secure, replaced on merge."""

from __future__ import annotations

import collections
import hashlib
import hmac
import os
import struct

import attrs

from ..errors import NetplayError

KEY_SIZE = 32


class TunnelKeyError(NetplayError):
    pass


class TunnelKeyMismatch(NetplayError):
    pass


class TunnelAuthError(NetplayError):
    pass


class TunnelProtocolError(NetplayError):
    pass


def parse_key(text: bytes, where: str) -> bytes:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(b"#")]
    try:
        key = bytes.fromhex(b"".join(lines).decode())
    except ValueError:
        key = b""
    if len(key) != KEY_SIZE:
        raise TunnelKeyError(f"{where}: not a key (64 hex digits); make one with netplay agent --make-key FILE")
    return key


def make_key_text() -> bytes:
    return b"# netplay tunnel key\n" + os.urandom(KEY_SIZE).hex().encode() + b"\n"


@attrs.define
class DatagramChannel:
    key: bytes
    dropped: collections.Counter = attrs.field(factory=collections.Counter)
    overhead: int = 16

    def seal(self, packet: bytes) -> bytes:
        return hmac.new(self.key, packet, hashlib.sha256).digest()[:16] + bytes(packet)

    def open(self, datagram: bytes) -> bytes | None:
        if len(datagram) < 16:
            self.dropped["short"] += 1
            return None
        body = datagram[16:]
        if not hmac.compare_digest(hmac.new(self.key, body, hashlib.sha256).digest()[:16], datagram[:16]):
            self.dropped["auth"] += 1
            return None
        return bytes(body)


@attrs.define
class ControlChannel:
    buf: bytearray = attrs.field(factory=bytearray)

    def seal(self, message: bytes) -> bytes:
        return struct.pack("!I", len(message)) + message

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out = []
        while len(self.buf) >= 4:
            (n,) = struct.unpack_from("!I", self.buf)
            if len(self.buf) < 4 + n:
                break
            out.append(bytes(self.buf[4 : 4 + n]))
            del self.buf[: 4 + n]
        return out


@attrs.define
class SessionKeys:
    key: bytes

    def control(self) -> ControlChannel:
        return ControlChannel()

    def datagrams(self) -> DatagramChannel:
        return DatagramChannel(self.key)


@attrs.define
class Handshake:
    key: bytes
    side: str
    done: bool = False
    keys: SessionKeys | None = None
    rest: bytes = b""
    buf: bytes = b""

    @classmethod
    def supervisor(cls, key: bytes, *, insecure_plaintext: bool = False) -> "Handshake":
        return cls(key, "supervisor")

    @classmethod
    def agent(cls, key: bytes) -> "Handshake":
        return cls(key, "agent")

    def _proof(self, side: str) -> bytes:
        return hmac.new(self.key, side.encode(), hashlib.sha256).digest()

    def initial(self) -> bytes:
        return b"NPT1" + self._proof("supervisor") if self.side == "supervisor" else b""

    def receive(self, data: bytes) -> bytes:
        self.buf += data
        if len(self.buf) < 36:
            return b""
        head, self.rest = self.buf[:36], self.buf[36:]
        if self.side == "agent":
            if head[:4] != b"NPT1":
                raise TunnelProtocolError("not a netplay supervisor")
            if head[4:] != self._proof("supervisor"):
                raise TunnelKeyMismatch("a supervisor with another key tried to connect")
            self.done, self.keys = True, SessionKeys(self.key)
            return b"NPT1" + self._proof("agent")
        if head[4:] != self._proof("agent"):
            raise TunnelKeyMismatch("the agent has another key")
        self.done, self.keys = True, SessionKeys(self.key)
        return b""
