"""A sandbox's session in live mode, and what the record and replay sessions build on.

A session is asked at each new connection what to do (go live, refuse, stand
in for the server), gives every proxy pipe its :class:`~.pipes.Tap`, and is
finished at teardown. Live mode needs none of it: every connection goes
through and nothing is written.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable

import attrs

from ..core.addressing import Endpoint
from ..core.events import HostInfo, Outcome
from .pipes import Pipe, Tap


class Session:
    """Live mode: every connection goes through, nothing is written."""

    mode = "live"
    #: Whether the router hands this session every whole UDP datagram (see :meth:`on_datagram`).
    udp_tap = False

    def __init__(self, clock_origin: float):
        self.t0 = clock_origin
        self.hosts: list[HostInfo] = []
        #: Whether nothing was ever run in the host with this address (the
        #: supervisor sets it): replay then answers for its UDP servers.
        self.host_is_empty: Callable[[str], bool] = lambda address: False
        #: Whether a UDP socket is bound to the endpoint's port in the host owning its
        #: address (the supervisor sets it): replay waits for a starting server with it.
        self.udp_bound: Callable[[Endpoint], bool] = lambda endpoint: False
        #: Writes a whole IPv4 packet to the host it is addressed to (the supervisor sets it).
        self.send_packet: Callable[[bytes], None] = lambda packet: None
        #: The faults' seed and the faults applied so far, one line each (the supervisor sets it).
        self.fault_state: Callable[[], tuple[int | None, tuple[str, ...]]] = lambda: (None, ())

    def t(self, now: float | None = None) -> float:
        return round((time.monotonic() if now is None else now) - self.t0, 6)

    def note_host(self, address: str, name: str, address6: str = "") -> None:
        self.hosts.append(HostInfo(address, name, "", address6))

    def note_command(self, index: int, argv: list[str]) -> None:
        info = self.hosts[index]
        if not info.command:
            # Quoted as a shell would, so the command shown can be run as it is.
            command = argv[2] if argv[:2] == ["/bin/sh", "-c"] and len(argv) > 2 else shlex.join(argv)
            self.hosts[index] = attrs.evolve(info, command=command)

    def on_syn(self, client: Endpoint, server: Endpoint) -> Outcome:
        """The answer a new connection's SYN gets: ESTABLISHED lets it through to the server,
        any other outcome is given to the client as it was recorded."""
        return Outcome.ESTABLISHED

    def tap_for(self, pipe: Pipe, server_live: bool) -> Tap:
        return Tap()

    def expects_tls(self, client: Endpoint, server: Endpoint) -> bool:
        """Whether a connection may start TLS worth intercepting (replay: only where it was recorded so)."""
        return True

    def recorded_alpn(self, client: Endpoint, server: Endpoint) -> str | None:
        """The application protocol recorded inside TLS between these two, for a stand-in to offer."""
        return None

    def stand_in(self, pipe: Pipe) -> bool:
        return False

    def connect_failed(self, client: Endpoint, server: Endpoint, outcome: Outcome) -> None:
        """A connection let through failed to reach its server, with ``outcome``."""

    def note_listening(self, server: Endpoint, delay: float) -> None:
        """A live ``server`` accepted, ``delay`` seconds after its host's first process."""

    def stand_in_deadline(self, server: Endpoint, host_since: float, now: float) -> float:
        """Until when a refused connection to ``server`` in a busy host is retried."""
        return now

    def on_datagram(self, packet: memoryview, now: float) -> bool:
        """A whole IPv4/UDP ``packet`` between hosts, or an ICMP unreachable about
        one: True delivers it as it is, False drops it (the session may have
        sent others in its place with :attr:`send_packet`)."""
        return True

    def finish(self, action: object) -> dict:
        return {}
