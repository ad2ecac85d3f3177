"""What each side of a replayed connection has done since the other last answered.

Causal pacing asks, before a recorded answer goes to a live side, whether
that side has had its turn. :class:`Stretches` keeps the counts that answer
it, per direction: what the recorded sender sent since its stretch began,
what the live sender sent since it was last answered, when it last spoke,
and whether it closed.
"""

from __future__ import annotations

import enum
import math

from .events import Direction

__all__ = ["Needs", "Stretches"]


class Needs(enum.Enum):
    """What a live side must still do before its turn is over."""

    NOTHING = "nothing"
    #: It sent something short of its recorded turn, or has not closed as
    #: recorded: over once it has been quiet for the settle time.
    QUIET = "quiet"
    #: It has sent nothing of its turn yet: a stall if it stays silent.
    BYTES = "bytes"


class Stretches:
    """Per-direction counts of the recorded and the live sender's current stretch."""

    def __init__(self) -> None:
        sides = tuple(Direction)
        self.last: Direction | None = None  # the direction of the last recorded step played
        self.recorded = dict.fromkeys(sides, 0)
        self.recorded_closed = dict.fromkeys(sides, False)
        self.live = dict.fromkeys(sides, 0)
        self.live_input = dict.fromkeys(sides, -math.inf)
        self.live_ended = dict.fromkeys(sides, False)  # closed or reset

    def live_data(self, side: Direction, size: int, now: float) -> None:
        self.live_input[side] = now
        self.live[side] += size

    def live_end(self, side: Direction, now: float) -> None:
        self.live_input[side] = now
        self.live_ended[side] = True

    def played(self, direction: Direction, size: int, closes: bool) -> None:
        """A recorded step of ``direction`` was played (``size`` bytes, or a close)."""
        if direction is not self.last:
            # The recorded sender answers: a new stretch for it, and the live
            # side that receives this answers anew; what that side sent beyond
            # its recorded turn (a pipelined request) counts toward its next.
            other = direction.reverse
            self.last = direction
            self.recorded[direction] = 0
            self.live[other] = max(0, self.live[other] - self.recorded[other])
        self.recorded[direction] += size
        if closes:
            self.recorded_closed[direction] = True

    def needs(self, side: Direction) -> Needs:
        if self.live_ended[side]:
            return Needs.NOTHING
        have, need = self.live[side], self.recorded[side]
        if have < need:
            return Needs.QUIET if have > 0 else Needs.BYTES
        return Needs.QUIET if self.recorded_closed[side] else Needs.NOTHING

    def quiet_since(self, side: Direction, since: float) -> float:
        """When ``side`` last spoke, or ``since`` if that is later."""
        return max(since, self.live_input[side])

    def waiting_for(self, side: Direction, what: str) -> str:
        """In words, what ``side`` has not done before ``what`` may be replayed."""
        have, need = self.live[side], self.recorded[side]
        if have < need:
            return f"{need} bytes {side.value} from the {side.sender} ({have} so far) before replaying {what}"
        return f"the {side.sender} to end its {side.value} stream before replaying {what}"
