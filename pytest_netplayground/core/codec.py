"""Cassette codec: records to bytes and bytes to records, with no I/O.

A cassette is UTF-8 JSON Lines: a header line, then one event per line in time
order, then an end marker once the recording finished cleanly. Keys come in a
fixed order and payloads stay text when they are text, so a re-recorded
cassette reads as a small diff in code review. Every line is self-contained,
so a recording killed half-way loses at most its last, incomplete line.

:class:`Decoder` is incremental (feed it bytes as they are read, get back
complete records) and raises nothing but :class:`CassetteFormatError`
whatever bytes it is given, with the byte offset of the offending line.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import math
import re
from typing import Any

import attrs

try:  # SIMD base64: ~50x the standard library on the record/replay hot path
    import pybase64 as _pybase64
except ImportError:  # pragma: no cover - the standard library does the same, slower
    _pybase64 = None

from ..errors import CassetteFormatError, ConfigError
from .addressing import Endpoint
from .events import (
    FORMAT_VERSION,
    Closed,
    ConnectionOpened,
    Data,
    Direction,
    HalfClosed,
    Header,
    HostInfo,
    ListenDelay,
    Outcome,
    Reset,
    UdpSeen,
)
from .noise import LearnedNoise
from .noise_codec import decode_noise, encode_noise

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

#: Longest line (without its newline) a decoder accepts. A reader never buffers
#: more than this, so a corrupt or foreign file cannot exhaust memory.
MAX_LINE = 16 * 1024 * 1024

#: Largest Data payload whose record is guaranteed to fit in :data:`MAX_LINE`
#: (escaped text can take three times its size). Recorders split larger reads.
MAX_DATA_CHUNK = 4 * 1024 * 1024


@attrs.frozen
class End:
    """Last record of a cleanly finished recording; without it the run was cut short."""

    t: float


Record = (
    Header | ConnectionOpened | Data | HalfClosed | Reset | Closed | LearnedNoise | End | ListenDelay | UdpSeen
)

# Records about the whole run: they name no connection (see codec_notes).
_NOTES = (ListenDelay, UdpSeen)

# C0 controls except tab, LF and CR; DEL; C1 controls. Payloads holding any of
# them are stored as base64, since they would show as noise in a diff.
_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

_ENDPOINT = re.compile(r"(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})", re.ASCII)

_EVENT_NAMES = ("open", "data", "shut", "reset", "close", "noise", "end", "listen", "udp")


_NOT_TEXT_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def is_text(data: bytes) -> bool:
    """Whether a payload is stored (and shown) as text rather than base64."""
    if _NOT_TEXT_BYTES.search(data, 0, 512):
        return False  # binary protocols show it early: no need to decode it all
    try:
        text = str(data, "utf-8")
    except UnicodeDecodeError:
        return False
    return _NOT_TEXT.search(text) is None


# --------------------------------------------------------------------------- encoding


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=True)


def _time(value: float, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite, non-negative number of seconds, got {value!r}")
    text = f"{value:.6f}"
    # -0.0 passes the sign check but would print as "-0.000000".
    return "0.000000" if text == "-0.000000" else text


def _conn(value: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"conn must be a non-negative integer, got {value!r}")
    return str(value)


def _line(pairs: list[tuple[str, str]]) -> bytes:
    body = ", ".join(f'"{key}": {value}' for key, value in pairs)
    line = ("{" + body + "}\n").encode("ascii")
    if len(line) - 1 > MAX_LINE:
        raise ValueError(
            f"record of {len(line) - 1} bytes exceeds the {MAX_LINE}-byte line limit; "
            f"split Data payloads into chunks of at most {MAX_DATA_CHUNK} bytes"
        )
    return line


def encode_header(header: Header) -> bytes:
    """The first line of a cassette."""
    hosts = ", ".join(
        "{" + f'"address": {_json(h.address)}, "name": {_json(h.name)}, "command": {_json(h.command)}' + "}"
        for h in header.hosts
    )
    return _line(
        [
            ("netplay_cassette", str(int(header.version))),
            ("tool_version", _json(header.tool_version)),
            ("subnet", _json(str(header.subnet))),
            ("started", _time(header.started, "started")),
            ("hosts", "[" + hosts + "]"),
        ]
    )


def encode_event(event: ConnectionOpened | Data | HalfClosed | Reset | Closed) -> bytes:
    """One event as one newline-terminated line."""
    head = [("t", _time(event.t, "t"))]
    if isinstance(event, ConnectionOpened):
        return _line(
            head
            + [
                ("ev", '"open"'),
                ("conn", _conn(event.conn)),
                ("client", _json(str(event.client))),
                ("server", _json(str(event.server))),
                ("outcome", _json(event.outcome.value)),
            ]
        )
    if isinstance(event, Data):
        return b"".join(encode_data_parts(event.t, event.conn, event.direction, event.data))
    if isinstance(event, (HalfClosed, Reset)):
        name = '"shut"' if isinstance(event, HalfClosed) else '"reset"'
        return _line(
            head + [("ev", name), ("conn", _conn(event.conn)), ("dir", _json(event.direction.value))]
        )
    if isinstance(event, Closed):
        return _line(head + [("ev", '"close"'), ("conn", _conn(event.conn))])
    if isinstance(event, _NOTES):
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
        encoded = _b64encode(data)
        if len(encoded) + 100 > MAX_LINE:
            _line([("data", "x" * (len(encoded) + 100))])  # raises the line-limit error
        return (
            f'{{"t": {_time(t, "t")}, "ev": "data", "conn": {_conn(conn)}, '
            f'"dir": "{direction.value}", "b64": "'.encode("ascii"),
            encoded,
            b'"}\n',
        )
    payload = ("text", _json(bytes(data).decode("utf-8")))
    return (
        _line(
            [
                ("t", _time(t, "t")),
                ("ev", '"data"'),
                ("conn", _conn(conn)),
                ("dir", _json(direction.value)),
                payload,
            ]
        ),
    )


def encode_end(t: float) -> bytes:
    """The end marker, written last when a recording finishes cleanly."""
    return _line([("t", _time(t, "t")), ("ev", '"end"')])


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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON number")


def _show(value: Any) -> str:
    """A short rendering of a decoded JSON value for an error message."""
    # Containers are not repr'd: a deeply nested one could exhaust the stack.
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str) and len(value) > 50:
        return repr(value[:50]) + "..."
    return repr(value)


class _Fields:
    """Typed access to one decoded JSON object, raising errors that name the field."""

    def __init__(self, obj: dict, what: str, offset: int | None):
        self.obj = obj
        self.what = what
        self.offset = offset

    def fail(self, message: str) -> CassetteFormatError:
        return CassetteFormatError(message, offset=self.offset)

    def _get(self, key: str, expected: str) -> Any:
        if key not in self.obj:
            raise self.fail(f'{self.what} record is missing field "{key}"; expected {expected}')
        return self.obj[key]

    def _bad(self, key: str, value: Any, expected: str) -> CassetteFormatError:
        return self.fail(f'{self.what} record has field "{key}" = {_show(value)}; expected {expected}')

    def string(self, key: str, expected: str = "a string", default: str | None = None) -> str:
        if default is not None and key not in self.obj:
            return default
        value = self._get(key, expected)
        if not isinstance(value, str):
            raise self._bad(key, value, expected)
        return value

    def time(self, key: str) -> float:
        expected = "a non-negative number of seconds"
        value = self._get(key, expected)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._bad(key, value, expected)
        number = float(value)
        if not math.isfinite(number) or number < 0:
            raise self._bad(key, value, expected)
        return number

    def conn(self) -> int:
        expected = "a non-negative integer connection number"
        value = self._get("conn", expected)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self._bad("conn", value, expected)
        return value

    def endpoint(self, key: str) -> Endpoint:
        expected = 'an IPv4 address and port like "10.0.0.1:80"'
        value = self.string(key, expected)
        match = _ENDPOINT.fullmatch(value)
        if match is None:
            raise self._bad(key, value, expected)
        try:
            return Endpoint(match.group(1), int(match.group(2)))
        except ConfigError:
            raise self._bad(key, value, expected) from None

    def choice(self, key: str, enum_type: type) -> Any:
        value = self.obj.get(key)
        if isinstance(value, str) and value in enum_type._value2member_map_:
            return enum_type._value2member_map_[value]
        expected = "one of " + ", ".join(f'"{member.value}"' for member in enum_type)
        raise self._bad(key, self._get(key, expected), expected)

    def payload(self) -> bytes:
        has_text, has_b64 = "text" in self.obj, "b64" in self.obj
        if has_text == has_b64:
            raise self.fail(
                f'{self.what} record must have exactly one of the fields "text" and "b64", '
                f"found {'both' if has_text else 'neither'}"
            )
        if has_text:
            text = self.string("text")
            try:
                return text.encode("utf-8")
            except UnicodeEncodeError:
                raise self.fail(
                    f'{self.what} record has field "text" holding an unpaired surrogate; '
                    "expected text that encodes as UTF-8"
                ) from None
        encoded = self.string("b64", "base64 text")
        try:
            return _b64decode(encoded)
        except (binascii.Error, ValueError) as exc:
            raise self.fail(
                f'{self.what} record has bad base64 in field "b64" ({exc}); expected base64 text'
            ) from None


def _b64decode(encoded: str | bytes) -> bytes:
    """Strict base64 decoding; SIMD-fast with pybase64, else the standard library."""
    if isinstance(encoded, str):
        encoded = encoded.encode("ascii")
    if _pybase64 is not None:
        return _pybase64.b64decode(encoded, validate=True)
    try:
        return binascii.a2b_base64(encoded, strict_mode=True)
    except TypeError:  # Python 3.10: no strict mode
        return base64.b64decode(encoded, validate=True)


def _b64encode(data: bytes) -> bytes:
    if _pybase64 is not None:
        return _pybase64.b64encode(data)
    return binascii.b2a_base64(data, newline=False)


# A binary Data record as the encoder writes it: decoded without a JSON parse,
# which matters when replaying gigabytes. Anything else takes the general path.
# The lines this codec itself writes most, read without a JSON parser. Any
# line they do not fit exactly takes the general path, which checks everything.
_FAST_DATA = re.compile(
    rb'\{"t": (0|[1-9][0-9]*)\.([0-9]{6}), "ev": "data", "conn": (0|[1-9][0-9]*), '
    rb'"dir": "(c2s|s2c)", "(b64|text)": "'
)
_FAST_STEP = re.compile(
    rb'\{"t": (0|[1-9][0-9]*)\.([0-9]{6}), "ev": "(shut|reset|close)", "conn": (0|[1-9][0-9]*)'
    rb'(?:, "dir": "(c2s|s2c)")?\}'
)
# What a JSON string may hold unescaped and still mean the same bytes.
_NOT_PLAIN_TEXT = re.compile(rb"[^\x20\x21\x23-\x5b\x5d-\x7e]")
_DIRECTIONS = {b"c2s": Direction.C2S, b"s2c": Direction.S2C}


def _decode_fast(line: bytes) -> Record | None:
    match = _FAST_DATA.match(line)
    if match is not None:
        if not line.endswith(b'"}'):
            return None
        payload = line[match.end() : -2]
        if match.group(5) == b"text":
            if _NOT_PLAIN_TEXT.search(payload):
                return None  # escapes or non-ASCII: the general path decodes them
            data = payload
        else:
            try:
                data = _b64decode(payload)
            except (binascii.Error, ValueError):
                return None  # the general path reports it
        t = float(match.group(1) + b"." + match.group(2))
        return Data(t, int(match.group(3)), _DIRECTIONS[match.group(4)], data)
    match = _FAST_STEP.fullmatch(line)
    if match is None:
        return None
    t, conn, kind, direction = (
        float(match.group(1) + b"." + match.group(2)),
        int(match.group(4)),
        *match.group(3, 5),
    )
    if kind == b"close":
        return None if direction else Closed(t, conn)
    if not direction:
        return None
    return (HalfClosed if kind == b"shut" else Reset)(t, conn, _DIRECTIONS[direction])


def _decode_header(fields: _Fields) -> Header:
    version = fields.obj["netplay_cassette"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise fields._bad("netplay_cassette", version, "an integer format version")
    if version != FORMAT_VERSION:
        raise fields.fail(
            f"unknown cassette format version {version}; this tool reads version {FORMAT_VERSION}. "
            "If the cassette was made by a newer Net Playground, upgrade pytest-netplayground to read it"
        )
    subnet = fields.string("subnet", 'an IPv4 network like "10.0.0.0/24"')
    try:
        ipaddress.IPv4Network(subnet, strict=True)
    except ValueError:
        raise fields._bad("subnet", subnet, 'an IPv4 network like "10.0.0.0/24"') from None
    hosts_value = fields._get("hosts", "a list of hosts")
    if not isinstance(hosts_value, list):
        raise fields._bad("hosts", hosts_value, "a list of hosts")
    hosts = []
    for index, item in enumerate(hosts_value):
        if not isinstance(item, dict):
            raise fields._bad("hosts", item, 'a list of objects like {"address": "10.0.0.1", ...}')
        host = _Fields(item, f"header host #{index}", fields.offset)
        address = host.string("address", 'an IPv4 address like "10.0.0.1"')
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            raise host._bad("address", address, 'an IPv4 address like "10.0.0.1"') from None
        hosts.append(HostInfo(address, host.string("name", default=""), host.string("command", default="")))
    return Header(
        subnet=subnet,
        hosts=tuple(hosts),
        started=fields.time("started"),
        tool_version=fields.string("tool_version"),
        version=version,
    )


def decode_record(line: bytes, *, offset: int | None = None) -> Record:
    """Decode one line (with or without its newline), out of stream context.

    Raises :class:`CassetteFormatError` carrying *offset* for any malformed input.
    """
    line = bytes(line)
    if line.endswith(b"\n"):
        line = line[:-1]
    if len(line) > MAX_LINE:
        raise CassetteFormatError(
            f"line of {len(line)} bytes is longer than the {MAX_LINE}-byte limit; "
            "expected one JSON record per line",
            offset=offset,
        )
    fast = _decode_fast(line)
    if fast is not None:
        return fast
    if not line.strip():
        raise CassetteFormatError("empty line; expected a JSON record", offset=offset)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CassetteFormatError(
            f"line is not UTF-8 (bad byte at column {exc.start}); expected a JSON record", offset=offset
        ) from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise CassetteFormatError(
            f"line is not valid JSON ({exc.msg} at column {exc.pos}); expected a JSON record", offset=offset
        ) from None
    except (ValueError, RecursionError) as exc:
        raise CassetteFormatError(
            f"line is not valid JSON ({exc}); expected a JSON record", offset=offset
        ) from None
    if not isinstance(obj, dict):
        raise CassetteFormatError(
            f"line holds a JSON {type(obj).__name__}, expected a JSON object", offset=offset
        )
    if "netplay_cassette" in obj:
        return _decode_header(_Fields(obj, "header", offset))
    ev = obj.get("ev")
    if ev not in _EVENT_NAMES:
        expected = "one of " + ", ".join(f'"{n}"' for n in _EVENT_NAMES)
        if "ev" not in obj:
            raise CassetteFormatError(f'record has no "ev" field; expected {expected}', offset=offset)
        raise CassetteFormatError(f"unknown event type ev={_show(ev)}; expected {expected}", offset=offset)
    if ev == "noise":
        return decode_noise(obj, offset)
    fields = _Fields(obj, f'"{ev}"', offset)
    t = fields.time("t")
    if ev == "end":
        return End(t)
    if ev in ("listen", "udp"):
        from .codec_notes import decode_note

        return decode_note(ev, fields, t)
    conn = fields.conn()
    if ev == "open":
        return ConnectionOpened(
            t, conn, fields.endpoint("client"), fields.endpoint("server"), fields.choice("outcome", Outcome)
        )
    if ev == "close":
        return Closed(t, conn)
    direction = fields.choice("dir", Direction)
    if ev == "data":
        return Data(t, conn, direction, fields.payload())
    if ev == "shut":
        return HalfClosed(t, conn, direction)
    return Reset(t, conn, direction)


class Decoder:
    """Incremental cassette decoder: bytes in, complete records out.

    Keeps only the incomplete trailing line between calls (at most
    ``max_line`` bytes) and the set of opened connection numbers, and checks
    the stream's structure: the header comes first and once, events name
    opened connections, nothing follows the end marker.
    """

    def __init__(self, *, max_line: int = MAX_LINE):
        self.max_line = max_line
        self._buf = bytearray()
        self._pos = 0  # start of the pending line within _buf
        self._scanned = 0  # _buf[_pos:_scanned] holds no newline
        self._base = 0  # absolute offset of _buf[0]
        self._header: Header | None = None
        self._ended = False
        self._opened: set[int] = set()
        self._error: CassetteFormatError | None = None
        self.last_offset: int | None = None
        self.last_length: int | None = None

    @property
    def header(self) -> Header | None:
        """The header, once its line has been decoded."""
        return self._header

    @property
    def complete(self) -> bool:
        """Whether the end marker has been decoded."""
        return self._ended

    @property
    def offset(self) -> int:
        """Absolute offset of the first byte not yet returned as part of a record."""
        return self._base + self._pos

    @property
    def pending(self) -> bytes:
        """Bytes received but not yet decoded: an incomplete trailing line, or whole lines not drained."""
        return bytes(self._buf[self._pos :])

    @property
    def buffered(self) -> int:
        """How many bytes the decoder currently holds."""
        return len(self._buf) - self._pos

    def receive(self, data: bytes) -> None:
        """Add bytes to the buffer; drain them with :meth:`next_record`."""
        if self._error is not None:
            raise self._error
        if self._pos:
            del self._buf[: self._pos]
            self._base += self._pos
            self._scanned -= self._pos
            self._pos = 0
        self._buf += data

    def next_record(self) -> Record | None:
        """The next complete record, or None until more bytes arrive.

        ``last_offset`` and ``last_length`` then locate its line in the stream.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except CassetteFormatError as exc:
            self._error = exc
            raise

    def feed(self, data: bytes) -> list[Record]:
        """Receive bytes and return every record they complete."""
        self.receive(data)
        records = []
        while (record := self.next_record()) is not None:
            records.append(record)
        return records

    def finish(self) -> list[Record]:
        """Declare end of input: return any records not yet drained, then raise
        if an incomplete line remains or no header was ever seen."""
        records = []
        while (record := self.next_record()) is not None:
            records.append(record)
        if self.buffered:
            self._error = CassetteFormatError(
                f"truncated record: the last {self.buffered} bytes have no newline; "
                "expected a newline-terminated JSON record (was the recording interrupted?)",
                offset=self.offset,
            )
            raise self._error
        if self._header is None:
            self._error = CassetteFormatError(
                "empty file: not a Net Playground cassette (no header line)", offset=self.offset
            )
            raise self._error
        return records

    def _next(self) -> Record | None:
        start = self._pos
        newline = self._buf.find(b"\n", max(self._scanned, start))
        if newline < 0:
            self._scanned = len(self._buf)
            pending = len(self._buf) - start
            if pending > self.max_line:
                raise CassetteFormatError(
                    f"line longer than the {self.max_line}-byte limit with no newline in sight; "
                    "expected newline-terminated JSON records",
                    offset=self._base + start,
                )
            if self._header is None and pending:
                self._check_looks_like_header(start)
            return None
        offset = self._base + start
        line = bytes(self._buf[start:newline])
        self._pos = newline + 1
        self._scanned = self._pos
        if len(line) > self.max_line:
            raise CassetteFormatError(
                f"line of {len(line)} bytes is longer than the {self.max_line}-byte limit; "
                "expected one JSON record per line",
                offset=offset,
            )
        self.last_offset = offset
        self.last_length = newline + 1 - start
        if self._header is None:
            return self._first(line, offset)
        record = decode_record(line, offset=offset)
        self._check_order(record, offset)
        return record

    def _check_looks_like_header(self, start: int) -> None:
        head = bytes(self._buf[start : start + 64]).lstrip()
        if head and not head.startswith(b"{"):
            raise CassetteFormatError(
                "not a Net Playground cassette: the first line must be a JSON header "
                f'like {{"netplay_cassette": {FORMAT_VERSION}, ...}}',
                offset=self._base + start,
            )

    def _first(self, line: bytes, offset: int) -> Header:
        not_cassette = (
            "not a Net Playground cassette: the first line must be a JSON header "
            f'like {{"netplay_cassette": {FORMAT_VERSION}, ...}}'
        )
        try:
            record = decode_record(line, offset=offset)
        except CassetteFormatError as exc:
            if b'"netplay_cassette"' in line:
                raise
            raise CassetteFormatError(f"{not_cassette} ({exc.reason})", offset=offset) from None
        if not isinstance(record, Header):
            raise CassetteFormatError(not_cassette, offset=offset)
        self._header = record
        return record

    def _check_order(self, record: Record, offset: int) -> None:
        if self._ended:
            raise CassetteFormatError(
                "record after the end marker; the end marker must be the last line", offset=offset
            )
        if isinstance(record, Header):
            raise CassetteFormatError(
                "a second header; expected events after the first line (are two cassettes concatenated?)",
                offset=offset,
            )
        if isinstance(record, End):
            self._ended = True
            return
        if isinstance(record, _NOTES):
            return
        if isinstance(record, ConnectionOpened):
            if record.conn in self._opened:
                raise CassetteFormatError(f"connection {record.conn} is opened twice", offset=offset)
            self._opened.add(record.conn)
        elif record.conn not in self._opened:
            raise CassetteFormatError(
                f'event for connection {record.conn}, which was never opened; expected an "open" record first',
                offset=offset,
            )
