"""Decoding one cassette line into its record, out of stream context.

Raises nothing but :class:`CassetteFormatError` whatever bytes it is given,
with the byte offset of the offending line when the caller knows it. The
lines this codec writes most are read without a JSON parser (the fast path);
anything else is parsed and every field checked.
"""

from __future__ import annotations

import binascii
import ipaddress
import json
import math
import re
from typing import Any

from ..errors import CassetteFormatError, ConfigError
from .addressing import Endpoint
from .codec_base import MAX_LINE, End, Record, b64decode
from .events import (
    READABLE_VERSIONS,
    Closed,
    ConnectionOpened,
    Data,
    Direction,
    HalfClosed,
    Header,
    HostInfo,
    Outcome,
    Reset,
)
from .noise_codec import decode_noise

__all__ = ["Fields", "decode_record"]

_ENDPOINT = re.compile(r"(\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]{2,45}\]):(\d{1,5})", re.ASCII)

_EVENT_NAMES = (
    "open", "data", "shut", "reset", "close", "noise", "end", "listen", "udp", "flow", "dgram", "refused", "tls"
)


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


class Fields:
    """Typed access to one decoded JSON object, raising errors that name the field."""

    def __init__(self, obj: dict, what: str, offset: int | None):
        self.obj = obj
        self.what = what
        self.offset = offset

    def fail(self, message: str) -> CassetteFormatError:
        return CassetteFormatError(message, offset=self.offset)

    def get(self, key: str, expected: str) -> Any:
        if key not in self.obj:
            raise self.fail(f'{self.what} record is missing field "{key}"; expected {expected}')
        return self.obj[key]

    def bad(self, key: str, value: Any, expected: str) -> CassetteFormatError:
        return self.fail(f'{self.what} record has field "{key}" = {_show(value)}; expected {expected}')

    def string(self, key: str, expected: str = "a string", default: str | None = None) -> str:
        if default is not None and key not in self.obj:
            return default
        value = self.get(key, expected)
        if not isinstance(value, str):
            raise self.bad(key, value, expected)
        return value

    def time(self, key: str) -> float:
        expected = "a non-negative number of seconds"
        value = self.get(key, expected)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.bad(key, value, expected)
        number = float(value)
        if not math.isfinite(number) or number < 0:
            raise self.bad(key, value, expected)
        return number

    def conn(self) -> int:
        expected = "a non-negative integer connection number"
        value = self.get("conn", expected)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.bad("conn", value, expected)
        return value

    def endpoint(self, key: str) -> Endpoint:
        expected = 'an address and port like "10.0.0.1:80" or "[fd00::1]:80"'
        value = self.string(key, expected)
        match = _ENDPOINT.fullmatch(value)
        if match is None:
            raise self.bad(key, value, expected)
        host = match.group(1)
        if host.startswith("[") != (":" in host):
            raise self.bad(key, value, expected)
        try:
            return Endpoint(host.strip("[]"), int(match.group(2)))
        except ConfigError:
            raise self.bad(key, value, expected) from None

    def choice(self, key: str, enum_type: type) -> Any:
        value = self.obj.get(key)
        if isinstance(value, str) and value in enum_type._value2member_map_:
            return enum_type._value2member_map_[value]
        expected = "one of " + ", ".join(f'"{member.value}"' for member in enum_type)
        raise self.bad(key, self.get(key, expected), expected)

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
            return b64decode(encoded)
        except (binascii.Error, ValueError) as exc:
            raise self.fail(
                f'{self.what} record has bad base64 in field "b64" ({exc}); expected base64 text'
            ) from None


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
                data = b64decode(payload)
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


def _decode_header(fields: Fields) -> Header:
    version = fields.obj["netplay_cassette"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise fields.bad("netplay_cassette", version, "an integer format version")
    if version not in READABLE_VERSIONS:
        raise fields.fail(
            f"unknown cassette format version {version}; this tool reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}. "
            "If the cassette was made by a newer Net Playground, upgrade pytest-netplayground to read it"
        )
    subnet = fields.string("subnet", 'an IPv4 network like "10.0.0.0/24"')
    try:
        ipaddress.IPv4Network(subnet, strict=True)
    except ValueError:
        raise fields.bad("subnet", subnet, 'an IPv4 network like "10.0.0.0/24"') from None
    hosts_value = fields.get("hosts", "a list of hosts")
    if not isinstance(hosts_value, list):
        raise fields.bad("hosts", hosts_value, "a list of hosts")
    hosts = []
    for index, item in enumerate(hosts_value):
        if not isinstance(item, dict):
            raise fields.bad("hosts", item, 'a list of objects like {"address": "10.0.0.1", ...}')
        host = Fields(item, f"header host #{index}", fields.offset)
        address = host.string("address", 'an IPv4 address like "10.0.0.1"')
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            raise host.bad("address", address, 'an IPv4 address like "10.0.0.1"') from None
        address6 = host.string("address6", default="")
        if address6:
            try:
                ipaddress.IPv6Address(address6)
            except ValueError:
                raise host.bad("address6", address6, 'an IPv6 address like "fd00::1"') from None
        name, command = host.string("name", default=""), host.string("command", default="")
        hosts.append(HostInfo(address, name, command, address6))
    subnet6 = fields.string("subnet6", default="")
    if subnet6:
        try:
            ipaddress.IPv6Network(subnet6, strict=True)
        except ValueError:
            raise fields.bad("subnet6", subnet6, 'an IPv6 network like "fd00:1::/64"') from None
    tls = fields.string("tls", default="off")
    if tls not in ("off", "intercept"):
        raise fields.bad("tls", tls, '"off" or "intercept"')
    faults = fields.obj.get("faults", [])
    if not isinstance(faults, list) or not all(isinstance(line, str) for line in faults):
        raise fields.bad("faults", faults, 'a list of strings like ["h1<->h2: latency=0.05"]')
    fault_seed = fields.obj.get("fault_seed")
    if fault_seed is not None and (isinstance(fault_seed, bool) or not isinstance(fault_seed, int)):
        raise fields.bad("fault_seed", fault_seed, "a whole number")
    return Header(
        tls=tls,
        faults=tuple(faults),
        fault_seed=fault_seed,
        subnet6=subnet6,
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
        return _decode_header(Fields(obj, "header", offset))
    ev = obj.get("ev")
    if ev not in _EVENT_NAMES:
        expected = "one of " + ", ".join(f'"{n}"' for n in _EVENT_NAMES)
        if "ev" not in obj:
            raise CassetteFormatError(f'record has no "ev" field; expected {expected}', offset=offset)
        raise CassetteFormatError(f"unknown event type ev={_show(ev)}; expected {expected}", offset=offset)
    if ev == "noise":
        return decode_noise(obj, offset)
    fields = Fields(obj, f'"{ev}"', offset)
    t = fields.time("t")
    if ev == "end":
        return End(t)
    if ev in ("listen", "udp", "flow", "dgram", "refused", "tls"):
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
