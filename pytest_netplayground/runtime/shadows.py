"""The caller's handle on a shadow: ``sb.shadow("10.0.0.1:80", to="10.0.0.3:80")``.

Every connection made to the primary from then on is mirrored to the
candidate (see :mod:`.shadow_tap`); :attr:`Shadow.report` tells how the
candidate's answers compared so far, :meth:`Shadow.stop` ends the mirroring
and waits (a bounded time) for the connections in flight. Hosts are given as
``Host`` objects, names or addresses; a candidate's port defaults to the
primary's.
"""

from __future__ import annotations

import ipaddress
import time
from typing import TYPE_CHECKING

import attrs

from ..core.addressing import Endpoint
from ..core.shadow import ShadowSpec, endpoint_parts
from ..core.shadow_report import ShadowReport
from ..errors import ConfigError, NetplayError, SandboxClosed

if TYPE_CHECKING:
    from .sandbox import Sandbox

# How often stop() asks whether the connections in flight have ended.
_POLL = 0.02


def _address(sandbox: "Sandbox", host: object) -> str:
    address = getattr(host, "address", None)
    if isinstance(address, str) and not isinstance(host, str):
        return address
    text = str(host)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    try:
        return sandbox.host(text).address
    except KeyError:
        known = ", ".join(h.name for h in sandbox.hosts) or "none yet"
        raise ConfigError(f"no host {host!r} in this sandbox (hosts: {known})") from None


def endpoint(sandbox: "Sandbox", value: object, default_port: int | None = None) -> Endpoint:
    """``value`` (``"HOST:PORT"``, ``(host, port)``, an ``Endpoint`` or a host alone) as an endpoint."""
    if isinstance(value, Endpoint):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        host, port = value
    elif isinstance(value, str):
        host, port = endpoint_parts(value)
    else:
        host, port = value, None
    port = default_port if port is None else port
    if port is None:
        raise ConfigError(f"a shadow needs the primary's port: give 'HOST:PORT', got {value!r}")
    return Endpoint(_address(sandbox, host), int(port))


@attrs.define(eq=False)
class Shadow:
    """A running shadow; see the module docstring."""

    sandbox: "Sandbox" = attrs.field(repr=False)
    ident: int
    spec: ShadowSpec
    _final: ShadowReport | None = attrs.field(default=None, repr=False)

    def _ask(self, op: str, **args) -> ShadowReport:
        channel = self.sandbox._channel
        if channel is None or channel.gone:
            raise SandboxClosed("the sandbox is not running")
        value, _ = channel.call(op, ident=self.ident, **args)
        return value

    @property
    def report(self) -> ShadowReport:
        """What the shadow found so far (once stopped or closed: in the end)."""
        if self._final is not None:
            return self._final
        channel = self.sandbox._channel
        if channel is not None and not channel.gone:
            try:
                return self._ask("shadow_state")
            except SandboxClosed:
                pass
        info = channel.closed_info if channel is not None and isinstance(channel.closed_info, dict) else {}
        final = info.get("shadows", {}).get(self.ident)
        if final is None:
            return ShadowReport(self.spec.primary, self.spec.candidate, stopped=True)
        self._final = final
        return final

    def stop(self, wait: float | None = None) -> ShadowReport:
        """Mirror no new connection; give those in flight up to ``wait`` seconds (default: the
        shadow's patience and a second) to end; end the rest; return the report."""
        if self._final is not None:
            return self._final
        try:
            report = self._ask("stop_shadow")
            deadline = time.monotonic() + (self.spec.patience + 1.0 if wait is None else wait)
            while report.in_flight and time.monotonic() < deadline:
                time.sleep(_POLL)
                report = self._ask("shadow_state")
            self._final = self._ask("stop_shadow", abort=True)
        except SandboxClosed:
            return self.report
        return self._final

    def settle(self, wait: float | None = None) -> None:
        """Mirror no new connection, and give those whose primary connection has ended up to
        ``wait`` seconds (default: the patience and a second) to end; the others end with the
        sandbox, which ends their primaries."""
        if self._final is not None:
            return
        try:
            report = self._ask("stop_shadow")
            deadline = time.monotonic() + (self.spec.patience + 1.0 if wait is None else wait)
            while report.settling and time.monotonic() < deadline:
                time.sleep(_POLL)
                report = self._ask("shadow_state")
        except SandboxClosed:
            pass

    def __enter__(self) -> "Shadow":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start(sandbox: "Sandbox", primary: object, to: object, **options) -> Shadow:
    """Start mirroring ``primary`` to ``to`` (see :class:`~..core.shadow.ShadowSpec` for ``options``)."""
    first = endpoint(sandbox, primary)
    spec = ShadowSpec(first, endpoint(sandbox, to, first.port), **options)
    ident = sandbox._call("start_shadow", spec=spec)
    shadow = Shadow(sandbox, ident, spec)
    sandbox.shadows.append(shadow)
    return shadow


def settle_all(sandbox: "Sandbox", wait: float | None = None) -> None:
    """Before a sandbox closes or its servers are stopped: let every shadow's candidates finish
    answering for connections that have ended (a bounded time)."""
    for shadow in sandbox.shadows:
        try:
            shadow.settle(wait)
        except NetplayError:
            pass  # the sandbox closes anyway; the report then holds what the supervisor found
