"""Noise a drive learns from the live server itself, before it compares.

Played against the same server twice or more, a connection's answers differ
only where the server is not deterministic (an HTTP ``Date``, a random id);
those spans are noise (the idea of Twitter's Diffy). They are learned between
the live answers, then moved onto the recorded answer the comparison uses as
its template: bytes the live answers share with the recording keep their
place, so a span lands on the same value in the recording.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence

from .events import ConnectionOpened, Data, Direction
from .noise import LearnedNoise, learn
from .turns import split_turns

__all__ = ["learn_from_answers", "move_spans"]

#: Past this many bytes a turn is not aligned with the recording: spans move only between equal lengths.
ALIGN_LIMIT = 256 * 1024


def _point(x: int, blocks: list, start: bool) -> int:
    """Where offset ``x`` of the live turn falls in the recorded one (``blocks``: matching blocks)."""
    previous_end = 0
    for a, b, size in blocks:
        if a <= x < a + size or (not start and x == a + size and size):
            return b + (x - a)
        if x < a:
            return previous_end if start else b
        previous_end = b + size
    return previous_end


def move_spans(live: bytes, recorded: bytes, spans: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """``spans`` of ``live`` as spans of ``recorded``: through the bytes both share.

    A span edge inside bytes the two do not share goes to the nearest shared
    byte outside the span's side, so a span never swallows a shared stretch.
    """
    if not spans:
        return ()
    if len(live) == len(recorded) and (len(live) > ALIGN_LIMIT or live == recorded):
        return tuple(spans)
    if len(live) > ALIGN_LIMIT or len(recorded) > ALIGN_LIMIT:
        return ()
    blocks = difflib.SequenceMatcher(None, live, recorded, autojunk=False).get_matching_blocks()
    moved = []
    for begin, end in spans:
        first, last = _point(begin, blocks, True), _point(end, blocks, False)
        if last > first:
            moved.append((first, min(last, len(recorded))))
        elif begin < end:
            moved.append((first, first))  # nothing shared around it: at least where it was
    return tuple(moved)


def _events(opened: Mapping[int, ConnectionOpened], answers: Mapping[int, Sequence[Data]]) -> list:
    events: list = []
    for conn, found in sorted(answers.items()):
        if conn in opened:
            events.append(opened[conn])
            events.extend(found)
    return events


def learn_from_answers(
    opened: Mapping[int, ConnectionOpened],
    recorded: Mapping[int, Iterable[Data]],
    runs: Sequence[Mapping[int, Sequence[Data]]],
) -> tuple[LearnedNoise, ...]:
    """The server-to-client noise between the live ``runs`` (each: conn -> what was sent and
    answered, in order), in terms of the ``recorded`` Data of each connection."""
    if len(runs) < 2:
        return ()
    first = _events(opened, runs[0])
    found: dict[tuple[int, int], list] = {}
    for other in runs[1:]:
        for item in learn(first, _events(opened, other)):
            if item.direction is Direction.S2C:
                found.setdefault((item.conn, item.turn), []).extend(item.spans)
    learned = []
    for (conn, turn), spans in sorted(found.items()):
        live_turns = [t for t in split_turns(runs[0][conn]) if t.direction is Direction.S2C]
        recorded_turns = [
            t for t in split_turns(list(recorded.get(conn, ()))) if t.direction is Direction.S2C
        ]
        if turn >= len(live_turns) or turn >= len(recorded_turns):
            continue
        moved = move_spans(live_turns[turn].data, recorded_turns[turn].data, sorted(spans))
        if moved:
            learned.append(LearnedNoise(conn, Direction.S2C, turn, moved))
    return tuple(learned)
