"""Learned noise as cassette lines.

A cassette recorded twice (``--runs 2``) ends with one ``noise`` record per
recorded turn that differed between the runs, after the connections and
before the end marker::

    {"ev": "noise", "conn": 0, "dir": "s2c", "turn": 0, "spans": [[40, 69]]}

``turn`` counts the turns of that direction in the connection (see
:mod:`.turns`); each span is a byte range ``[start, end)`` of that turn. A
cassette without noise records reads as before.
"""

from __future__ import annotations

import json

from ..errors import CassetteFormatError
from .events import Direction
from .noise import LearnedNoise

__all__ = ["decode_noise", "encode_noise"]


def encode_noise(noise: LearnedNoise) -> bytes:
    spans = ", ".join(f"[{start}, {end}]" for start, end in noise.spans)
    return (
        f'{{"ev": "noise", "conn": {int(noise.conn)}, "dir": "{noise.direction.value}", '
        f'"turn": {int(noise.turn)}, "spans": [{spans}]}}\n'
    ).encode("ascii")


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def decode_noise(obj: dict, offset: int | None = None) -> LearnedNoise:
    """A noise record from its decoded JSON object; :class:`CassetteFormatError` if malformed."""

    def bad(key: str, expected: str) -> CassetteFormatError:
        shown = "missing" if key not in obj else f"= {json.dumps(obj[key])[:60]}"
        message = f'"noise" record has field "{key}" {shown}; expected {expected}'
        return CassetteFormatError(message, offset=offset)

    for key in ("conn", "turn"):
        if not _count(obj.get(key)):
            raise bad(key, "a non-negative integer")
    if obj.get("dir") not in ("c2s", "s2c"):
        raise bad("dir", '"c2s" or "s2c"')
    spans = obj.get("spans")
    if not isinstance(spans, list) or not all(
        isinstance(span, list) and len(span) == 2 and all(map(_count, span)) and span[0] <= span[1]
        for span in spans
    ):
        raise bad("spans", "a list of [start, end] byte ranges with 0 <= start <= end")
    return LearnedNoise(obj["conn"], Direction(obj["dir"]), obj["turn"], tuple(map(tuple, spans)))
