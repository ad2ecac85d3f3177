"""Settings of a sandboxed test, merged from layers: ini < fixture < marker < command line.

Kept free of pytest so it is tested on its own; the plugin only gathers the
raw values of each layer and hands them here.
"""

from __future__ import annotations

import hashlib
import math
import re

import attrs

from .core.addressing import DEFAULT_SUBNET, Subnet
from .core.exchange import Match
from .core.noise import IgnoreRule, check_hosts, ignore_rules
from .core.replay import Pacing
from .errors import ConfigError

MODES = ("off", "record", "replay", "once")
MARKER_KEYS = (
    "subnet", "pace", "speed", "strict", "cassette", "stall_timeout", "settle", "match", "ignore", "check"
)
CASSETTE_SUFFIX = ".netplay"


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _positive(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a finite number above 0, got {value!r}")
    number = float(value)  # type: ignore[arg-type]
    if not number > 0 or not math.isfinite(number):
        raise ValueError(f"expected a finite number above 0, got {value!r}")
    return number


def _mode(value: object) -> str:
    text = str(value).strip().lower()
    if text not in MODES:
        raise ValueError(f"expected one of {', '.join(MODES)}, got {value!r}")
    return text


def _pace(value: object) -> str:
    text = str(value).strip().lower()
    allowed = [p.value for p in Pacing]
    if text not in allowed:
        raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")
    return text


def _runs(value: object) -> int:
    if isinstance(value, bool) or str(value).strip() not in ("1", "2", "3", "4", "5", "6", "7", "8", "9"):
        raise ValueError(f"expected a number of recordings from 1 to 9, got {value!r}")
    return int(str(value).strip())


def _match(value: object) -> str:
    text = str(value).strip().lower()
    allowed = [m.value for m in Match]
    if text not in allowed:
        raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")
    return text


def _subnet(value: object) -> str:
    return str(Subnet.parse(value))


def _cassette(value: object) -> str:
    text = str(value)
    if not text.strip():
        raise ValueError("expected a file name or path, got an empty string")
    return text


CONVERTERS = {
    "mode": _mode,
    "subnet": _subnet,
    "pace": _pace,
    "speed": _positive,
    "strict": _bool,
    "stall_timeout": _positive,
    "settle": _positive,
    "cassette": _cassette,
    "ignore": ignore_rules,
    "check": check_hosts,
    "record_runs": _runs,
    "match": _match,
}


@attrs.frozen
class Settings:
    """What one test's sandbox does; see :func:`merge` for where values come from."""

    mode: str = "off"
    subnet: str = DEFAULT_SUBNET
    pace: str = "causal"
    speed: float = 1.0
    strict: bool = True
    stall_timeout: float = 5.0
    settle: float = 0.2
    cassette: str | None = None
    ignore: tuple[IgnoreRule, ...] = ()
    check: tuple[str, ...] = ()
    record_runs: int = 1
    match: str = "connection"


def merge(layers: list[tuple[str, dict]]) -> Settings:
    """Apply ``(source, values)`` layers in order, later ones winning.

    ``None`` values mean "not given here". A bad value is a :class:`ConfigError`
    that names its source, the key, and what is allowed.
    """
    values: dict = {}
    for source, layer in layers:
        for key, raw in layer.items():
            if raw is None:
                continue
            converter = CONVERTERS.get(key)
            if converter is None:
                raise ConfigError(
                    f"{source}: unknown setting {key!r}; allowed: {', '.join(sorted(CONVERTERS))}"
                )
            try:
                values[key] = converter(raw)
            except (ValueError, TypeError, ConfigError) as exc:
                raise ConfigError(f"{source}: bad value for {key!r}: {exc}") from exc
    return Settings(**values)


def check_marker(args: tuple, kwargs: dict, where: str) -> None:
    """Reject positional arguments and unknown keywords of ``@pytest.mark.netplay``."""
    if args:
        raise ConfigError(
            f"{where}: @pytest.mark.netplay takes keyword arguments only ({', '.join(MARKER_KEYS)}), "
            f"got positional {args!r}"
        )
    for key in kwargs:
        if key not in MARKER_KEYS:
            raise ConfigError(
                f"{where}: @pytest.mark.netplay got unknown keyword {key!r}; allowed: {', '.join(MARKER_KEYS)}"
            )
    merge([(f"{where}: @pytest.mark.netplay", dict(kwargs))])


_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")
# A name whose only unsafe characters are the brackets of one parametrize id.
_PLAIN = re.compile(r"([A-Za-z0-9._=+-]+)(?:\[([A-Za-z0-9._=+-]+)\])?")
MAX_NAME = 120


def safe_file_name(name: str, max_length: int = MAX_NAME) -> str:
    """A file name made of ``name``: unsafe characters replaced, long ones shortened with a hash.

    ``test[id]`` becomes ``test_id``. Any other replacement could make two
    names alike (``a/b`` and ``a:b``), so such names get the hash too. The
    hash is of the whole original name, so two long names that share a
    prefix still get different files.
    """
    safe = _UNSAFE.sub("_", name).strip("._") or "test"
    plain = _PLAIN.fullmatch(name)
    lossless = plain is not None and safe == "_".join(part for part in plain.groups() if part)
    if len(safe) <= max_length and lossless:
        return safe
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return safe[: max_length - len(digest) - 1].rstrip("._") + "-" + digest


def cassette_name(test_name: str, class_name: str | None = None) -> str:
    """Default cassette file name of a test: ``[Class.]test_name[param-id].netplay``, made safe."""
    base = f"{class_name}.{test_name}" if class_name else test_name
    return safe_file_name(base) + CASSETTE_SUFFIX


def resolved_mode(mode: str, cassette_exists: bool) -> str:
    """The sandbox mode a session mode means for one test: ``once`` depends on the cassette."""
    if mode == "off":
        return "live"
    if mode == "once":
        return "replay" if cassette_exists else "record"
    return mode
