"""Recording a run twice to learn its noise.

``--runs 2`` records the same run twice, each to a file of its own beside the
cassette; only once both are done does the cassette become the first
recording plus the noise learned from the second (see
:func:`~.core.noise.learn`), replaced atomically like any recording.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .cassette import Cassette, CassetteWriter
from .core.codec import End
from .core.events import Header
from .core.noise import LearnedNoise, learn
from .errors import CassetteError

__all__ = ["commit_with_noise", "run_path"]


def run_path(path: str | os.PathLike, run: int) -> Path:
    """Where recording number *run* (from 1) of the cassette *path* is kept until both are done."""
    path = Path(path)
    return path.with_name(f"{path.name}.run{run}")


def _turn_order(item: tuple) -> tuple:
    (conn, direction, turn), _ = item
    return conn, direction.value, turn


def _joined(noise: list[LearnedNoise]) -> tuple[LearnedNoise, ...]:
    """One record per turn, its spans from every comparison joined."""
    spans: dict = {}
    for item in noise:
        spans.setdefault((item.conn, item.direction, item.turn), []).extend(item.spans)
    joined = []
    for (conn, direction, turn), found in sorted(spans.items(), key=_turn_order):
        merged: list[list[int]] = []
        for start, end in sorted(found):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        joined.append(LearnedNoise(conn, direction, turn, tuple(map(tuple, merged))))
    return tuple(joined)


def commit_with_noise(
    first: str | os.PathLike, others: Sequence[str | os.PathLike], path: str | os.PathLike
) -> tuple[LearnedNoise, ...]:
    """Make *path* the *first* recording plus the noise learned from each of *others*; remove them all.

    Returns the noise. Raises :class:`CassetteError` (leaving the recordings
    and any cassette at *path* as they were) if a recording is incomplete.
    """
    base = Cassette(first)
    recordings = [base] + [Cassette(other) for other in others]
    noise = _joined([item for other in recordings[1:] for item in learn(base.events(), other.events())])
    for recording in recordings:
        if not recording.complete:
            raise CassetteError(
                f"cannot learn noise from {recording.path}: the recording was cut short; record again"
            )
    end = None
    with CassetteWriter(path, base.header) as writer:
        for record in base.records():
            if isinstance(record, End):
                end = record.t
            elif not isinstance(record, (Header, LearnedNoise)):
                writer.write(record)
        for item in noise:
            writer.write(item)
        writer.commit(end if end is not None else 0.0)
    for recording in recordings:
        recording.close()
        recording.path.unlink(missing_ok=True)
    return noise
