"""Cassette codec: records to bytes and bytes to records, with no I/O.

A cassette is UTF-8 JSON Lines: a header line, then one event per line in time
order, then an end marker once the recording finished cleanly. Keys come in a
fixed order and payloads stay text when they are text, so a re-recorded
cassette reads as a small diff in code review. Every line is self-contained,
so a recording killed half-way loses at most its last, incomplete line.

This module encodes, and is where callers find the whole codec: one line is
decoded by :mod:`.decoding`, a stream by the incremental :class:`Decoder`
(:mod:`.decoder`), and what both sides share lives in :mod:`.codec_base`.
"""

from __future__ import annotations

from .codec_base import (
    MAX_DATA_CHUNK,
    MAX_LINE,
    End,
    Record,
    b64encode,
    encode_conn,
    encode_line,
    encode_time,
    is_text,
    json_text,
)
from .decoder import Decoder
from .decoding import decode_record
from .events import (
    NOTES,
    Closed,
    ConnectionOpened,
    Data,
    Direction,
    HalfClosed,
    Header,
    Reset,
)
from .noise import LearnedNoise
from .noise_codec import encode_noise

__all__ = [
    "MAX_DATA_CHUNK",
    "MAX_LINE",
    "Decoder",
    "End",
    "Record",
    "decode_record",
    "encode_end",
    "encode_event",
    "encode_header",
    "encode_record",
    "is_text",
]


def encode_header(header: Header) -> bytes:
    """The first line of a cassette."""
    hosts = ", ".join(
        "{"
        + f'"address": {json_text(h.address)}, "name": {json_text(h.name)}, "command": {json_text(h.command)}'
        + (f', "address6": {json_text(h.address6)}' if h.address6 else "")
        + "}"
        for h in header.hosts
    )
    subnet6 = [("subnet6", json_text(header.subnet6))] if header.subnet6 else []
    if header.faults:
        subnet6.append(("faults", "[" + ", ".join(json_text(line) for line in header.faults) + "]"))
    if header.fault_seed is not None:
        subnet6.append(("fault_seed", str(int(header.fault_seed))))
    return encode_line(
        [
            ("netplay_cassette", str(int(header.version))),
            ("tool_version", json_text(header.tool_version)),
            ("subnet", json_text(str(header.subnet))),
            *subnet6,
            ("started", encode_time(header.started, "started")),
            ("hosts", "[" + hosts + "]"),
            *([("tls", json_text(header.tls))] if header.tls != "off" else []),
        ]
    )


def encode_event(event: ConnectionOpened | Data | HalfClosed | Reset | Closed) -> bytes:
    """One event as one newline-terminated line."""
    head = [("t", encode_time(event.t, "t"))]
    if isinstance(event, ConnectionOpened):
        return encode_line(
            head
            + [
                ("ev", '"open"'),
                ("conn", encode_conn(event.conn)),
                ("client", json_text(str(event.client))),
                ("server", json_text(str(event.server))),
                ("outcome", json_text(event.outcome.value)),
            ]
        )
    if isinstance(event, Data):
        return b"".join(encode_data_parts(event.t, event.conn, event.direction, event.data))
    if isinstance(event, (HalfClosed, Reset)):
        name = '"shut"' if isinstance(event, HalfClosed) else '"reset"'
        return encode_line(
            head
            + [("ev", name), ("conn", encode_conn(event.conn)), ("dir", json_text(event.direction.value))]
        )
    if isinstance(event, Closed):
        return encode_line(head + [("ev", '"close"'), ("conn", encode_conn(event.conn))])
    if isinstance(event, NOTES):
        from .codec_notes import encode_note

        return encode_note(event)
    raise TypeError(f"not a cassette event: {event!r}")


def encode_data_parts(t: float, conn: int, direction: Direction, data) -> tuple[bytes, ...]:
    """A Data record as pieces that join to its line (``data`` may be a memoryview).

    The recorder writes the pieces with one ``writev``, sparing a copy of
    every recorded chunk.
    """
    direction = Direction(direction)
    if not is_text(data):
        # Base64 needs no JSON escaping: built directly as bytes.
        encoded = b64encode(data)
        if len(encoded) + 100 > MAX_LINE:
            encode_line([("data", "x" * (len(encoded) + 100))])  # raises the line-limit error
        return (
            f'{{"t": {encode_time(t, "t")}, "ev": "data", "conn": {encode_conn(conn)}, '
            f'"dir": "{direction.value}", "b64": "'.encode("ascii"),
            encoded,
            b'"}\n',
        )
    payload = ("text", json_text(bytes(data).decode("utf-8")))
    return (
        encode_line(
            [
                ("t", encode_time(t, "t")),
                ("ev", '"data"'),
                ("conn", encode_conn(conn)),
                ("dir", json_text(direction.value)),
                payload,
            ]
        ),
    )


def encode_end(t: float) -> bytes:
    """The end marker, written last when a recording finishes cleanly."""
    return encode_line([("t", encode_time(t, "t")), ("ev", '"end"')])


def encode_record(record: Record) -> bytes:
    """Encode any record: header, event or end marker."""
    if isinstance(record, Header):
        return encode_header(record)
    if isinstance(record, End):
        return encode_end(record.t)
    if isinstance(record, LearnedNoise):
        return encode_noise(record)
    return encode_event(record)


# --------------------------------------------------------------------------- decoding
