"""Toxics on a proxied TCP connection: what becomes of the bytes one side writes to the other.

A fault on the wire acts on packets; a toxic acts on the byte stream of one
direction of a connection the proxy terminates, as toxiproxy's do (the names
are theirs): ``stall`` holds the bytes (the connection stays open) until
cleared; ``limit_data`` lets N bytes through, then resets both sides;
``slicer`` writes the bytes in pieces of about ``size`` bytes with ``delay``
seconds between them; a half-close ends the direction (the receiver reads
end of file, later bytes of the sender are dropped).

:class:`ToxicStream` is the decision, free of sockets: bytes and ends of file
go in, :meth:`ToxicStream.pull` says what to write now and when to ask again.
"""

from __future__ import annotations

import collections
import random

import attrs

from ..errors import ConfigError
from .faults import duration
from .validation import named

__all__ = ["EOF", "RESET", "Slicer", "Toxics", "ToxicStream", "slicer", "toxics"]

#: What :meth:`ToxicStream.pull` gives for "half-close toward the receiver" and "reset both sides".
EOF = "eof"
RESET = "reset"


def _whole(value: object) -> object:
    """A whole number given as text (from a command line) as an int; anything else as it is."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    return value


def _count(name: str):
    def convert(value: object) -> int:
        value = _whole(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name}: expected a whole number of bytes, 0 or more, got {value!r}")
        return value

    return convert


def _size(value: object) -> int:
    value = _whole(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"slicer size: expected a whole number of bytes, 1 or more, got {value!r}")
    return value


@attrs.frozen
class Slicer:
    """Pieces of ``size`` bytes (± up to ``variation``), ``delay`` seconds apart (toxiproxy's
    ``average_size``, ``size_variation`` and ``delay``)."""

    size: int = attrs.field(converter=_size)
    delay: float = attrs.field(default=0.0, converter=named("slicer delay", duration))
    variation: int = attrs.field(default=0, converter=_count("slicer variation"))

    @variation.validator
    def _smaller(self, attribute, value) -> None:
        if value >= self.size:
            raise ConfigError(f"slicer variation: must be below the size ({self.size}), got {value}")


def slicer(value: object) -> Slicer | None:
    """A :class:`Slicer` from one, a size, a ``(size, delay[, variation])`` tuple, a dict,
    or text ``"SIZE[,DELAY[,VARIATION]]"`` (``"64,1ms"``)."""
    if value is None or isinstance(value, Slicer):
        return value
    if isinstance(value, str):
        value = tuple(part.strip() for part in value.split(","))
    if isinstance(value, dict):
        try:
            return Slicer(**value)
        except TypeError as exc:
            raise ConfigError(f"slicer: takes size, delay, variation: {exc}") from None
    if isinstance(value, (tuple, list)) and 1 <= len(value) <= 3:
        return Slicer(*value)
    if isinstance(value, int) and not isinstance(value, bool):
        return Slicer(value)
    raise ConfigError(f"slicer: expected a size, (size, delay) or {{'size': 10, 'delay': '1ms'}}, got {value!r}")


@attrs.frozen
class Toxics:
    """The toxics of one direction of a connection; the default lets every byte through at once."""

    stall: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    limit_data: int | None = attrs.field(
        default=None, converter=lambda v: None if v is None else _count("limit_data")(v)
    )
    slicer: Slicer | None = attrs.field(default=None, converter=slicer)

    @property
    def is_clear(self) -> bool:
        return not self.stall and self.limit_data is None and self.slicer is None

    def describe(self) -> str:
        words = []
        if self.stall:
            words.append("stall")
        if self.limit_data is not None:
            words.append(f"limit_data={self.limit_data}")
        if self.slicer is not None:
            words.append(f"slicer={attrs.astuple(self.slicer)}")
        return " ".join(words) or "none"


def toxic_names() -> tuple[str, ...]:
    return tuple(field.name for field in attrs.fields(Toxics))


def toxics(values: dict) -> Toxics:
    """:class:`Toxics` from keyword values; an unknown name is a :class:`ConfigError` naming it."""
    names = toxic_names()
    for key in values:
        if key not in names:
            raise ConfigError(f"unknown toxic {key!r}; allowed: {', '.join(names)}")
    return Toxics(**values)


@attrs.define
class ToxicStream:
    """One direction of a connection under toxics; see the module docstring.

    ``rng`` draws the slicer's size variation (seeded, so a rerun slices alike).
    """

    toxics: Toxics = attrs.field(factory=Toxics)
    rng: random.Random = attrs.field(factory=lambda: random.Random(0))
    sent: int = 0
    dropped: int = 0
    ended: bool = False  # an end of file (or a reset) is queued or gone: later bytes are dropped
    reset: bool = False
    _queue: collections.deque = attrs.field(factory=collections.deque)
    _next_at: float = 0.0

    _clear: bool = True

    def __attrs_post_init__(self) -> None:
        self._clear = self.toxics.is_clear

    def set(self, toxics: Toxics) -> None:
        """New toxics from now on; what is held goes on under them."""
        self.toxics = toxics
        self._clear = toxics.is_clear

    @property
    def idle(self) -> bool:
        """Nothing held and no toxic: bytes may go straight through (the fast path)."""
        return self._clear and not self._queue and not self.ended

    @property
    def held(self) -> int:
        return sum(len(item) for item in self._queue if not isinstance(item, str))

    def push(self, data: bytes) -> None:
        if self.ended:
            self.dropped += len(data)
        elif data:
            self._queue.append(bytes(data))

    def push_eof(self) -> None:
        if not self.ended:
            self.ended = True
            self._queue.append(EOF)

    def close(self) -> None:
        """Half-close: the receiver gets an end of file after what is already queued."""
        self.push_eof()

    def pull(self, now: float) -> tuple[list, float | None]:
        """What to write now (bytes, :data:`EOF`, :data:`RESET`), and when to pull again (None: on the next push)."""
        out: list = []
        if self.reset:
            return out, None
        toxics = self.toxics
        limit, pieces = toxics.limit_data, toxics.slicer
        queue = self._queue
        while queue and not toxics.stall:
            item = queue[0]
            if item == EOF:
                queue.popleft()
                out.append(EOF)
                continue
            if limit is not None and self.sent >= limit:
                return self._reset(out)
            if pieces is not None and pieces.delay and now < self._next_at:
                return out, self._next_at
            size = len(item)
            if pieces is not None:
                size = pieces.size
                if pieces.variation:
                    size += self.rng.randint(-pieces.variation, pieces.variation)
            if limit is not None:
                size = min(size, limit - self.sent)
            piece, rest = item[:size], item[size:]
            if rest:
                queue[0] = rest
            else:
                queue.popleft()
            out.append(piece)
            self.sent += len(piece)
            if pieces is not None and pieces.delay:
                self._next_at = now + pieces.delay
            if limit is not None and self.sent >= limit:
                return self._reset(out)
        return out, None

    def _reset(self, out: list) -> tuple[list, None]:
        self.reset = self.ended = True
        self.dropped += self.held
        self._queue.clear()
        out.append(RESET)
        return out, None
