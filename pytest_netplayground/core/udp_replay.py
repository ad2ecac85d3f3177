"""Replaying recorded UDP flows against live ones, decided without sockets.

Recorded flows are grouped by (client host, server address, server port): the
client's port does not count. A live flow is bound to a recorded one at its
first datagram (the first unused recording whose first request has the same
bytes, else the first unused one). From then on a :class:`UdpFlowReplay`
plays that recording: what each live side sends is compared with what its
recorded counterpart sent, datagram by datagram in order, and dropped; the
recorded datagrams (and refusals) of the other side go to it instead.

With the server absent only the server's side is played: its replies, and the
refusals of client datagrams its host answered with ICMP port unreachable, go
to the client. With the server running, the recorded client datagrams go to it
in place of the live client's (but for those its host refused when recording:
the server never got them), and the recorded replies to the client in place of
the live server's.

Pacing, as for TCP connections: ``causal`` sends a recorded datagram once its
receiver has sent as many datagrams as its recorded counterpart had before it
(a reply follows its request); ``recorded`` at the recorded offset from the
flow's first datagram, divided by the speed; ``flood`` all at once. A wait on
the live client has no end of its own (a client that asks no more gets no
more answers, and what it left out is reported); a wait on the live server
ends after ``stall_timeout`` seconds of its silence, and from then on the
recorded client datagrams go without waiting for its replies.

A running server may not have bound its port yet when the first recorded
request reaches it (it starts slower than it did when recording): its host
then answers with ICMP port unreachable, which the recording did not have. The
replay then waits, for at most ``stall_timeout``, for the shell to see the
server bound (:attr:`UdpFlowReplay.awaiting_bind`), and sends the request
again once (:meth:`UdpFlowReplay.bound`), as a client would find it listening a
moment later. Waiting for the bind, not resending blindly, never gives the
server a request twice (and the kernel's ICMP rate limit cannot hide a refusal
that the waiting depends on).
"""

from __future__ import annotations

import attrs

from .addressing import Endpoint
from .divergence import UdpDiverged
from .events import Datagram, Direction, Refusal, UdpFlow
from .prefix import common_prefix
from .replay import Pacing, ReplayConfig

__all__ = ["Refuse", "SendDatagram", "UdpFlowReplay", "UdpReplays"]

C2S, S2C = Direction.C2S, Direction.S2C

Step = Datagram | Refusal


@attrs.frozen
class SendDatagram:
    """Send ``data`` to the live receiver of ``direction``, from its live peer's address and port."""

    direction: Direction
    data: bytes


@attrs.frozen
class Refuse:
    """Answer the live sender of ``direction`` with ICMP port unreachable, as its peer's host did."""

    direction: Direction


def _toward(step: Step) -> Direction:
    """Which way a recorded step goes: a refusal goes back to the refused datagram's sender."""
    return step.direction if isinstance(step, Datagram) else step.direction.reverse


def _per_direction(value: object):
    return attrs.Factory(lambda: {C2S: value, S2C: value})


@attrs.define(eq=False)
class UdpFlowReplay:
    """One recorded flow played against one live flow; see the module docstring.

    The shell feeds what the live sides send to :meth:`live_datagram`, calls
    :meth:`poll` after each and at :meth:`next_deadline`, carries out the
    actions, and calls :meth:`finish` at the end.
    """

    flow: UdpFlow
    steps: list[Step]
    client: Endpoint
    server: Endpoint
    server_live: bool
    start: float
    config: ReplayConfig = attrs.field(factory=ReplayConfig)
    position: int = 0
    played: dict[Direction, int] = _per_direction(0)
    live: dict[Direction, int] = _per_direction(0)
    live_at: dict[Direction, float] = _per_direction(float("-inf"))
    head_since: float = 0.0
    server_stalled: bool = False
    # The last recorded client datagram sent to the running server, since when its
    # host refused it, and whether the replay waits for the server to bind: see the
    # module docstring.
    last_request: bytes | None = None
    refused_since: float | None = None
    awaiting_bind: bool = False
    recorded: dict[Direction, list[bytes]] = attrs.field(init=False)
    # Positions of the recorded client datagrams that the server's host refused:
    # the server never got them, so a running one does not get them on replay.
    refused: set[int] = attrs.field(init=False)
    found: list[UdpDiverged] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        self.head_since = self.start
        self.recorded = {C2S: [], S2C: []}
        self.refused = set()
        last_request = None
        for position, step in enumerate(self.steps):
            if isinstance(step, Datagram):
                self.recorded[step.direction].append(step.data)
                if step.direction is C2S:
                    last_request = position
            elif step.direction is C2S and last_request is not None:
                self.refused.add(last_request)

    def _diverged(self, what: str, direction: Direction, index: int, *more, actual: bytes = b"") -> None:
        found = UdpDiverged(self.client.host, self.server, self.flow.flow, what, index, *more)
        self.found.append(attrs.evolve(found, direction=direction, actual=actual or found.actual))

    def live_datagram(self, direction: Direction, data: bytes, now: float) -> None:
        """The live sender of ``direction`` sent ``data`` (which the shell drops)."""
        index = self.live[direction]
        self.live[direction] = index + 1
        self.live_at[direction] = now
        if direction is S2C:
            self.refused_since, self.awaiting_bind = None, False  # it listens
        recorded = self.recorded[direction]
        if index >= len(recorded):
            self._diverged("extra", direction, index, actual=data)
        elif recorded[index] != data:
            expected = recorded[index]
            self._diverged("differs", direction, index, common_prefix(expected, data), expected, data)

    def live_refused(self, direction: Direction, now: float) -> None:
        """The live receiver's host refused the datagram sent toward it in ``direction``."""
        if direction is not C2S or not self.server_live or self.last_request is None or self.live[S2C]:
            return  # only a server still starting (it never answered yet) is waited for
        if self.refused_since is None:
            self.refused_since = now
        self.awaiting_bind = not self.bind_given_up(now)

    def bind_given_up(self, now: float) -> bool:
        """Whether a wait for the server to bind has lasted ``stall_timeout`` (then it ends)."""
        if self.refused_since is None or now - self.refused_since < self.config.stall_timeout:
            return False
        self.awaiting_bind = False
        return True

    def bound(self, now: float) -> list[SendDatagram]:
        """The server now has its port bound: the refused request again, once."""
        if not self.awaiting_bind or self.last_request is None:
            return []
        self.awaiting_bind = False
        self.refused_since = None
        return [SendDatagram(C2S, self.last_request)]

    def _plays(self, position: int) -> bool:
        """Whether the step at ``position`` is sent: toward the client always, toward the
        server when it runs and its host did not refuse it when recording."""
        step = self.steps[position]
        if _toward(step) is S2C:
            return True
        return self.server_live and position not in self.refused

    def _gate(self, step: Step) -> Direction | None:
        """The live sender whose datagrams ``step`` (the next one) waits for under causal pacing, if any."""
        if not self._plays(self.position) or self.config.pacing is not Pacing.CAUSAL:
            return None
        side = _toward(step).reverse
        if side is S2C and self.server_stalled:
            return None
        return side if self.live[side] < self.played[side] else None

    def deadline(self, step: Step) -> float:
        """When ``step`` is due under recorded pacing, on the shell's clock."""
        return self.start + (step.t - self.flow.t) / self.config.speed

    def _may_go(self, step: Step, now: float) -> bool:
        if not self._plays(self.position) or self.config.pacing is Pacing.FLOOD:
            return True
        if self.config.pacing is Pacing.RECORDED:
            return now >= self.deadline(step)
        return self._gate(step) is None

    def _stall_deadline(self, side: Direction) -> float | None:
        """Until when a wait on ``side`` lasts: only the live server's silence ends one."""
        if side is not S2C:
            return None
        return max(self.head_since, self.live_at[S2C]) + self.config.stall_timeout

    def poll(self, now: float) -> list[SendDatagram | Refuse]:
        """The actions due at ``now``, in recorded order."""
        actions: list[SendDatagram | Refuse] = []
        while self.position < len(self.steps):
            step = self.steps[self.position]
            if not self._may_go(step, now):
                side = self._gate(step)
                until = None if side is None else self._stall_deadline(side)
                if until is not None and now >= until:
                    self.server_stalled = True
                    continue
                break
            plays = self._plays(self.position)
            self.position += 1
            if isinstance(step, Datagram):
                self.played[step.direction] += 1
            if plays:
                self.head_since = now
                if isinstance(step, Datagram):
                    actions.append(SendDatagram(step.direction, step.data))
                    if step.direction is C2S:
                        self.last_request = step.data
                else:
                    actions.append(Refuse(step.direction))
        return actions

    def next_deadline(self) -> float | None:
        """When :meth:`poll` must next be called unless a live datagram comes first."""
        if self.position >= len(self.steps):
            return None
        step = self.steps[self.position]
        if self.config.pacing is Pacing.RECORDED and self._plays(self.position):
            return self.deadline(step)
        side = self._gate(step)
        if side is None:
            return self.head_since
        return self._stall_deadline(side)

    def finish(self) -> list[UdpDiverged]:
        """What differed, with the recorded datagrams of each live side it never sent."""
        for direction in (C2S, S2C) if self.server_live else (C2S,):
            left = len(self.recorded[direction]) - self.live[direction]
            if left > 0:
                self._diverged("missing", direction, left)
        return list(self.found)


@attrs.define
class _Recorded:
    flow: UdpFlow
    steps: list[Step] = attrs.field(factory=list)
    used: bool = False

    @property
    def first_request(self) -> bytes | None:
        return next((s.data for s in self.steps if isinstance(s, Datagram) and s.direction is C2S), None)


@attrs.define
class UdpReplays:
    """The recorded flows of a cassette and the live flows bound to them."""

    config: ReplayConfig = attrs.field(factory=ReplayConfig)
    recorded: dict[tuple[str, Endpoint], list[_Recorded]] = attrs.field(factory=dict)
    bound: dict[tuple[Endpoint, Endpoint], UdpFlowReplay] = attrs.field(factory=dict)

    @classmethod
    def of(cls, flows: dict[int, UdpFlow], steps: list[Step], config: ReplayConfig | None = None) -> "UdpReplays":
        """From a cassette's flows and their datagrams and refusals, in recorded order."""
        by_number = {number: _Recorded(flow) for number, flow in flows.items()}
        for step in steps:
            if step.flow in by_number:
                by_number[step.flow].steps.append(step)
        replays = cls(config or ReplayConfig())
        for recorded in by_number.values():
            key = (recorded.flow.client.host, recorded.flow.server)
            replays.recorded.setdefault(key, []).append(recorded)
        return replays

    def find(self, source: Endpoint, destination: Endpoint) -> tuple[UdpFlowReplay, Direction] | None:
        """The replay a live datagram from ``source`` to ``destination`` belongs to, and its direction."""
        replay = self.bound.get((source, destination))
        if replay is not None:
            return replay, C2S
        replay = self.bound.get((destination, source))
        return None if replay is None else (replay, S2C)

    def bind(
        self, client: Endpoint, server: Endpoint, first: bytes, server_live: bool, now: float
    ) -> UdpFlowReplay | None:
        """The replay of a new live flow whose first datagram is ``first``, or None if nothing recorded is left."""
        unused = [r for r in self.recorded.get((client.host, server), ()) if not r.used]
        if not unused:
            return None
        chosen = next((r for r in unused if r.first_request == first), unused[0])
        chosen.used = True
        replay = UdpFlowReplay(chosen.flow, chosen.steps, client, server, server_live, now, self.config)
        self.bound[(client, server)] = replay
        return replay

    def finish(self) -> list[UdpDiverged]:
        """What went otherwise in every bound flow, and the recorded flows never used."""
        found: list[UdpDiverged] = []
        for replay in self.bound.values():
            found.extend(replay.finish())
        for (client_host, server), recordings in self.recorded.items():
            found.extend(UdpDiverged(client_host, server, r.flow.flow, "unused") for r in recordings if not r.used)
        return found
