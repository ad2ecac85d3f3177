"""Replaying one recorded connection against a live one, without doing any I/O.

On replay the proxy reads and drops what each live side sends and writes the
recorded bytes of the other side instead. :class:`ConnectionReplay` decides
*when* each recorded step may be written and notes where the live bytes part
from the recorded ones; the I/O shell around it owns the sockets.

Time: ``now`` is a reading of whatever monotonic clock the shell uses (for
example ``time.monotonic()``), in seconds; ``start`` is that clock's reading
when the live connection opened. Recorded times are only used as differences
from the recorded opening (``step.t - opened.t``), so the cassette's clock and
the shell's never need to agree.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator

import attrs

from . import defaults
from .comparison import Comparator, DirectionCheck, close_iterator
from .divergence import Divergence, MissingReset, Stall, UnexpectedReset
from .events import Closed, ConnectionOpened, Data, Direction, Event, HalfClosed, Reset
from .exchange import Match, match_mode
from .noise import IgnoreRule, Noise, check_hosts, ignore_rules
from .stretches import Needs, Stretches
from .validation import named, one_of, positive_number

__all__ = [
    "Abort",
    "Action",
    "ConnectionReplay",
    "Finished",
    "Pacing",
    "pacing",
    "ReplayConfig",
    "Send",
    "ShutWrite",
]


class Pacing(str, enum.Enum):
    """When a recorded step may be written to the live side."""

    #: At the recorded time since the opening, divided by the speed.
    RECORDED = "recorded"
    #: As fast as the live side takes it, in recorded order.
    FLOOD = "flood"
    #: Once the live side has done what the recorded side had done before the step.
    CAUSAL = "causal"


#: A pacing from its name, in any case (:class:`ConfigError` listing the pacings otherwise).
pacing = one_of(Pacing)


@attrs.frozen
class ReplayConfig:
    """How a replay paces the recorded steps and when it calls a wait a stall.

    ``speed`` divides recorded delays under :attr:`Pacing.RECORDED` (2.0 plays
    twice as fast). Under :attr:`Pacing.CAUSAL` a live side's turn is over
    when it has sent as many bytes as recorded, closed, or sent something and
    then gone quiet for ``settle`` seconds; a turn in which it sends nothing
    for ``stall_timeout`` seconds is a stall: it is reported and the rest of
    the recording is played out, so no replay waits for ever.
    """

    pacing: Pacing = attrs.field(default=defaults.PACE, converter=named("pacing", pacing))
    speed: float = attrs.field(default=defaults.SPEED, converter=named("speed", positive_number))
    stall_timeout: float = attrs.field(
        default=defaults.STALL_TIMEOUT, converter=named("stall_timeout", positive_number)
    )
    settle: float = attrs.field(default=defaults.SETTLE, converter=named("settle", positive_number))
    #: The user's ignore rules; the replayer folds them into ``noise``.
    ignore: tuple[IgnoreRule, ...] = attrs.field(default=(), converter=ignore_rules)
    #: What the comparison of each live turn overlooks, and which senders it checks.
    noise: Noise = attrs.field(factory=Noise)
    #: Names or addresses of the hosts whose sending is compared (empty: all).
    check: tuple[str, ...] = attrs.field(default=(), converter=check_hosts)
    #: What live traffic is paired with: recorded connections, or recorded exchanges (see :mod:`.exchange`).
    match: Match = attrs.field(default=defaults.MATCH, converter=named("match", match_mode))


@attrs.frozen
class Send:
    """Write ``data`` to the live receiver of ``direction``."""

    direction: Direction
    data: bytes


@attrs.frozen
class ShutWrite:
    """Shut down writing toward the live receiver of ``direction``: it reads end of stream."""

    direction: Direction


@attrs.frozen
class Abort:
    """Reset the leg of the live receiver of ``direction``, as the recorded sender did."""

    direction: Direction


@attrs.frozen
class Finished:
    """The script is played out: nothing more will be written on this connection."""


Action = Send | ShutWrite | Abort | Finished

_END = object()  # the script has no more steps
_UNPULLED = object()  # the next step has not been read from the script yet


def _describe(step: Event) -> str:
    if isinstance(step, Data):
        return f"{len(step.data)} bytes {step.direction.value}"
    if isinstance(step, HalfClosed):
        return f"the {step.direction.value} end of stream"
    if isinstance(step, Reset):
        return f"the {step.direction.value} reset"
    return "the end of the connection"


_DIRECTIONS = tuple(Direction)


def _per_direction(value: object) -> object:
    return attrs.Factory(lambda: dict.fromkeys(_DIRECTIONS, value))


@attrs.define(eq=False)
class ConnectionReplay:
    """Plays one recorded connection against one live connection.

    ``steps`` returns a fresh iterator over the recorded events that follow
    ``opened`` (Data, HalfClosed, Reset, Closed); it is called once to drive
    the sending and once per direction to compare live bytes, so the
    recording is streamed rather than held. With ``server_live`` False the
    cassette stands in for the server: client-to-server steps are passed
    over. With ``client_live`` False the cassette plays the client (a drive):
    client-to-server steps are written to the live server, paced by its
    answers, and server-to-client steps only count what it should answer.
    ``start`` is the shell clock's reading when the live connection
    opened; ``ordinal`` (from :meth:`Matcher.ordinal_of`) only labels reports.
    ``checked`` names the live directions whose bytes are compared (the
    others still pace the replay); ``comparator_for(direction, turn)`` gives
    the noise-aware judge of a turn, or None to compare it byte for byte.

    The shell feeds live input with :meth:`live_data`, :meth:`live_eof` and
    :meth:`live_reset`, calls :meth:`poll` after each input and at
    :meth:`next_deadline`, carries out the actions, and calls :meth:`close`
    when the live connection is over; :attr:`divergences` then says what
    differed.
    """

    opened: ConnectionOpened
    steps: Callable[[], Iterator[Event]]
    config: ReplayConfig = attrs.field(factory=ReplayConfig, kw_only=True)
    server_live: bool = attrs.field(default=True, kw_only=True)
    client_live: bool = attrs.field(default=True, kw_only=True)
    start: float = attrs.field(kw_only=True)
    ordinal: int = attrs.field(default=1, kw_only=True)
    checked: frozenset[Direction] = attrs.field(default=frozenset(_DIRECTIONS), kw_only=True, converter=frozenset)
    comparator_for: Callable[[Direction, int], Comparator | None] | None = attrs.field(default=None, kw_only=True)

    _script: Iterator[Event] | None = attrs.field(default=None, init=False)
    _head: object = attrs.field(default=_UNPULLED, init=False)
    _head_since: float = attrs.field(init=False)
    _flushing: bool = attrs.field(default=False, init=False)
    _finished: bool = attrs.field(default=False, init=False)
    _closed: bool = attrs.field(default=False, init=False)
    # The direction of the last Data step, and the turns of each direction begun.
    _last_data: Direction | None = attrs.field(default=None, init=False)
    _turns_begun: dict[Direction, int] = attrs.field(init=False, default=_per_direction(0))
    _stretches: Stretches = attrs.field(init=False, factory=Stretches)
    _live_reset: dict[Direction, bool] = attrs.field(init=False, default=_per_direction(False))
    _checks: dict[Direction, DirectionCheck] = attrs.field(init=False, factory=dict)
    _found: list[Divergence] = attrs.field(init=False, factory=list)

    def __attrs_post_init__(self) -> None:
        self._head_since = self.start
        for direction in self._live_directions():
            judge = None
            if self.comparator_for is not None:
                judge = (lambda d: lambda turn: self.comparator_for(d, turn))(direction)  # type: ignore[misc]
            self._checks[direction] = DirectionCheck(self.opened, self.ordinal, direction, self.steps, judge)

    # -- live input ---------------------------------------------------------

    def live_data(self, direction: Direction, data: bytes, now: float) -> None:
        """The live sender of ``direction`` sent ``data`` (which the shell drops)."""
        direction = Direction(direction)
        if self._closed or not data:
            return
        self._stretches.live_data(direction, len(data), now)
        check = self._checks.get(direction)
        if check is not None:
            check.feed(data)

    def live_eof(self, direction: Direction, now: float) -> None:
        """The live sender of ``direction`` shut down its sending side."""
        direction = Direction(direction)
        if not self._closed:
            self._stretches.live_end(direction, now)

    def live_reset(self, direction: Direction, now: float) -> None:
        """The live sender of ``direction`` reset the connection."""
        direction = Direction(direction)
        if not self._closed:
            self._stretches.live_end(direction, now)
            self._live_reset[direction] = True

    # -- output -------------------------------------------------------------

    def poll(self, now: float, limit: int | None = None) -> list[Action]:
        """The actions due at ``now``, in recorded order; ends a stall if one is due.

        With ``limit``, at most that many actions are returned, so a shell can
        stop pulling recorded bytes while the receiver is not keeping up.
        """
        actions: list[Action] = []
        if self._finished or self._closed:
            return actions
        while True:
            step = self._peek()
            if step is _END or (isinstance(step, Closed) and self._may_go(step, now)):
                self._finished = True
                actions.append(Finished())
                return actions
            if not self._may_go(step, now):
                if self._stalled(step, now):
                    continue
                return actions
            action = self._deliver(step)
            self._head = _UNPULLED
            if action is not None:
                # A passed-over step takes no time, so the step after it has
                # been waiting as long as the passed-over one.
                self._head_since = now
                actions.append(action)
                if limit is not None and len(actions) >= limit:
                    return actions

    def next_deadline(self) -> float | None:
        """When :meth:`poll` must next be called unless live input comes first.

        A time at or before the present means a step is due now; None means
        only live input (or nothing) can move the script on.
        """
        if self._finished or self._closed:
            return None
        step = self._peek()
        if step is _END or self._unconditional(step):
            return self._head_since
        if self.config.pacing is Pacing.RECORDED:
            return self.deadline(step)
        times = [self._head_since]
        for side in self._waits_on(step):
            needs = self._stretches.needs(side)
            if needs is not Needs.NOTHING:
                wait = self.config.settle if needs is Needs.QUIET else self.config.stall_timeout
                times.append(self._quiet_since(side) + min(wait, self.config.stall_timeout))
        return max(times)

    def deadline(self, step: Event) -> float:
        """The shell-clock time at which ``step`` is due under recorded pacing.

        Absolute (from ``start``) rather than relative to the previous step, so
        late polls never push later steps back.
        """
        return self.start + (step.t - self.opened.t) / self.config.speed

    @property
    def finished(self) -> bool:
        return self._finished

    # -- end ----------------------------------------------------------------

    def close(self, now: float) -> None:
        """The live connection is over: note what the live sides left out or added."""
        if self._closed:
            return
        self._closed = True
        for direction, check in self._checks.items():
            check.close()
            if direction in self.checked:
                self._found.extend(check.divergences())
            args = (self.opened.conn, self.opened.key, self.ordinal, direction)
            recorded_reset = check.stream.reset
            # A reset is part of what its sender sends: reported only where that sender is checked.
            if direction in self.checked and self._live_reset[direction] != recorded_reset:
                self._found.append((UnexpectedReset if self._live_reset[direction] else MissingReset)(*args))
            check.stream.close()
        # Nothing more is read: let the script go now (a cassette reader holds
        # the file open until its iterator ends) rather than at collection.
        close_iterator(self._script)

    @property
    def divergences(self) -> tuple[Divergence, ...]:
        """What differed so far, in the order it was found."""
        found = list(self._found)
        if not self._closed:
            for direction, check in self._checks.items():
                if direction in self.checked:
                    found.extend(check.divergences())
        return tuple(found)

    # -- internals ----------------------------------------------------------

    def _live_directions(self) -> tuple[Direction, ...]:
        live = ((Direction.C2S, self.client_live), (Direction.S2C, self.server_live))
        return tuple(direction for direction, sender_live in live if sender_live)

    def _unheard(self, direction: object) -> bool:
        """Whether steps of ``direction`` have no live receiver: they are passed over, not written."""
        if direction is Direction.C2S:
            return not self.server_live
        return direction is Direction.S2C and not self.client_live

    def _peek(self) -> object:
        if self._head is _UNPULLED:
            if self._script is None:
                self._script = self.steps()
            self._head = _END
            for event in self._script:
                if not isinstance(event, ConnectionOpened):
                    self._head = event
                    break
        return self._head

    def _unconditional(self, step: Event) -> bool:
        """Steps that go at once whatever the pacing."""
        if self.config.pacing is Pacing.FLOOD or self._flushing:
            return True
        return self._unheard(getattr(step, "direction", None))

    def _waits_on(self, step: Event) -> tuple[Direction, ...]:
        """The live senders whose turn must be over before ``step`` (causal pacing)."""
        if isinstance(step, Closed):
            return self._live_directions()
        if step.direction is self._stretches.last:  # type: ignore[union-attr]
            return ()  # the recorded sender goes on with its own turn
        side = step.direction.reverse  # type: ignore[union-attr]
        return (side,) if side in self._live_directions() else ()

    def _quiet_since(self, side: Direction) -> float:
        return self._stretches.quiet_since(side, self._head_since)

    def _turn_over(self, side: Direction, now: float) -> bool:
        needs = self._stretches.needs(side)
        return needs is Needs.NOTHING or (
            needs is Needs.QUIET and now - self._quiet_since(side) >= self.config.settle
        )

    def _may_go(self, step: Event, now: float) -> bool:
        if self._unconditional(step):
            return True
        if self.config.pacing is Pacing.RECORDED:
            return now >= self.deadline(step)
        return all(self._turn_over(side, now) for side in self._waits_on(step))

    def _stalled(self, step: Event, now: float) -> bool:
        """Past the stall timeout, report the wait and play the rest out; True if so."""
        if self.config.pacing is not Pacing.CAUSAL:
            return False
        for side in self._waits_on(step):
            waited = now - self._quiet_since(side)
            if self._turn_over(side, now) or waited < self.config.stall_timeout:
                continue
            waiting_for = self._stretches.waiting_for(side, _describe(step))
            self._found.append(Stall(self.opened.conn, self.opened.key, self.ordinal, side, waiting_for, waited))
            self._flushing = True
            return True
        return False

    def _answers_live_turns(self) -> bool:
        """Whether each recorded answer follows the live side's turn, so that the
        live bytes after it belong to the next turn. Flood and recorded pacing
        (and a stall played out) run ahead of the live side: there the live
        bytes are compared as one stream."""
        return self.config.pacing is Pacing.CAUSAL and not self._flushing

    def _deliver(self, step: Event) -> Action | None:
        """Account for ``step`` as done by the recorded side; the action writing it, if any."""
        direction = step.direction  # type: ignore[union-attr]
        other = direction.reverse
        self._stretches.played(direction, len(step.data) if isinstance(step, Data) else 0, not isinstance(step, Data))
        skip = self._unheard(direction)
        if isinstance(step, Data):
            if direction is not self._last_data:
                self._last_data = direction
                self._turns_begun[direction] += 1
                check = self._checks.get(other)
                if check is not None and self._answers_live_turns():
                    check.advance(self._turns_begun[other])
            return None if skip else Send(direction, step.data)
        if isinstance(step, Reset):
            return None if skip else Abort(direction)
        return None if skip else ShutWrite(direction)
