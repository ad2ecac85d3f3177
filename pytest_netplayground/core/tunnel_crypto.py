"""The tunnel's key, handshake and session keys (sans-io).

The supervisor and an agent share a 32-byte key out of band. Over the control
stream (TCP) they exchange fresh random nonces and each proves it holds the key
with an HMAC over the whole exchange so far and a label naming its role (so a
proof cannot be reflected or replayed into another session); only then are the
session keys drawn from the key with HKDF, salted with both nonces: one key per
direction and per channel, and a session id per direction for the datagrams.
docs/remote-tunnel-format.rst describes the bytes.

Handshake, on the control stream, before any frame::

    supervisor -> agent   HELLO        magic, version, type 1, flags, nonce_s (32)
    agent -> supervisor   AGENT_HELLO  magic, version, type 2, flags, nonce_a (32), proof_a (32)
    supervisor -> agent   PROOF        magic, version, type 3, proof_s (32)
    agent -> supervisor   OK           magic, version, type 4
    either way            REJECT       magic, version, type 5, reason (1)

A side that finds the other's proof wrong raises TunnelKeyMismatch whose
``reply`` is a REJECT: written before closing, it makes the peer raise
TunnelKeyMismatch too, so both ends say the keys differ.
"""

from __future__ import annotations

import hmac
import os
import re

import attrs
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import TunnelKeyError, TunnelKeyMismatch, TunnelProtocolError
from .tunnel_channels import ControlChannel, DatagramChannel, datagram_session, inner_mtu

__all__ = [
    "ControlChannel",
    "DatagramChannel",
    "Handshake",
    "datagram_session",
    "inner_mtu",
    "KEY_SIZE",
    "SessionKeys",
    "make_key_text",
    "parse_key",
    "session_from_transcript",
]

KEY_SIZE = 32
NONCE_SIZE = 32
PROOF_SIZE = 32
VERSION = 1
MAGIC = b"NPTUNNEL"

HELLO, AGENT_HELLO, PROOF, OK, REJECT = 1, 2, 3, 4, 5
_HEAD = len(MAGIC) + 2  # magic, version, type
MESSAGE_SIZES = {
    HELLO: _HEAD + 1 + NONCE_SIZE,
    AGENT_HELLO: _HEAD + 1 + NONCE_SIZE + PROOF_SIZE,
    PROOF: _HEAD + PROOF_SIZE,
    OK: _HEAD,
    REJECT: _HEAD + 1,
}
_NAMES = {HELLO: "HELLO", AGENT_HELLO: "AGENT_HELLO", PROOF: "PROOF", OK: "OK", REJECT: "REJECT"}

#: The message each state waits for (a REJECT may always come instead).
_DUE = {"start": HELLO, "hello sent": AGENT_HELLO, "agent hello sent": PROOF, "proof sent": OK}

FLAG_PLAINTEXT = 0x01
_KNOWN_FLAGS = FLAG_PLAINTEXT

REJECT_KEY, REJECT_VERSION, REJECT_PLAINTEXT, REJECT_PROTOCOL = 1, 2, 3, 4

_MAKE = "make one with `netplay agent --make-key FILE` and copy it to both machines"
_HEX = re.compile(rb"[0-9a-fA-F]{64}")


def parse_key(text: bytes, where: str) -> bytes:
    """A key file's contents -> the 32-byte key: 64 hex digits, '#' comment lines and blank lines ignored.

    The message of the error never quotes the contents: they may be a real key, mistyped.
    """
    lines = [line.strip() for line in text.splitlines()]
    body = b"".join(line for line in lines if line and not line.startswith(b"#"))
    if not body:
        raise TunnelKeyError(f"{where} holds no tunnel key: {_MAKE}")
    if not _HEX.fullmatch(body):
        raise TunnelKeyError(
            f"{where} is not a tunnel key: expected 64 hex digits (32 bytes) outside '#' comment lines, "
            f"found {len(body)} other characters; {_MAKE}"
        )
    return bytes.fromhex(body.decode("ascii"))


def make_key_text() -> bytes:
    """Contents for a new key file: a comment line, 64 hex digits of fresh randomness, a newline."""
    return b"# netplay tunnel key: the same file on the supervisor and the agent; keep it secret\n" + (
        os.urandom(KEY_SIZE).hex().encode("ascii") + b"\n"
    )


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_SIZE:
        raise TunnelKeyError(f"a tunnel key is {KEY_SIZE} bytes (read it with parse_key); got {len(key)}")
    return bytes(key)


def _message(kind: int, body: bytes = b"", version: int = VERSION) -> bytes:
    return MAGIC + bytes([version, kind]) + body


def _reject(reason: int) -> bytes:
    return _message(REJECT, bytes([reason]))


def _proof(key: bytes, role: bytes, transcript: bytes) -> bytes:
    return hmac.digest(key, b"netplay tunnel v1 " + role + b" proof\0" + transcript, "sha256")


def _derive(key: bytes, salt: bytes, label: str, size: int = 32) -> bytes:
    info = b"netplay tunnel v1 " + label.encode("ascii")
    return HKDF(algorithm=hashes.SHA256(), length=size, salt=salt, info=info).derive(key)


@attrs.define
class SessionKeys:
    """One side's keys for one session; ``control()`` and ``datagrams()`` return the same channel each call.

    The channels carry the counters that are the nonces: making a second one for
    the same direction would reuse nonces, so there is only ever one.
    """

    role: str  # "supervisor" or "agent": whose view
    insecure_plaintext: bool
    _keys: dict[str, bytes] = attrs.field(repr=False)
    _control: ControlChannel | None = attrs.field(default=None, repr=False)
    _datagrams: DatagramChannel | None = attrs.field(default=None, repr=False)

    @classmethod
    def derive(cls, key: bytes, nonce_s: bytes, nonce_a: bytes, role: str, insecure_plaintext: bool) -> "SessionKeys":
        salt = nonce_s + nonce_a
        keys = {}
        for channel in ("control", "datagrams"):
            for direction in ("supervisor->agent", "agent->supervisor"):
                keys[f"{channel} {direction}"] = _derive(key, salt, f"{channel} {direction}")
        for direction in ("supervisor->agent", "agent->supervisor"):
            keys[f"session {direction}"] = _derive(key, salt, f"session {direction}", 4)
        return cls(role, insecure_plaintext, keys)

    def _ends(self, what: str) -> tuple[bytes, bytes]:
        out, back = "supervisor->agent", "agent->supervisor"
        if self.role == "agent":
            out, back = back, out
        return self._keys[f"{what} {out}"], self._keys[f"{what} {back}"]

    @property
    def session_ids(self) -> tuple[bytes, bytes]:
        """The 4-byte session ids of this side's outgoing and incoming datagrams."""
        return self._ends("session")

    def control(self) -> ControlChannel:
        if self._control is None:
            send, receive = self._ends("control")
            self._control = ControlChannel(send, receive, self.insecure_plaintext)
        return self._control

    def datagrams(self) -> DatagramChannel:
        if self._datagrams is None:
            send, receive = self._ends("datagrams")
            out, back = self.session_ids
            self._datagrams = DatagramChannel(send, receive, out, back, self.insecure_plaintext)
        return self._datagrams


@attrs.define
class Handshake:
    """Mutual proof of the shared key over the control stream, then the session keys.

    Feed what the stream delivers to ``receive`` and write back what it returns
    (write ``initial()`` first); when ``done``, ``keys`` is set and ``rest`` holds
    the bytes that followed the handshake (the first control frames). On
    TunnelError, write the exception's ``reply`` (maybe empty), then close. If the
    stream ends before ``done``, ``eof()`` raises the error to report.
    """

    role: str
    key: bytes = attrs.field(repr=False)
    insecure_plaintext: bool = False
    allow_insecure_plaintext: bool = True
    peer: str | None = None
    done: bool = False
    keys: SessionKeys | None = None
    rest: bytes = b""
    _state: str = "start"
    _buffer: bytearray = attrs.field(factory=bytearray, repr=False)
    _nonce: bytes = attrs.field(factory=lambda: os.urandom(NONCE_SIZE), repr=False)
    _hello: bytes = b""
    _agent_hello: bytes = b""
    _error: Exception | None = None

    @classmethod
    def supervisor(cls, key: bytes, *, insecure_plaintext: bool = False, peer: str | None = None) -> "Handshake":
        """The side that connects; ``peer`` names the agent in messages (e.g. ``b=192.0.2.2:50000``)."""
        return cls("supervisor", _check_key(key), insecure_plaintext=insecure_plaintext, peer=peer)

    @classmethod
    def agent(cls, key: bytes, *, allow_insecure_plaintext: bool = True, peer: str | None = None) -> "Handshake":
        """The side that accepts; ``peer`` names the supervisor's address in messages."""
        return cls("agent", _check_key(key), allow_insecure_plaintext=allow_insecure_plaintext, peer=peer)

    def initial(self) -> bytes:
        """The bytes to send first: the supervisor's HELLO, nothing for the agent."""
        if self.role != "supervisor" or self._state != "start":
            return b""
        flags = FLAG_PLAINTEXT if self.insecure_plaintext else 0
        self._hello = _message(HELLO, bytes([flags]) + self._nonce)
        self._state = "hello sent"
        return self._hello

    def receive(self, data: bytes) -> bytes:
        """Bytes read from the control stream -> bytes to write back (maybe empty)."""
        if self._error is not None:
            raise self._error
        if self.done:
            self.rest += bytes(data)
            return b""
        if self.role == "supervisor" and self._state == "start":
            raise TunnelProtocolError("the supervisor's handshake must send initial() before receiving")
        self._buffer += data
        out = b""
        try:
            while not self.done:
                message = self._take()
                if message is None:
                    break
                out += self._step(message)
        except (TunnelKeyMismatch, TunnelProtocolError) as exc:
            self._error = exc
            self._buffer.clear()
            raise
        if self.done:
            self.rest, self._buffer = bytes(self._buffer), bytearray()
        return out

    def eof(self) -> None:
        """The stream ended before the handshake did: raise the error that explains it."""
        if self._error is not None:
            raise self._error
        if self.done:
            return
        if self.role == "agent" and self._state == "agent hello sent":
            raise TunnelProtocolError(
                f"the supervisor{self._from()} closed the connection after this agent proved its key, "
                "without a reply: it may hold another key (same key file on both machines?) or have given up"
            )
        raise TunnelProtocolError(
            f"the {self._other()}{self._from()} closed the control stream during the handshake "
            f"({len(self._buffer)} bytes of an unfinished message): is it a netplay {self._other()}?"
        )

    # -- parsing -----------------------------------------------------------

    def _other(self) -> str:
        return "agent" if self.role == "supervisor" else "supervisor"

    def _from(self) -> str:
        return f" {self.peer}" if self.peer else ""

    def _garbage(self, what: str) -> TunnelProtocolError:
        return TunnelProtocolError(
            f"the {self._other()}{self._from()} does not speak the netplay tunnel protocol: {what}",
            reply=_reject(REJECT_PROTOCOL),
        )

    def _take(self) -> bytes | None:
        """The next complete handshake message from the buffer, or None if more bytes are needed."""
        buf = self._buffer
        seen = min(len(buf), len(MAGIC))
        if bytes(buf[:seen]) != MAGIC[:seen]:
            raise self._garbage(f"its first bytes are not the tunnel's magic {MAGIC!r}")
        if len(buf) < _HEAD:
            return None
        version, kind = buf[len(MAGIC)], buf[len(MAGIC) + 1]
        if kind not in MESSAGE_SIZES:
            raise self._garbage(f"unknown handshake message type {kind}")
        if kind != REJECT and version != VERSION:
            raise TunnelProtocolError(
                f"the {self._other()}{self._from()} speaks tunnel protocol version {version}, this side "
                f"speaks {VERSION}: run the same netplay release on both machines",
                reply=_reject(REJECT_VERSION),
            )
        due = _DUE[self._state]
        if kind not in (due, REJECT):
            raise self._garbage(f"it sent {_NAMES[kind]} where {_NAMES[due]} was due")
        size = MESSAGE_SIZES[kind]
        if len(buf) < size:
            return None
        message = bytes(buf[:size])
        del buf[:size]
        return message

    def _step(self, message: bytes) -> bytes:
        kind = message[len(MAGIC) + 1]
        if kind == REJECT:
            self._rejected(message[_HEAD], message[len(MAGIC)])
        return getattr(self, f"_on_{_NAMES[kind].lower()}")(message)

    def _rejected(self, reason: int, version: int) -> None:
        other = f"the {self._other()}{self._from()}"
        if reason == REJECT_KEY:
            if self.role == "agent":
                what = (
                    f"a supervisor{self._from()} with a different tunnel key tried to connect "
                    "(it rejected this agent's proof)"
                )
            else:
                what = f"{other} holds a different tunnel key (it rejected this supervisor's proof)"
            raise TunnelKeyMismatch(f"{what}: use the same key file on both machines; {_MAKE}")
        if reason == REJECT_VERSION:
            raise TunnelProtocolError(
                f"{other} speaks tunnel protocol version {version}, this side speaks {VERSION}: "
                "run the same netplay release on both machines"
            )
        if reason == REJECT_PLAINTEXT:
            raise TunnelProtocolError(f"{other} refuses --insecure-plaintext: run without it")
        raise TunnelProtocolError(f"{other} found this side's handshake malformed (reason {reason})")

    def _mismatch(self) -> TunnelKeyMismatch:
        if self.role == "supervisor":
            what = f"the agent{self._from()} holds a different tunnel key than this supervisor"
        else:
            what = f"a supervisor{self._from()} tried to connect with a different tunnel key"
        return TunnelKeyMismatch(f"{what}: use the same key file on both machines; {_MAKE}", reply=_reject(REJECT_KEY))

    # -- the agent's steps ---------------------------------------------------

    def _on_hello(self, message: bytes) -> bytes:
        flags = message[_HEAD]
        if flags & ~_KNOWN_FLAGS:
            raise self._garbage(f"unknown handshake flags {flags:#x}")
        plaintext = bool(flags & FLAG_PLAINTEXT)
        if plaintext and not self.allow_insecure_plaintext:
            raise TunnelProtocolError(
                f"the supervisor{self._from()} asked for --insecure-plaintext, which this agent refuses",
                reply=_reject(REJECT_PLAINTEXT),
            )
        self.insecure_plaintext = plaintext
        self._hello = message
        unsigned = _message(AGENT_HELLO, bytes([flags]) + self._nonce)
        self._agent_hello = unsigned + _proof(self.key, b"agent", message + unsigned)
        self._state = "agent hello sent"
        return self._agent_hello

    def _on_proof(self, message: bytes) -> bytes:
        expected = _proof(self.key, b"supervisor", self._hello + self._agent_hello)
        if not hmac.compare_digest(message[_HEAD:], expected):
            raise self._mismatch()
        self._finish()
        return _message(OK)

    # -- the supervisor's steps ----------------------------------------------

    def _on_agent_hello(self, message: bytes) -> bytes:
        if message[_HEAD] != self._hello[_HEAD]:
            raise self._garbage("its AGENT_HELLO changed the flags")
        unsigned, proof = message[:-PROOF_SIZE], message[-PROOF_SIZE:]
        if not hmac.compare_digest(proof, _proof(self.key, b"agent", self._hello + unsigned)):
            raise self._mismatch()
        self._agent_hello = message
        self._state = "proof sent"
        return _message(PROOF, _proof(self.key, b"supervisor", self._hello + message))

    def _on_ok(self, message: bytes) -> bytes:
        self._finish()
        return b""

    def _finish(self) -> None:
        nonce_s = self._hello[_HEAD + 1 :]
        nonce_a = self._agent_hello[_HEAD + 1 : _HEAD + 1 + NONCE_SIZE]
        self.keys = SessionKeys.derive(self.key, nonce_s, nonce_a, self.role, self.insecure_plaintext)
        self._state = "done"
        self.done = True


def session_from_transcript(key: bytes, hello: bytes, agent_hello: bytes, role: str) -> SessionKeys:
    """The session keys of a captured handshake (HELLO and AGENT_HELLO as sent), as ``role`` saw them.

    For decoding a capture: raises TunnelKeyMismatch if the agent's proof does not
    match ``key``, TunnelProtocolError if the messages are not a HELLO and an AGENT_HELLO.
    """
    key = _check_key(key)
    if (
        len(hello) != MESSAGE_SIZES[HELLO]
        or len(agent_hello) != MESSAGE_SIZES[AGENT_HELLO]
        or hello[: len(MAGIC) + 2] != MAGIC + bytes([VERSION, HELLO])
        or agent_hello[: len(MAGIC) + 2] != MAGIC + bytes([VERSION, AGENT_HELLO])
    ):
        raise TunnelProtocolError("not a tunnel handshake (HELLO then AGENT_HELLO, version 1)")
    unsigned = agent_hello[:-PROOF_SIZE]
    if not hmac.compare_digest(agent_hello[-PROOF_SIZE:], _proof(key, b"agent", hello + unsigned)):
        raise TunnelKeyMismatch("the captured handshake was made with another key than the one given")
    plaintext = bool(hello[_HEAD] & FLAG_PLAINTEXT)
    nonce_a = agent_hello[_HEAD + 1 : _HEAD + 1 + NONCE_SIZE]
    return SessionKeys.derive(key, hello[_HEAD + 1 :], nonce_a, role, plaintext)
