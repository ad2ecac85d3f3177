"""Cassette lines for notes: records about the run, not about one connection.

``listen`` says how long a server took to first accept a connection after its
host got its first process; ``flow`` opens a UDP flow and ``dgram`` holds one
of its datagrams (text as text, binary as base64, like TCP data); ``refused``
says the receiver's host answered a flow's datagram with ICMP port
unreachable; ``tls`` says a connection's data is the plaintext inside TLS the
proxy terminated, with the client's SNI and the negotiated ALPN; ``udp``, in
cassettes made before UDP was recorded, counts datagrams the cassette does not
hold. Readers older than these records stop at them with a clear message;
cassettes without them read as before.
"""

from __future__ import annotations

import ipaddress

from .codec_base import b64encode, encode_conn, encode_line, encode_time, is_text, json_text
from .decoding import Fields
from .events import Datagram, Direction, ListenDelay, Note, Refusal, TlsNote, UdpFlow, UdpSeen

__all__ = ["NOTE_NAMES", "decode_note", "encode_note"]

NOTE_NAMES = ("listen", "udp", "flow", "dgram", "refused", "tls")


def encode_note(note: Note) -> bytes:
    """One note as one newline-terminated line."""
    head = [("t", encode_time(note.t, "t"))]
    if isinstance(note, ListenDelay):
        return encode_line(
            head
            + [
                ("ev", '"listen"'),
                ("server", json_text(str(note.server))),
                ("delay", encode_time(note.delay, "delay")),
            ]
        )
    if isinstance(note, UdpSeen):
        return encode_line(
            head
            + [
                ("ev", '"udp"'),
                ("client", json_text(note.client)),
                ("server", json_text(str(note.server))),
                ("datagrams", str(int(note.datagrams))),
            ]
        )
    if isinstance(note, UdpFlow):
        return encode_line(
            head
            + [
                ("ev", '"flow"'),
                ("flow", encode_conn(note.flow)),
                ("client", json_text(str(note.client))),
                ("server", json_text(str(note.server))),
            ]
        )
    if isinstance(note, Datagram):
        data = note.data
        if is_text(data):
            payload = ("text", json_text(data.decode("utf-8")))
        else:
            payload = ("b64", '"' + b64encode(data).decode("ascii") + '"')
        return encode_line(
            head
            + [
                ("ev", '"dgram"'),
                ("flow", encode_conn(note.flow)),
                ("dir", json_text(note.direction.value)),
                payload,
            ]
        )
    if isinstance(note, Refusal):
        return encode_line(
            head
            + [("ev", '"refused"'), ("flow", encode_conn(note.flow)), ("dir", json_text(note.direction.value))]
        )
    if isinstance(note, TlsNote):
        return encode_line(
            head
            + [
                ("ev", '"tls"'),
                ("conn", encode_conn(note.conn)),
                ("sni", "null" if note.sni is None else json_text(note.sni)),
                ("alpn", "null" if note.alpn is None else json_text(note.alpn)),
            ]
        )
    raise TypeError(f"not a cassette note: {note!r}")


def _flow(fields: Fields) -> int:
    value = fields.get("flow", "a non-negative integer flow number")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise fields.bad("flow", value, "a non-negative integer flow number")
    return value


def _optional_text(fields: Fields, key: str) -> str | None:
    value = fields.obj.get(key)
    if value is not None and not (isinstance(value, str) and value.isprintable() and len(value) <= 255):
        raise fields.bad(key, value, "a name of at most 255 printable characters, or null")
    return value


def decode_note(ev: str, fields: Fields, t: float) -> Note:
    """The note of type ``ev`` from a decoded line's fields (raising CassetteFormatError)."""
    if ev == "listen":
        return ListenDelay(t, fields.endpoint("server"), fields.time("delay"))
    if ev == "flow":
        return UdpFlow(t, _flow(fields), fields.endpoint("client"), fields.endpoint("server"))
    if ev == "dgram":
        return Datagram(t, _flow(fields), fields.choice("dir", Direction), fields.payload())
    if ev == "refused":
        return Refusal(t, _flow(fields), fields.choice("dir", Direction))
    if ev == "tls":
        return TlsNote(t, fields.conn(), _optional_text(fields, "sni"), _optional_text(fields, "alpn"))
    expected = 'an address like "10.0.0.2" or "fd00::2"'
    client = fields.string("client", expected)
    try:
        client = str(ipaddress.ip_address(client))
    except ValueError:
        raise fields.bad("client", client, expected) from None
    count = fields.get("datagrams", "a non-negative integer")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise fields.bad("datagrams", count, "a non-negative integer")
    return UdpSeen(t, client, fields.endpoint("server"), count)
