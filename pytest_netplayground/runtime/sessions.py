"""Record and replay sessions: what the supervisor does with each connection.

A session is asked at each new connection what to do (go live, refuse, stand
in for the server), gives every proxy pipe its :class:`~.pipes.Tap`, and is
finished at teardown. Live mode needs none (:class:`~.session.Session`);
:class:`~.recorder.Recorder` writes a cassette as the run goes on;
:class:`~.replayer.Replayer` plays one back and collects the divergences.
"""

from __future__ import annotations

import time

from ..core.exchange import Match
from ..core.replay import ReplayConfig
from .exchange_tap import ExchangeReplayer
from .loop import Loop
from .recorder import Recorder, RecordTap
from .replayer import BIND_PATIENCE, Replayer, ReplayTap
from .session import Session

__all__ = ["BIND_PATIENCE", "Recorder", "RecordTap", "Replayer", "ReplayTap", "Session", "make_session"]


def make_session(spec: dict, loop: Loop, subnet: str, subnet6: str = "") -> Session:
    """The session for ``spec`` (``mode``: live, record or replay, with its ``cassette``)."""
    origin = time.monotonic()
    mode = spec.get("mode", "live")
    if mode == "record":
        return Recorder(origin, spec["cassette"], subnet, subnet6, tls=spec.get("tls", "off"))
    if mode == "replay":
        config = spec.get("replay", ReplayConfig())
        # Exchange matching (``config.match``) is a replayer of its own, in its own module.
        kind = ExchangeReplayer if config.match is Match.EXCHANGE else Replayer
        return kind(origin, spec["cassette"], loop, config)
    return Session(origin)
