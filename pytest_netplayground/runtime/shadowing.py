"""The supervisor's shadows: which connections are mirrored, and what each shadow found so far.

:class:`ShadowBox` answers the shadow control requests and wraps the tap of
every new connection to a shadowed primary (with a live server: a connection
the cassette stands in for on replay has no primary answer to compare) in a
:class:`~.shadow_tap.ShadowTap`. The cassette never hears of a shadow: the
candidate's connection is no pipe of the proxy.
"""

from __future__ import annotations

import collections
import time
from typing import Callable

import attrs

from ..core.addressing import AddressPlan
from ..core.shadow import ShadowSpec
from ..core.shadow_report import ShadowConnection, ShadowReport
from ..errors import ConfigError
from . import shadow_control as requests
from .pipes import Tap
from .shadow_tap import Mirror, ShadowTap

_READ_SIZE = 64 * 1024


@attrs.define(eq=False)
class Shadowing:
    """One shadow: its spec, whether it mirrors new connections, the verdicts and the mirrors in flight."""

    ident: int
    spec: ShadowSpec
    running: bool = True
    verdicts: list[ShadowConnection] = attrs.field(factory=list)
    mirrors: set[Mirror] = attrs.field(factory=set)
    count: int = 0
    ordinals: collections.Counter = attrs.field(factory=collections.Counter)

    def report(self) -> ShadowReport:
        settling = sum(1 for mirror in self.mirrors if mirror.primary_over)
        return ShadowReport(
            self.spec.primary,
            self.spec.candidate,
            sorted(self.verdicts, key=lambda verdict: verdict.conn),
            len(self.mirrors),
            stopped=not self.running,
            settling=settling,
        )

    def mirror(self, loop, pipe, alias: str, buf: bytearray) -> Mirror:
        self.count += 1
        self.ordinals[pipe.client.host] += 1
        mirror = Mirror(self, loop, pipe.client, alias, self.count, self.ordinals[pipe.client.host], buf)
        self.mirrors.add(mirror)
        return mirror

    def finished(self, mirror: Mirror, verdict: ShadowConnection) -> None:
        self.mirrors.discard(mirror)
        self.verdicts.append(verdict)

    def never_started(self, mirror: Mirror) -> None:
        """The client never completed its handshake: there was nothing to mirror."""
        mirror.done = True
        self.mirrors.discard(mirror)

    def end_in_flight(self) -> None:
        """Hand in the verdicts of the mirrors in flight, with what they have so far."""
        for mirror in sorted(self.mirrors, key=lambda m: m.conn):
            if mirror.primary_over:
                mirror.finish()
            else:
                mirror.fail("the shadow was stopped before the connection ended")


@attrs.define(eq=False)
class ShadowBox:
    """Every shadow of a sandbox; see the module docstring."""

    loop: object
    plan: AddressPlan
    shadows: dict[int, Shadowing] = attrs.field(factory=dict)
    read_buffer: bytearray = attrs.field(factory=lambda: bytearray(_READ_SIZE))

    def handlers(self) -> dict[type, Callable]:
        return {
            requests.StartShadow: self._start,
            requests.ShadowState: lambda request: (self._shadow(request.ident).report(), []),
            requests.StopShadow: self._stop,
        }

    def _shadow(self, ident: int) -> Shadowing:
        try:
            return self.shadows[ident]
        except KeyError:
            raise ConfigError(f"no shadow number {ident} in this sandbox") from None

    def _start(self, request: requests.StartShadow) -> tuple[object, list[int]]:
        ident = len(self.shadows) + 1
        self.shadows[ident] = Shadowing(ident, request.spec)
        return ident, []

    def _stop(self, request: requests.StopShadow) -> tuple[object, list[int]]:
        shadow = self._shadow(request.ident)
        shadow.running = False
        if request.abort:
            shadow.end_in_flight()
        return shadow.report(), []

    def wrap(self, tap: Tap, pipe) -> Tap:
        """``tap``, mirrored to the candidate when ``pipe`` goes to a shadowed primary that is live."""
        if not self.shadows or pipe.server_leg is None:
            return tap
        for shadow in self.shadows.values():
            if shadow.running and shadow.spec.primary == pipe.server:
                mirror = shadow.mirror(self.loop, pipe, self.plan.alias(pipe.client.host), self.read_buffer)
                tap = ShadowTap(tap, mirror)
        return tap

    def in_flight(self) -> int:
        return sum(len(shadow.mirrors) for shadow in self.shadows.values())

    def finish(self, limit: float) -> dict:
        """The sandbox is closing: give the mirrors in flight up to ``limit`` seconds to end,
        end the rest, and return every shadow's report (``{"shadows": {ident: report}}``)."""
        deadline = time.monotonic() + limit
        while self.in_flight() and time.monotonic() < deadline:
            self.loop.run_once(min(0.05, max(0.0, deadline - time.monotonic())))
        for shadow in self.shadows.values():
            shadow.running = False
            shadow.end_in_flight()
        return {"shadows": {ident: shadow.report() for ident, shadow in self.shadows.items()}} if self.shadows else {}
