"""How long a replayed connection waits for a live server before the cassette stands in.

A connection to a host where a process of ours runs may reach a server that
is still starting: its connect is refused until the server listens. The
recording knows how long each server took to first accept after its host got
its first process (a ``listen`` note), so on replay a connection waits until
that moment plus a margin, measured from the same start on this run. A
placeholder process (``sleep``) in the host then costs at most that, and
nothing at all once the moment has passed.
"""

from __future__ import annotations

from .addressing import Endpoint

__all__ = ["FALLBACK_PATIENCE", "LISTEN_MARGIN", "stand_in_deadline"]

#: Slack on top of the recorded listen delay: a loaded machine starts a server later.
LISTEN_MARGIN = 0.5
#: The wait for cassettes that recorded no listen delays (made before they were noted).
FALLBACK_PATIENCE = 2.0


def stand_in_deadline(
    listen_delays: dict[Endpoint, float],
    server: Endpoint,
    host_since: float,
    now: float,
    *,
    margin: float = LISTEN_MARGIN,
    fallback: float = FALLBACK_PATIENCE,
) -> float:
    """Until when a refused connection to ``server`` is retried before the cassette stands in.

    ``host_since`` is when the server's host got its first process on this
    run, ``now`` the time of the first refusal, both on one monotonic clock.
    A server whose listen delay was recorded is waited for until
    ``host_since + delay + margin``. A server of a cassette that noted listen
    delays but none for it never accepted while recording: no wait. A cassette
    without any listen delays waits ``fallback`` seconds from ``now``.
    """
    delay = listen_delays.get(server)
    if delay is not None:
        return host_since + delay + margin
    if listen_delays:
        return now
    return now + fallback
