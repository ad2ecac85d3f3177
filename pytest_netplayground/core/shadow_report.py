"""What a shadow found: each mirrored connection's verdict and the summary a person reads.

The findings are replay's (:mod:`.divergence`): the primary's answer stands where a
replay has the recorded bytes ("expected"), the candidate's where it has the live
ones ("actual"). A connection whose shadow could not be carried through (the
candidate refused, reset, stalled, or fell behind) is *failed*; one whose answers
differ is *differing*; the rest are *identical*.
"""

from __future__ import annotations

import enum
import statistics

import attrs

from .addressing import ConnectionKey, Endpoint
from .divergence import DivergenceReport, Stall, plural

__all__ = ["ShadowFailed", "ShadowConnection", "ShadowOutcome", "ShadowReport", "verdict"]


class ShadowOutcome(str, enum.Enum):
    IDENTICAL = "identical"
    DIFFERING = "differing"
    FAILED = "failed"


@attrs.frozen
class ShadowFailed:
    """The shadow of this connection was given up: ``reason`` says why, in words."""

    conn: int
    key: ConnectionKey
    ordinal: int
    reason: str

    @property
    def summary(self) -> str:
        return f"shadow failed: {self.reason}"


@attrs.frozen
class ShadowConnection:
    """One mirrored connection: who the client was, what each server answered, and the findings.

    ``conn`` numbers the shadow's connections in the order they were mirrored;
    ``primary_first``/``candidate_first``: seconds from the client's first byte to each
    server's first answer byte (None: no answer, or the client sent nothing first).
    """

    conn: int
    key: ConnectionKey
    client: Endpoint
    items: tuple = attrs.field(converter=tuple)
    primary_bytes: int = 0
    candidate_bytes: int = 0
    primary_first: float | None = None
    candidate_first: float | None = None

    @property
    def outcome(self) -> ShadowOutcome:
        if any(isinstance(item, (ShadowFailed, Stall)) for item in self.items):
            return ShadowOutcome.FAILED
        return ShadowOutcome.DIFFERING if self.items else ShadowOutcome.IDENTICAL


def verdict(
    conn: int, key: ConnectionKey, ordinal: int, client: Endpoint, findings: list, failure: str, **sizes
) -> ShadowConnection:
    """A connection's verdict from the answers' findings and the reason its shadow failed (or "")."""
    items = list(findings)
    if failure:
        items.append(ShadowFailed(conn, key, ordinal, failure))
    return ShadowConnection(conn, key, client, items, **sizes)


@attrs.frozen
class ShadowReport:
    """A shadow's connections so far (``in_flight`` more are being mirrored) and how they compared."""

    primary: Endpoint
    candidate: Endpoint
    connections: tuple[ShadowConnection, ...] = attrs.field(converter=tuple, default=())
    in_flight: int = 0
    #: No new connection is mirrored (stopped, or the sandbox closed).
    stopped: bool = False
    #: Of ``in_flight``, those whose primary connection has ended: the candidate is finishing.
    settling: int = 0

    def _count(self, outcome: ShadowOutcome) -> int:
        return sum(1 for c in self.connections if c.outcome is outcome)

    @property
    def mirrored(self) -> int:
        """Connections whose shadow is over (``in_flight`` not counted)."""
        return len(self.connections)

    @property
    def identical(self) -> int:
        return self._count(ShadowOutcome.IDENTICAL)

    @property
    def differing(self) -> int:
        return self._count(ShadowOutcome.DIFFERING)

    @property
    def failed(self) -> int:
        return self._count(ShadowOutcome.FAILED)

    @property
    def ok(self) -> bool:
        """Every connection mirrored so far got an identical answer (but for ignored noise)."""
        return self.differing == 0 and self.failed == 0

    def __bool__(self) -> bool:
        return self.ok

    @property
    def divergences(self) -> DivergenceReport:
        """Every finding, as a replay's report holds them."""
        return DivergenceReport(tuple(item for c in self.connections for item in c.items))

    def by_outcome(self, outcome: ShadowOutcome | str) -> tuple[ShadowConnection, ...]:
        outcome = ShadowOutcome(outcome)
        return tuple(c for c in self.connections if c.outcome is outcome)

    def summary(self) -> str:
        text = (
            f"shadow {self.primary} -> {self.candidate}: {plural(self.mirrored, 'connection')} mirrored, "
            f"{self.identical} identical, {self.differing} differing, {self.failed} failed"
        )
        if self.in_flight:
            text += f" ({self.in_flight} still in flight)"
        timed = [(c.primary_first, c.candidate_first) for c in self.connections]
        timed = [pair for pair in timed if None not in pair]
        if timed:
            primary, candidate = (statistics.median(side) * 1000 for side in zip(*timed))
            text += f"; first answer byte, median: primary {primary:.1f} ms, candidate {candidate:.1f} ms"
        return text

    def format(self) -> str:
        """The summary line, then each differing or failed connection's findings, with a hex view."""
        lines = [self.summary()]
        report = self.divergences
        if not report.ok:
            lines.append("  (expected: the primary's answer; actual: the candidate's)")
            lines.extend("  " + line for line in report.format().splitlines()[1:])
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()
