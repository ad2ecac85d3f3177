"""What a drive found: each connection's verdict, its timings, and the whole in a table or JSON.

A connection is *identical* when the live server answered as recorded (noise
aside), *differs* when its answers differ (the findings are the replay's
divergence types, so they read like a replay's report), and *failed* when it
could not be played (refused, reset, stalled). Timings compare how long the
live server took to its first and last byte with how long the recorded one
did, both counted from the connection's opening.
"""

from __future__ import annotations

import enum
import statistics
from collections.abc import Iterable

import attrs

from .divergence import Divergence, DivergenceReport
from .drive_plan import PlannedConnection
from .events import ConnectionOpened, Data, Direction

__all__ = ["ConnectionResult", "DriveReport", "Timing", "Verdict", "recorded_timing"]


class Verdict(str, enum.Enum):
    """How one driven connection went."""

    IDENTICAL = "identical"
    DIFFERS = "differs"
    FAILED = "failed"


@attrs.frozen
class Timing:
    """Seconds from a connection's opening to its server's first and last byte (None: none came)."""

    first_byte: float | None = None
    last_byte: float | None = None

    def to_json(self) -> dict:
        return {"first_byte": self.first_byte, "last_byte": self.last_byte}


def recorded_timing(opened: ConnectionOpened, events: Iterable[object]) -> Timing:
    """The recorded server's timing in connection ``opened``, from the cassette's events."""
    times = [
        e.t - opened.t
        for e in events
        if isinstance(e, Data) and e.conn == opened.conn and e.direction is Direction.S2C and e.data
    ]
    return Timing(min(times), max(times)) if times else Timing()


@attrs.frozen
class ConnectionResult:
    """One driven connection: what the live server did, against the recording."""

    planned: PlannedConnection
    live: Timing = Timing()
    recorded: Timing = Timing()
    divergences: tuple[Divergence, ...] = attrs.field(default=(), converter=tuple)
    failure: str | None = None
    #: Seconds after the drive started when this connection was opened (None: never was).
    started: float | None = None

    @property
    def verdict(self) -> Verdict:
        if self.failure is not None:
            return Verdict.FAILED
        return Verdict.DIFFERS if self.divergences else Verdict.IDENTICAL

    def to_json(self) -> dict:
        planned = self.planned
        return {
            "conn": planned.opened.conn,
            "copy": planned.copy,
            "client": str(planned.client),
            "server": str(planned.server),
            "recorded_client": str(planned.opened.client),
            "recorded_server": str(planned.opened.server),
            "verdict": self.verdict.value,
            "failure": self.failure,
            "planned_start": planned.start,
            "started": self.started,
            "divergences": [_divergence_json(d) for d in self.divergences],
            "live": self.live.to_json(),
            "recorded": self.recorded.to_json(),
        }


def _divergence_json(item: Divergence) -> dict:
    found = {"kind": type(item).__name__, "summary": item.summary}
    direction = getattr(item, "direction", None)
    if direction is not None:
        found["direction"] = direction.value
    for name in ("offset", "sent", "recorded"):
        value = getattr(item, name, None)
        if isinstance(value, int):
            found[name] = value
    for name in ("expected", "actual"):
        value = getattr(item, name, None)
        if isinstance(value, bytes):
            found[name] = value.decode("latin-1")
    return found


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _ratio(live: float | None, recorded: float | None) -> str:
    if live is None or recorded is None or recorded <= 0:
        return "-"
    return f"{live / recorded:.2f}x"


def _timing(live: float | None, recorded: float | None) -> str:
    return f"{_ms(live)} ({_ms(recorded)}, {_ratio(live, recorded)})"


@attrs.frozen
class DriveReport:
    """Every driven connection's result; falsy-free: ask :attr:`ok`."""

    results: tuple[ConnectionResult, ...] = attrs.field(default=(), converter=tuple)

    @property
    def ok(self) -> bool:
        """Whether every connection was played and answered as recorded."""
        return all(r.verdict is Verdict.IDENTICAL for r in self.results)

    def counts(self) -> dict[Verdict, int]:
        counts = dict.fromkeys(Verdict, 0)
        for result in self.results:
            counts[result.verdict] += 1
        return counts

    def by_port(self) -> dict[int, dict[Verdict, int]]:
        """Verdict counts per live server port, ports in order."""
        ports: dict[int, dict[Verdict, int]] = {}
        for result in self.results:
            counts = ports.setdefault(result.planned.server.port, dict.fromkeys(Verdict, 0))
            counts[result.verdict] += 1
        return dict(sorted(ports.items()))

    def summary(self) -> str:
        counts = self.counts()
        text = ", ".join(f"{counts[v]} {v.value}" for v in Verdict)
        return f"{len(self.results)} connections driven: {text}"

    def format(self, verbose: bool = False) -> str:
        """The summary, a table per server port, each differing or failed connection in detail,
        then the timings (of every connection when ``verbose``, else of those not identical)."""
        lines = [self.summary(), "", f"{'port':>6} {'identical':>10} {'differs':>8} {'failed':>7}"]
        for port, counts in self.by_port().items():
            row = [counts[Verdict.IDENTICAL], counts[Verdict.DIFFERS], counts[Verdict.FAILED]]
            lines.append(f"{port:>6} {row[0]:>10} {row[1]:>8} {row[2]:>7}")
        for result in self.results:
            if result.verdict is Verdict.IDENTICAL:
                continue
            lines += ["", f"{result.planned.label}: {result.verdict.value}"]
            if result.failure is not None:
                lines.append(f"    {result.failure}")
            if result.divergences:
                detail = DivergenceReport(result.divergences).format().splitlines()[1:]
                lines += ["    " + line for line in detail]
        lines += self._medians()
        shown = [r for r in self.results if verbose or r.verdict is not Verdict.IDENTICAL]
        if shown:
            lines += ["", "time to first / last byte, ms: live (recorded, ratio)"]
            for r in shown:
                first = _timing(r.live.first_byte, r.recorded.first_byte)
                last = _timing(r.live.last_byte, r.recorded.last_byte)
                lines.append(f"  {r.planned.label}: first {first}, last {last}")
        return "\n".join(lines)

    def achieved_rate(self) -> float | None:
        """Connections opened per second, from the first opening to the last (None: fewer than two)."""
        starts = sorted(r.started for r in self.results if r.started is not None)
        if len(starts) < 2 or starts[-1] <= starts[0]:
            return None
        return (len(starts) - 1) / (starts[-1] - starts[0])

    def _medians(self) -> list[str]:
        """The median live and recorded time to the last byte, over the connections that had both."""
        pairs = [(r.live.last_byte, r.recorded.last_byte) for r in self.results]
        pairs = [(live, recorded) for live, recorded in pairs if live is not None and recorded is not None]
        if not pairs:
            return []
        live = statistics.median(p[0] for p in pairs)
        recorded = statistics.median(p[1] for p in pairs)
        return [
            "",
            f"median time to last byte: {_ms(live)} ms live, {_ms(recorded)} ms recorded ({_ratio(live, recorded)})",
        ]

    def to_json(self) -> dict:
        counts = self.counts()
        return {
            "summary": {
                "connections": len(self.results),
                **{v.value: counts[v] for v in Verdict},
                "by_port": {str(p): {v.value: n for v, n in c.items()} for p, c in self.by_port().items()},
                "ok": self.ok,
                "achieved_rate": self.achieved_rate(),
            },
            "connections": [r.to_json() for r in self.results],
        }

    def __str__(self) -> str:
        return self.format()
