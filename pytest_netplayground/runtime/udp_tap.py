"""The UDP half of a replay session: live datagrams in, recorded ones out.

Each datagram the router hands over is given to the flow replay it belongs to
(:mod:`..core.udp_replay`) and dropped; the recorded datagrams and refusals
that replay lets go are crafted as packets from the live peer's address and
port and sent to the host they are for. A flow nothing recorded goes live and
is reported as not replayed; an ICMP error about a replayed flow's datagram is
dropped, since the recording says whether that datagram was refused (a
running server that refuses a recorded request, not bound yet, gets it again
a moment later: see :mod:`..core.udp_replay`).
"""

from __future__ import annotations

from collections.abc import Callable

from ..core.addressing import Endpoint, decode_key, pack_ip, reverse_key
from ..core.divergence import UdpDiverged, UdpNotReplayed
from ..core.events import Direction
from ..core.packets6 import port_unreachable, udp_packet
from ..core.replay import ReplayConfig
from ..core.udp import UdpFlows, is_udp, refused_key, udp_key_and_payload
from ..core.udp_replay import SendDatagram, UdpFlowReplay, UdpReplays

__all__ = ["UdpReplayer"]

#: How often a replay waiting for a running server to bind its port looks again.
BIND_POLL = 0.02


def _packet(source: Endpoint, destination: Endpoint, data: bytes) -> bytes:
    return udp_packet(pack_ip(source.host), pack_ip(destination.host), source.port, destination.port, data)


class UdpReplayer:
    """Mixed into the replay session, which provides ``loop``, ``t``, ``host_is_empty`` and ``send_packet``."""

    loop: object
    t: Callable[..., float]
    host_is_empty: Callable[[str], bool]
    send_packet: Callable[[bytes], None]
    #: Whether a UDP socket in the host owning the endpoint's address is bound to its port.
    udp_bound: Callable[[Endpoint], bool]

    def start_udp(self, notes, config: ReplayConfig) -> None:
        """Ready the recorded flows of a cassette's ``notes`` for replay."""
        self.udp_replays = UdpReplays.of(notes.udp_flows, notes.datagrams, config)
        self.udp = UdpFlows()  # the live flows nothing recorded: reported as not replayed
        self.udp_timers: dict[tuple[Endpoint, Endpoint], float] = {}

    def on_datagram(self, packet: memoryview, now: float) -> bool:
        """Whether to deliver ``packet`` as it is (True), or drop it as the replay took it."""
        if not is_udp(packet):
            key = refused_key(packet)
            found = None if key is None else self.udp_replays.find(*decode_key(key))
            if found is None:
                return True
            # A refusal of a datagram the replay sent: the recording says whether there was one.
            replay, direction = found
            waiting = replay.awaiting_bind
            replay.live_refused(direction, now)
            if replay.awaiting_bind and not waiting:
                self._watch_bind(replay)
            return False
        key, payload = udp_key_and_payload(packet)
        source, destination = decode_key(key)
        found = self.udp_replays.find(source, destination)
        if found is None:
            replay = None
            if key not in self.udp.keys and reverse_key(key) not in self.udp.keys:
                server_live = not self.host_is_empty(destination.host)
                replay = self.udp_replays.bind(source, destination, payload, server_live, now)
            if replay is None:
                self.udp.see_parsed(key, payload, self.t(now))
                return True
            found = (replay, Direction.C2S)
        replay, direction = found
        replay.live_datagram(direction, payload, now)
        self._play(replay, now)
        return False

    def _play(self, replay: UdpFlowReplay, now: float) -> None:
        """Send what ``replay`` lets go at ``now``; come back at its next deadline."""
        client, server = replay.client, replay.server
        for action in replay.poll(now):
            to_server = action.direction is Direction.C2S
            if isinstance(action, SendDatagram):
                source, destination = (client, server) if to_server else (server, client)
                self.send_packet(_packet(source, destination, action.data))
            else:
                # The refused datagram's sender gets ICMP port unreachable quoting it.
                sender, receiver = (client, server) if to_server else (server, client)
                self.send_packet(port_unreachable(_packet(sender, receiver, b"")))
        deadline = replay.next_deadline()
        key = (client, server)
        if deadline is not None and self.udp_timers.get(key, float("inf")) > deadline:
            self.udp_timers[key] = deadline
            self.loop.call_at(deadline, lambda r: self._timer(r, deadline), owner=replay)

    def _watch_bind(self, replay: UdpFlowReplay) -> None:
        """Look every ``BIND_POLL`` seconds whether the replay's server has bound its port yet."""
        now = self.loop.now()
        if not replay.awaiting_bind or replay.bind_given_up(now):
            return
        if self.udp_bound(replay.server):
            for action in replay.bound(now):
                self.send_packet(_packet(replay.client, replay.server, action.data))
            return
        self.loop.call_at(now + BIND_POLL, self._watch_bind, owner=replay)

    def _timer(self, replay: UdpFlowReplay, deadline: float) -> None:
        key = (replay.client, replay.server)
        if self.udp_timers.get(key) == deadline:
            del self.udp_timers[key]
        self._play(replay, self.loop.now())

    def finish_udp(self) -> list[UdpNotReplayed | UdpDiverged]:
        """The live flows nothing recorded, and what went otherwise in the replayed ones."""
        found: list[UdpNotReplayed | UdpDiverged] = [
            UdpNotReplayed(flow.client.host, flow.server, count)
            for flow, count in zip(self.udp.flows, self.udp.counts)
        ]
        return found + self.udp_replays.finish()
