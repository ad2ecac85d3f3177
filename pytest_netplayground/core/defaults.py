"""Defaults of the settings that the plugin, the command line and the Python API
all offer, defined once so the faces cannot drift apart.
"""

from __future__ import annotations

__all__ = ["GRACE", "MATCH", "MAX_RUNS", "PACE", "SETTLE", "SPEED", "STALL_TIMEOUT"]

#: Seconds between the kill signal and SIGKILL when a sandbox stops its processes.
GRACE = 5.0
#: Seconds a causal replay waits for a silent side before it reports a stall.
STALL_TIMEOUT = 5.0
#: Seconds of quiet after which a live side that sent less than recorded has had its turn.
SETTLE = 0.2
#: Speed factor of recorded pacing.
SPEED = 1.0
#: How a replay paces the recorded steps (a :class:`~.replay.Pacing` value).
PACE = "causal"
#: What a replay pairs live traffic with (a :class:`~.exchange.Match` value).
MATCH = "connection"
#: Most recordings of one run that learn its noise (``--runs``, ``record_runs``).
MAX_RUNS = 9
