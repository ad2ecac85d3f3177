"""What exchange matching found different from the recording, in a report's terms.

Each finding is labelled, like the others of :mod:`.divergence`, with the
recorded connection it concerns (number, key, ordinal), so a
:class:`~.divergence.DivergenceReport` groups and prints it as it does them.
"""

from __future__ import annotations

import attrs

from .addressing import ConnectionKey
from .divergence import ByteMismatch

__all__ = ["MoreMismatches", "RequestMismatch", "ReusedExchanges", "UnansweredRequest", "UnusedExchanges"]


@attrs.frozen
class RequestMismatch(ByteMismatch):
    """A live request that no recorded one equals, answered with the reply to the closest.

    ``offset`` counts from the start of the request; the labels (connection,
    ordinal) are those of the recorded exchange whose reply was given.
    """

    exchange: int = attrs.field(default=0, kw_only=True)
    live_length: int = attrs.field(default=0, kw_only=True)
    recorded_length: int = attrs.field(default=0, kw_only=True)

    @property
    def summary(self) -> str:
        return (
            f"c2s: a live request ({self.live_length} bytes) matched no recorded one; answered as "
            f"request {self.exchange + 1} of this connection ({self.recorded_length} bytes), "
            f"which differs at offset {self.offset}"
        )


@attrs.frozen
class UnansweredRequest:
    """Live bytes sent where the recording of the key holds no request at all."""

    conn: int
    key: ConnectionKey
    ordinal: int
    count: int
    first: bytes

    @property
    def summary(self) -> str:
        return f"c2s: {self.count} live requests could not be answered (no recorded request), first {self.first!r}"


@attrs.frozen
class ReusedExchanges:
    """The live clients asked for exchanges more often than recorded; replies were given again."""

    conn: int
    key: ConnectionKey
    ordinal: int
    count: int

    @property
    def summary(self) -> str:
        return f"{self.count} live requests were answered with recorded replies already given once"


@attrs.frozen
class UnusedExchanges:
    """Recorded exchanges of a key that no live request asked for."""

    conn: int
    key: ConnectionKey
    ordinal: int
    count: int
    total: int
    first: bytes

    @property
    def summary(self) -> str:
        return f"{self.count} of {self.total} recorded exchanges were never asked for; first request {self.first!r}"


@attrs.frozen
class MoreMismatches:
    """Requests answered by their closest match beyond the ones reported one by one."""

    conn: int
    key: ConnectionKey
    ordinal: int
    count: int

    @property
    def summary(self) -> str:
        return (
            f"c2s: {self.count} more live requests matched no recorded one and were answered as the closest"
        )
