"""Turns: what one side of a connection said before the other answered.

A recorded connection is a dialogue. Pacing, divergence checks, noise and
exchange matching all reason about it in turns rather than in raw byte
counts, so one side sending a few bytes more or fewer than recorded shifts
nothing after the turn it happened in.

The definition, shared by everything that counts turns: the non-empty
``Data`` events of one connection, in recorded order, are split into maximal
runs of one direction; each run is a turn. Turns are numbered from 0 in that
order over both directions (so they alternate), and each turn also has its
number among the turns of its own direction (``index``).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from .events import Data, Direction

__all__ = ["Turn", "split_turns"]


@attrs.frozen
class Turn:
    """One side's bytes between two answers of the other side."""

    number: int  # position among all turns of the connection
    index: int  # position among the turns of this direction
    direction: Direction
    data: bytes
    t: float  # recorded time of the turn's first byte


def split_turns(events: Iterable[object]) -> list[Turn]:
    """The turns of one connection's events (anything not ``Data`` is passed over)."""
    turns: list[Turn] = []
    pieces: list[bytes] = []
    direction: Direction | None = None
    started = 0.0
    per_direction = dict.fromkeys(Direction, 0)

    def flush() -> None:
        if direction is not None and pieces:
            turns.append(Turn(len(turns), per_direction[direction], direction, b"".join(pieces), started))
            per_direction[direction] += 1

    for event in events:
        if not isinstance(event, Data) or not event.data:
            continue
        if event.direction is not direction:
            flush()
            direction, pieces, started = event.direction, [], event.t
        pieces.append(bytes(event.data))
    flush()
    return turns
