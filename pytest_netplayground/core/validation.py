"""Validators of the values a user gives, shared by every layer that takes them.

The settings merge (ini, fixture, marker, command line), the ``netplay``
command line and the core's own configuration types all convert through
these, so a value is accepted or refused the same way, with the same words,
wherever it is given. Each raises :class:`ConfigError` saying what is allowed;
the caller adds which setting it was and where it came from.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import TypeVar

from ..errors import ConfigError
from .defaults import MAX_RUNS

__all__ = ["TLS_MODES", "named", "non_negative_number", "one_of", "positive_number", "record_runs", "tls_mode"]

#: What ``tls`` takes: ``off`` relays TLS byte for byte, ``intercept`` records its plaintext.
TLS_MODES = ("off", "intercept")

E = TypeVar("E", bound=enum.Enum)
T = TypeVar("T")


def _number(value: object, allowed: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"expected {allowed}, got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"expected {allowed}, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"expected {allowed}, got {value!r}")
    return number


def positive_number(value: object) -> float:
    """A finite number above 0: a speed or a time that a replay can wait for and still end."""
    allowed = "a finite number above 0"
    number = _number(value, allowed)
    if not number > 0:
        raise ConfigError(f"expected {allowed}, got {value!r}")
    return number


def non_negative_number(value: object) -> float:
    """A finite number of 0 or more: a time that may be none at all, but not for ever."""
    allowed = "a finite number of 0 or more"
    number = _number(value, allowed)
    if number < 0:
        raise ConfigError(f"expected {allowed}, got {value!r}")
    return number


def whole_number(value: object) -> int | None:
    """``value`` as an int when it is a whole number (an int, or one written as text), else None:
    booleans and fractions are not; the caller says what range it takes."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    try:
        return int(value)
    except ValueError:
        return None


def one_of(enum_type: type[E]) -> Callable[[object], E]:
    """A converter to a member of ``enum_type`` from the member or its value, in any case."""
    allowed = ", ".join(str(member.value) for member in enum_type)

    def convert(value: object) -> E:
        if isinstance(value, enum_type):
            return value
        try:
            return enum_type(str(value).strip().lower())
        except ValueError:
            raise ConfigError(f"expected one of {allowed}, got {value!r}") from None

    return convert


def record_runs(value: object) -> int:
    """How many times a test is recorded: 1, or more to learn what differs between runs."""
    text = str(value).strip()
    if isinstance(value, bool) or not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_RUNS:
        raise ConfigError(f"expected a number of recordings from 1 to {MAX_RUNS}, got {value!r}")
    return int(text)


def tls_mode(value: object) -> str:
    """``off`` (TLS recorded as the ciphertext it is) or ``intercept`` (the proxy terminates it)."""
    text = "" if isinstance(value, bool) else str(value).strip().lower()
    if text not in TLS_MODES:
        raise ConfigError(f"expected one of {', '.join(TLS_MODES)}, got {value!r}")
    return text


def named(name: str, convert: Callable[[object], T]) -> Callable[[object], T]:
    """``convert``, with its errors prefixed by the name of the setting: for attrs converters."""

    def convert_named(value: object) -> T:
        try:
            return convert(value)
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None

    return convert_named
