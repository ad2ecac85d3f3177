"""Settings of a sandboxed test, merged from layers: ini < fixture < marker < command line.

Kept free of pytest so it is tested on its own; the plugin only gathers the
raw values of each layer and hands them here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping

import attrs

from .core import defaults
from .core.addressing import DEFAULT_SUBNET, Subnet
from .core.addressing6 import Subnet6
from .core.exchange import match_mode
from .core.fault_spec import FaultSpec, fault_specs, seed
from .core.noise import IgnoreRule, check_hosts, ignore_rules
from .core.replay import pacing
from .core.shadow import shadow_pairs
from .core.validation import positive_number, record_runs, tls_mode
from .errors import ConfigError

#: What ``--netplay`` takes: the session's mode (each test resolves it with :func:`resolved_mode`).
SESSION_MODES = ("off", "record", "replay", "once")
MARKER_KEYS = (
    "subnet",
    "subnet6",
    "pace",
    "speed",
    "strict",
    "cassette",
    "stall_timeout",
    "settle",
    "match",
    "ignore",
    "check",
    "tls",
    "tls_ca_dir",
    "faults",
    "seed",
    "shadow",
    "agents",
    "key_file",
    "tunnel_mtu",
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


def _mode(value: object) -> str:
    text = str(value).strip().lower()
    if text not in SESSION_MODES:
        raise ValueError(f"expected one of {', '.join(SESSION_MODES)}, got {value!r}")
    return text


def _value_of(convert: Callable[[object], object]) -> Callable[[object], str]:
    """The core's enum converter, keeping the member's value: settings hold plain values."""
    return lambda value: convert(value).value  # type: ignore[attr-defined]


def _subnet(value: object) -> str:
    return str(Subnet.parse(value))


def _subnet6(value: object) -> str:
    # ``None`` (not given) never reaches a converter: the prefix is then derived from the subnet.
    return str(Subnet6.parse(value))


def _cassette(value: object) -> str:
    text = str(value)
    if not text.strip():
        raise ValueError("expected a file name or path, got an empty string")
    return text


def _directory(value: object) -> str:
    text = str(value)
    if not text.strip():
        raise ValueError("expected a directory path, got an empty string")
    return text


def _tunnel_mtu(value: object) -> int | None:
    from .core.agent_protocol import tunnel_mtu

    return tunnel_mtu(value)


def _agents(value: object) -> tuple[tuple[str, str], ...]:
    from .core.agent_protocol import parse_agents

    return tuple((name, address.text) for name, address in parse_agents(value).items())


CONVERTERS = {
    "mode": _mode,
    "subnet": _subnet,
    "subnet6": _subnet6,
    "pace": _value_of(pacing),
    "speed": positive_number,
    "strict": _bool,
    "stall_timeout": positive_number,
    "settle": positive_number,
    "cassette": _cassette,
    "ignore": ignore_rules,
    "check": check_hosts,
    "record_runs": record_runs,
    "match": _value_of(match_mode),
    "tls": tls_mode,
    "tls_ca_dir": _directory,
    "faults": fault_specs,
    "seed": seed,
    "shadow": shadow_pairs,
    "agents": _agents,
    "key_file": _cassette,
    "tunnel_mtu": _tunnel_mtu,
}


@attrs.frozen
class Settings:
    """What one test's sandbox does; see :func:`merge` for where values come from."""

    mode: str = "off"
    subnet: str = DEFAULT_SUBNET
    subnet6: str | None = None  # None: a unique local /64 derived from ``subnet``
    pace: str = defaults.PACE
    speed: float = defaults.SPEED
    strict: bool = True
    stall_timeout: float = defaults.STALL_TIMEOUT
    settle: float = defaults.SETTLE
    cassette: str | None = None
    ignore: tuple[IgnoreRule, ...] = ()
    check: tuple[str, ...] = ()
    record_runs: int = 1
    match: str = defaults.MATCH
    tls: str = "off"
    tls_ca_dir: str | None = None  # None: $NETPLAY_CA_DIR, else the user's data directory
    faults: tuple[FaultSpec, ...] = ()  # faults on the wire for the whole test (docs/faults.rst)
    seed: int | None = None  # of the faults' random choices; None: chosen and reported
    # (primary, candidate) HOST:PORT pairs whose connections are mirrored (docs/shadow.rst)
    shadow: tuple[tuple[str, str], ...] = ()
    agents: tuple[tuple[str, str], ...] = ()  # (name, "ADDR:PORT") of agents holding remote hosts
    key_file: str | None = None  # the tunnel's shared key (docs/remote.rst)
    tunnel_mtu: int | None = None  # None: the path's MTU (docs/remote.rst)


def merge(layers: list[tuple[str, Mapping]]) -> Settings:
    """Apply ``(source, values)`` layers in order, later ones winning.

    ``None`` values mean "not given here". A bad value is a :class:`ConfigError`
    that names its source, the key, and what is allowed.
    """
    values: dict = {}
    for source, layer in layers:
        if not isinstance(layer, Mapping):
            raise ConfigError(
                f"{source}: expected a dict of settings like {{'speed': 2}}, got {type(layer).__name__}"
            )
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
