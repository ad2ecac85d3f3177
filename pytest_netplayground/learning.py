"""Recording a run twice to learn its noise.

``--runs 2`` records the same run twice, each to a file of its own beside the
cassette; only once both are done does the cassette become the first
recording plus the noise learned from the second (see
:func:`~.core.noise.learn`), replaced atomically like any recording.
"""

from __future__ import annotations

import os
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


def commit_with_noise(first: str | os.PathLike, second: str | os.PathLike, path: str | os.PathLike):
    """Make *path* the *first* recording plus the noise learned from *second*; remove both.

    Returns the noise. Raises :class:`CassetteError` (leaving both recordings
    and any cassette at *path* as they were) if either recording is incomplete.
    """
    recordings = [Cassette(first), Cassette(second)]
    noise: tuple[LearnedNoise, ...] = learn(recordings[0].events(), recordings[1].events())
    for recording in recordings:
        if not recording.complete:
            raise CassetteError(
                f"cannot learn noise from {recording.path}: the recording was cut short; record again"
            )
    end = None
    with CassetteWriter(path, recordings[0].header) as writer:
        for record in recordings[0].records():
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
