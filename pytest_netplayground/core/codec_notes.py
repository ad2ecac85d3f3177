"""Cassette lines for notes: records about the run, not about one connection.

``listen`` says how long a server took to first accept a connection after its
host got its first process; ``udp`` counts datagrams the cassette does not
hold. Readers older than these records stop at them with a clear message;
cassettes without them read as before.
"""

from __future__ import annotations

import ipaddress

from .codec_base import encode_line, encode_time, json_text
from .decoding import Fields
from .events import ListenDelay, Note, UdpSeen

__all__ = ["NOTE_NAMES", "decode_note", "encode_note"]

NOTE_NAMES = ("listen", "udp")


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
    raise TypeError(f"not a cassette note: {note!r}")


def decode_note(ev: str, fields: Fields, t: float) -> Note:
    """The note of type ``ev`` from a decoded line's fields (raising CassetteFormatError)."""
    if ev == "listen":
        return ListenDelay(t, fields.endpoint("server"), fields.time("delay"))
    expected = 'an IPv4 address like "10.0.0.2"'
    client = fields.string("client", expected)
    try:
        client = str(ipaddress.IPv4Address(client))
    except ValueError:
        raise fields.bad("client", client, expected) from None
    count = fields.get("datagrams", "a non-negative integer")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise fields.bad("datagrams", count, "a non-negative integer")
    return UdpSeen(t, client, fields.endpoint("server"), count)
