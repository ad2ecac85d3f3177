"""What the cassette encoder and decoder share: the record types, the line limits,
the text-or-base64 choice and the primitives every line is built of.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re

import attrs

try:  # SIMD base64: ~50x the standard library on the record/replay hot path
    import pybase64 as _pybase64
except ImportError:  # pragma: no cover - the standard library does the same, slower
    _pybase64 = None

from .events import (
    Closed,
    ConnectionOpened,
    Data,
    Datagram,
    HalfClosed,
    Header,
    ListenDelay,
    Refusal,
    Reset,
    UdpFlow,
    UdpSeen,
)
from .noise import LearnedNoise

__all__ = [
    "MAX_DATA_CHUNK",
    "MAX_LINE",
    "End",
    "Record",
    "b64decode",
    "b64encode",
    "encode_conn",
    "encode_line",
    "encode_time",
    "is_text",
    "json_text",
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
    Header
    | ConnectionOpened
    | Data
    | HalfClosed
    | Reset
    | Closed
    | LearnedNoise
    | End
    | ListenDelay
    | UdpSeen
    | UdpFlow
    | Datagram
    | Refusal
)

# C0 controls except tab, LF and CR; DEL; C1 controls. Payloads holding any of
# them are stored as base64, since they would show as noise in a diff.
_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


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


def json_text(value: object) -> str:
    """A value as ASCII JSON, as every field of a line is written."""
    return json.dumps(value, ensure_ascii=True)


def encode_time(value: float, what: str) -> str:
    """Seconds as a field: six decimals, refusing what no reader could take back."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite, non-negative number of seconds, got {value!r}")
    text = f"{value:.6f}"
    # -0.0 passes the sign check but would print as "-0.000000".
    return "0.000000" if text == "-0.000000" else text


def encode_conn(value: int) -> str:
    """A connection number as a field."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"conn must be a non-negative integer, got {value!r}")
    return str(value)


def encode_line(pairs: list[tuple[str, str]]) -> bytes:
    """One record's line from its ``(key, encoded value)`` pairs, in their order."""
    body = ", ".join(f'"{key}": {value}' for key, value in pairs)
    line = ("{" + body + "}\n").encode("ascii")
    if len(line) - 1 > MAX_LINE:
        raise ValueError(
            f"record of {len(line) - 1} bytes exceeds the {MAX_LINE}-byte line limit; "
            f"split Data payloads into chunks of at most {MAX_DATA_CHUNK} bytes"
        )
    return line


def b64decode(encoded: str | bytes) -> bytes:
    """Strict base64 decoding; SIMD-fast with pybase64, else the standard library."""
    if isinstance(encoded, str):
        encoded = encoded.encode("ascii")
    if _pybase64 is not None:
        return _pybase64.b64decode(encoded, validate=True)
    try:
        return binascii.a2b_base64(encoded, strict_mode=True)
    except TypeError:  # Python 3.10: no strict mode
        return base64.b64decode(encoded, validate=True)


def b64encode(data: bytes) -> bytes:
    """Base64 without a newline; SIMD-fast with pybase64, else the standard library."""
    if _pybase64 is not None:
        return _pybase64.b64encode(data)
    return binascii.b2a_base64(data, newline=False)
