"""Which recorded connections a drive plays, from where, and when.

Driving plays a cassette's clients against live servers. Before any socket
opens, the recorded connections become a plan: those to the servers named by
``only`` (all by default: a recorded server's own connections, to its
database say, are left out with it), the share chosen by
``sample`` (by a hash of each connection's identity, so the same connections
are chosen on every run and on every machine), each repeated ``multiply``
times from distinct client ports (the first copy keeps the recorded port, so
the server sees the recorded peer), addresses moved by ``mapping``, and a
start time: the recorded one divided by ``speed``, one every ``1/rate``
seconds in recorded order, or all at once under flood.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

import attrs

from ..errors import ConfigError
from .addressing import Endpoint
from .capture_map import parse_mappings
from .events import ConnectionOpened
from .replay import Pacing, pacing
from .validation import named, positive_number, whole_number

__all__ = ["DriveOptions", "PlannedConnection", "plan_drive", "noise_run_count", "EPHEMERAL_PORTS"]

#: Where the extra copies of ``multiply`` take their client ports from: Linux's
#: default ephemeral range, which servers expect their peers' ports in.
EPHEMERAL_PORTS = range(32768, 61000)


def _multiply(value: object) -> int:
    number = whole_number(value)
    if number is None or number < 1:
        raise ConfigError(f"multiply must be a whole number of at least 1, not {value!r}")
    return number


def _sample(value: object) -> float:
    share = named("sample", positive_number)(value)
    if share > 1:
        raise ConfigError(f"sample is the share of connections to play, above 0 and at most 1, not {value!r}")
    return share


def _rate(value: object) -> float | None:
    return None if value is None else named("rate", positive_number)(value)


def _mapping(value: object) -> tuple[tuple[str, str], ...]:
    """``{"10.0.0.1": "10.0.0.5"}`` or ``["10.0.0.1=10.0.0.5"]`` as sorted, canonical pairs."""
    if isinstance(value, Mapping):
        value = [f"{old}={new}" for old, new in value.items()]
    elif isinstance(value, str):
        value = [value]
    elif isinstance(value, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in value):
        value = [f"{old}={new}" for old, new in value]
    return tuple(sorted(parse_mappings(value).items()))


def _only(value: object) -> tuple[str, ...]:
    """Servers as ``ADDR:PORT``, ``ADDR`` or ``PORT`` (``[ADDR]:PORT`` for IPv6), canonical."""
    items = [value] if isinstance(value, (str, int)) else list(value)  # type: ignore[call-overload]
    out = []
    for item in items:
        text = str(item).strip()
        try:
            if text.isdigit():
                out.append(str(Endpoint("0.0.0.0", int(text)).port))
            elif text.startswith("[") and "]:" in text or text.count(":") == 1:
                host, port = text.rsplit(":", 1)
                out.append(str(Endpoint(host.strip("[]"), int(port))))
            else:
                out.append(Endpoint(text.strip("[]"), 1).host)
        except (ValueError, TypeError, ConfigError):
            raise ConfigError(
                f"only takes servers as ADDR:PORT, ADDR or PORT (like 10.0.0.1:80, 10.0.0.1 or 80), not {item!r}"
            ) from None
    return tuple(out)


def noise_run_count(value: object) -> int:
    """How many more times a drive plays every connection to learn its noise: 0 (none), or
    at least 2 (two answers to compare); the one check of the Python API and ``--noise-runs``."""
    runs = whole_number(value)
    if runs is None or runs < 0 or runs == 1:
        raise ConfigError(
            f"noise_runs is 0 (learn nothing) or at least 2 runs (two answers to compare), not {value!r}"
        )
    return runs


@attrs.frozen
class DriveOptions:
    """How a drive plays the recorded clients; see the module docstring."""

    #: Within one connection, as for replay: causal waits for the server's answer.
    pacing: Pacing = attrs.field(default=Pacing.CAUSAL, converter=named("pacing", pacing))
    speed: float = attrs.field(default=1.0, converter=named("speed", positive_number))
    #: Connections opened per second, in recorded order; None: at their recorded times.
    rate: float | None = attrs.field(default=None, converter=_rate)
    multiply: int = attrs.field(default=1, converter=_multiply)
    sample: float = attrs.field(default=1.0, converter=_sample)
    mapping: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_mapping)
    #: The recorded servers whose connections are played (empty: every one).
    only: tuple[str, ...] = attrs.field(default=(), converter=_only)

    def plays(self, opened: ConnectionOpened) -> bool:
        """Whether ``only`` lets the recorded connection ``opened`` go."""
        if not self.only:
            return True
        server = opened.server
        return any(item in (str(server), server.host, str(server.port)) for item in self.only)

    def moved(self, address: str) -> str:
        """Where ``address`` of the recording lives in the drive."""
        return dict(self.mapping).get(address, address)


@attrs.frozen
class PlannedConnection:
    """One connection a drive opens: a copy of a recorded one, with its live ends and start."""

    opened: ConnectionOpened
    copy: int
    client: Endpoint
    server: Endpoint
    #: Seconds after the drive starts.
    start: float

    @property
    def label(self) -> str:
        copy = f" (copy {self.copy + 1})" if self.copy else ""
        return f"#{self.opened.conn} {self.client} -> {self.server}{copy}"


def chosen(opened: ConnectionOpened, share: float) -> bool:
    """Whether ``sample=share`` plays ``opened``: the same answer on every run and machine."""
    if share >= 1:
        return True
    identity = f"{opened.client}>{opened.server}#{opened.conn}".encode()
    draw = int.from_bytes(hashlib.blake2b(identity, digest_size=8).digest(), "big") / 2**64
    return draw < share


class _Ports:
    """Free client ports of each address, for the extra copies of ``multiply``."""

    def __init__(self, taken: Iterable[Endpoint]):
        self.taken: dict[str, set[int]] = {}
        for endpoint in taken:
            self.taken.setdefault(endpoint.host, set()).add(endpoint.port)
        self.next: dict[str, int] = {}

    def claim(self, host: str) -> int:
        taken = self.taken.setdefault(host, set())
        port = self.next.get(host, EPHEMERAL_PORTS.start)
        while port in taken:
            port += 1
        if port not in EPHEMERAL_PORTS:
            raise ConfigError(
                f"multiply needs more client ports of {host} than the {len(EPHEMERAL_PORTS)} ephemeral ones; "
                "use a smaller multiply or sample"
            )
        taken.add(port)
        self.next[host] = port + 1
        return port


def _starts(opened: Sequence[ConnectionOpened], options: DriveOptions) -> list[float]:
    if options.pacing is Pacing.FLOOD:
        return [0.0] * len(opened)
    if options.rate is not None:
        return [i / options.rate for i in range(len(opened))]
    first = min((o.t for o in opened), default=0.0)
    return [(o.t - first) / options.speed for o in opened]


def plan_drive(opened: Sequence[ConnectionOpened], options: DriveOptions) -> list[PlannedConnection]:
    """The connections to open, sorted by start (then recorded order, then copy)."""
    named = [o for o in opened if options.plays(o)]
    if opened and not named:
        servers = ", ".join(sorted({str(o.server) for o in opened}))
        raise ConfigError(
            f"only {', '.join(options.only)} matches no recorded connection; the recorded servers are {servers}"
        )
    played = [o for o in named if chosen(o, options.sample)]
    played.sort(key=lambda o: (o.t, o.conn))
    clients = [Endpoint(options.moved(o.client.host), o.client.port) for o in played]
    ports = _Ports(clients)
    plan = []
    for o, client, start in zip(played, clients, _starts(played, options)):
        server = Endpoint(options.moved(o.server.host), o.server.port)
        plan.append(PlannedConnection(o, 0, client, server, start))
        for copy in range(1, options.multiply):
            plan.append(
                PlannedConnection(o, copy, Endpoint(client.host, ports.claim(client.host)), server, start)
            )
    return plan
