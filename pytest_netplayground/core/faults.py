"""What can go wrong on a link: the value types of network faults and their units.

A link is a pair of hosts; its faults hold per direction. Values are given in
seconds, probabilities (0 to 1) and bytes per second, or as text with a unit
(``"50ms"``, ``"2%"``, ``"10mbit"``), as ``tc netem`` and toxiproxy users
write them. Every value goes through the converters here, wherever it is
given (API, marker, command line), so it is refused with the same words.
"""

from __future__ import annotations

import enum
import math
import re

import attrs

from ..errors import ConfigError
from .validation import named, non_negative_number, one_of

__all__ = [
    "Distribution",
    "GilbertElliott",
    "LinkFaults",
    "duration",
    "fault_field_names",
    "link_faults",
    "probability",
    "rate",
]

_WITH_UNIT = re.compile(r"((?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e[-+]?[0-9]+)?)([a-z]*)")
_DURATION_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "ms": 1e-3, "msec": 1e-3, "us": 1e-6, "usec": 1e-6}
# Bits per second (tc's kbit, mbit...) and bytes per second (B, kB, MB, optionally "/s").
_RATE_UNITS = {
    "": 1.0,
    "bit": 1 / 8,
    "kbit": 1e3 / 8,
    "mbit": 1e6 / 8,
    "gbit": 1e9 / 8,
    "b": 1.0,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
}


def _with_unit(value: object, units: dict[str, float], allowed: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"expected {allowed}, got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        if text.endswith("/s"):
            text = text[:-2]
        match = _WITH_UNIT.fullmatch(text)
        if match is None or match.group(2) not in units:
            raise ConfigError(f"expected {allowed}, got {value!r}")
        number = float(match.group(1)) * units[match.group(2)]
    if not math.isfinite(number) or number < 0:
        raise ConfigError(f"expected {allowed}, got {value!r}")
    return number


def duration(value: object) -> float:
    """Seconds: a number of 0 or more, or text such as ``"50ms"``, ``"0.2s"``, ``"300us"``."""
    return _with_unit(value, _DURATION_UNITS, "a time of 0 or more in seconds (0.05) or with a unit (50ms, 300us)")


def rate(value: object) -> float:
    """Bytes per second: a number above 0, or text such as ``"10mbit"``, ``"1.25MB"``, ``"64kB/s"``."""
    allowed = "a rate above 0 in bytes per second (1250000) or with a unit (10mbit, 1.25MB)"
    number = _with_unit(value, _RATE_UNITS, allowed)
    if number <= 0:
        raise ConfigError(f"expected {allowed}, got {value!r}")
    return number


def probability(value: object) -> float:
    """A probability from 0 to 1, or a percentage as text (``"2%"``)."""
    allowed = "a probability from 0 to 1 (0.02) or a percentage (2%)"
    if isinstance(value, str) and value.strip().endswith("%"):
        number = _with_unit(value.strip()[:-1], {"": 1.0}, allowed) / 100
    else:
        number = _with_unit(value, {"": 1.0}, allowed)
    if number > 1:
        raise ConfigError(f"expected {allowed}, got {value!r}")
    return number


class Distribution(str, enum.Enum):
    """How jitter is drawn around the latency: uniform in ±jitter, or normal with jitter as its deviation."""

    UNIFORM = "uniform"
    NORMAL = "normal"


@attrs.frozen
class GilbertElliott:
    """Burst loss (netem's ``loss gemodel p r 1-h 1-k``): a good and a bad state.

    ``p`` is the chance per packet of going from good to bad, ``r`` of coming
    back; a packet is lost with ``bad_loss`` in the bad state, ``good_loss`` in
    the good one. Mean burst length is ``1/r`` packets.
    """

    p: float = attrs.field(converter=named("gemodel p", probability))
    r: float = attrs.field(converter=named("gemodel r", probability))
    bad_loss: float = attrs.field(default=1.0, converter=named("gemodel bad_loss", probability))
    good_loss: float = attrs.field(default=0.0, converter=named("gemodel good_loss", probability))


def _gemodel(value: object) -> GilbertElliott | None:
    if value is None or isinstance(value, GilbertElliott):
        return value
    if isinstance(value, dict):
        try:
            return GilbertElliott(**value)
        except TypeError as exc:
            raise ConfigError(f"gemodel: takes p, r, bad_loss, good_loss: {exc}") from None
    if isinstance(value, (tuple, list)) and 2 <= len(value) <= 4:
        return GilbertElliott(*value)
    raise ConfigError(f"gemodel: expected {{'p': 0.01, 'r': 0.3}} or (p, r[, bad_loss, good_loss]), got {value!r}")


def _optional(convert):
    return lambda value: None if value is None else convert(value)


@attrs.frozen
class LinkFaults:
    """The faults of one direction of a link; all zero (the default) is a perfect wire.

    ``latency`` and ``jitter`` are seconds (one way), ``distribution`` how
    jitter is drawn; ``rate`` is bytes per second (None: unlimited), through a
    token bucket of ``burst`` bytes with at most ``queue`` bytes waiting
    (None: a tenth of a second's worth, at least 256 KiB) beyond which
    packets are dropped at the tail. ``loss``, ``duplicate``, ``reorder`` and
    ``corrupt`` are probabilities per packet; ``gemodel`` is burst loss.
    """

    latency: float = attrs.field(default=0.0, converter=named("latency", duration))
    jitter: float = attrs.field(default=0.0, converter=named("jitter", duration))
    distribution: Distribution = attrs.field(
        default=Distribution.UNIFORM, converter=named("distribution", one_of(Distribution))
    )
    rate: float | None = attrs.field(default=None, converter=named("rate", _optional(rate)))
    burst: float = attrs.field(default=0.0, converter=named("burst", non_negative_number))
    queue: float | None = attrs.field(default=None, converter=named("queue", _optional(non_negative_number)))
    loss: float = attrs.field(default=0.0, converter=named("loss", probability))
    gemodel: GilbertElliott | None = attrs.field(default=None, converter=_gemodel)
    duplicate: float = attrs.field(default=0.0, converter=named("duplicate", probability))
    reorder: float = attrs.field(default=0.0, converter=named("reorder", probability))
    corrupt: float = attrs.field(default=0.0, converter=named("corrupt", probability))

    @property
    def queue_limit(self) -> float:
        """Bytes that may wait for the rate limit before the tail is dropped."""
        if self.queue is not None:
            return self.queue
        return max(256 * 1024.0, (self.rate or 0.0) * 0.1)

    @property
    def is_clear(self) -> bool:
        return self == LinkFaults()

    def describe(self) -> str:
        """The fields that differ from a perfect wire, as ``name=value`` words."""
        clear = LinkFaults()
        words = []
        for field in attrs.fields(LinkFaults):
            value = getattr(self, field.name)
            if value != getattr(clear, field.name):
                if isinstance(value, enum.Enum):
                    value = value.value
                elif isinstance(value, GilbertElliott):
                    value = attrs.astuple(value)
                words.append(f"{field.name}={value}")
        return " ".join(words) or "none"


def fault_field_names() -> tuple[str, ...]:
    return tuple(field.name for field in attrs.fields(LinkFaults))


def link_faults(values: dict) -> LinkFaults:
    """A :class:`LinkFaults` from keyword values; an unknown name is a :class:`ConfigError` naming it."""
    names = fault_field_names()
    for key in values:
        if key not in names:
            raise ConfigError(f"unknown fault {key!r}; allowed: {', '.join(names)}")
    return LinkFaults(**values)
