"""The caller's handles on a running sandbox's network: links, partitions, live connections.

``sb.link(a, b).set(latency=0.05, loss=0.02)`` changes a link while the
sandbox runs; ``with sb.partition([a], [b]):`` cuts two groups of hosts
apart; ``sb.connections()`` lists the proxied TCP connections, each of
which can be reset. Hosts are given as :class:`Host` objects, names or
addresses; values are validated here, before they reach the supervisor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import attrs

from ..core.addressing import Endpoint
from ..core.fault_spec import EVERY, LinkDirection
from ..core.fault_spec import direction as to_direction
from ..core.fault_table import ANY
from ..core.faults import LinkFaults, link_faults
from ..core.toxics import Toxics, toxic_names, toxics
from ..errors import ConfigError

if TYPE_CHECKING:
    from .sandbox import Sandbox

HostRef = "Host | str | None"


def host_index(sandbox: "Sandbox", host: object) -> int:
    """The index of a host given as a ``Host``, a name or an address; ``None`` or ``"*"``: every other host."""
    if host is None or host == EVERY:
        return ANY
    index = getattr(host, "index", None)
    if isinstance(index, int) and not isinstance(host, str):
        return index
    try:
        return sandbox.host(str(host)).index
    except KeyError:
        known = ", ".join(h.name for h in sandbox.hosts) or "none yet"
        raise ConfigError(f"no host {host!r} in this sandbox (hosts: {known})") from None


@attrs.frozen
class Link:
    """The two directions between hosts ``a`` and ``b`` (``b`` is :data:`ANY`: every other host)."""

    sandbox: "Sandbox" = attrs.field(repr=False)
    a: int
    b: int

    def _pairs(self, direction: object) -> list[tuple[int, int]]:
        way = to_direction(direction)
        pairs = []
        if way is not LinkDirection.B_TO_A:
            pairs.append((self.a, self.b))
        if way is not LinkDirection.A_TO_B:
            pairs.append((self.b, self.a))
        return pairs

    def set(self, direction: str = "both", **faults) -> "Link":
        """Give the link these faults (see :class:`~..core.faults.LinkFaults` for names and units),
        replacing those it had in the directions given."""
        names = toxic_names()
        poisons = toxics({key: value for key, value in faults.items() if key in names})
        value = link_faults({key: value for key, value in faults.items() if key not in names})
        for src, dst in self._pairs(direction):
            self.sandbox._call("set_link", src=src, dst=dst, faults=value)
            self.sandbox._call("set_link_toxics", src=src, dst=dst, toxics=poisons)
        return self

    def clear(self, direction: str = "both") -> "Link":
        """A perfect wire again, in the directions given."""
        for src, dst in self._pairs(direction):
            self.sandbox._call("set_link", src=src, dst=dst, faults=LinkFaults())
            self.sandbox._call("set_link_toxics", src=src, dst=dst, toxics=Toxics())
        return self


@attrs.define(eq=False)
class Partition:
    """Two groups of hosts that cannot reach each other until :meth:`heal` (or the ``with`` block ends)."""

    sandbox: "Sandbox" = attrs.field(repr=False)
    ident: int
    healed: bool = False

    def heal(self) -> None:
        if not self.healed:
            self.healed = True
            if not self.sandbox.closed:
                self.sandbox._call("heal", ident=self.ident)

    def __enter__(self) -> "Partition":
        return self

    def __exit__(self, *exc) -> None:
        self.heal()


@attrs.frozen
class Connection:
    """A live TCP connection through the proxy, as its client and server see it."""

    sandbox: "Sandbox" = attrs.field(repr=False, eq=False)
    key: bytes = attrs.field(repr=False)
    client: Endpoint
    server: Endpoint

    def reset(self) -> bool:
        """Reset it: the client and the server both see a reset (ECONNRESET).
        False when it had already ended."""
        return bool(self.sandbox._call("reset_connection", key=self.key))

    def set(self, direction: str = "both", **values) -> bool:
        """Give it these toxics (``stall``, ``limit_data``, ``slicer``), replacing those it had
        in the directions given (``"c2s"``, ``"s2c"`` or ``"both"``). False when it had ended."""
        value = toxics(values)
        return bool(self.sandbox._call("set_toxics", key=self.key, directions=_ways(direction), toxics=value))

    def stall(self, direction: str = "both") -> bool:
        """Hold the bytes each side sends (the connection stays open) until :meth:`clear`."""
        return self.set(direction, stall=True)

    def limit_data(self, count: int, direction: str = "both") -> bool:
        """Let ``count`` more bytes through (in each direction given), then reset both sides."""
        return self.set(direction, limit_data=count)

    def slice(self, size: int, delay: object = 0.0, variation: int = 0, direction: str = "both") -> bool:
        """Write what each side sends in pieces of ``size`` bytes, ``delay`` seconds apart."""
        return self.set(direction, slicer=(size, delay, variation))

    def half_close(self, direction: str = "s2c") -> bool:
        """End one direction (``"s2c"``: the client reads end of file, the server's later bytes
        are dropped; ``"c2s"``: the server reads end of file)."""
        (way,) = _ways(direction, both=False)
        return bool(self.sandbox._call("half_close", key=self.key, direction=way))

    def clear(self, direction: str = "both") -> bool:
        """No toxics any more; held bytes go on."""
        return self.set(direction)


def _ways(direction: object, both: bool = True) -> tuple[str, ...]:
    if direction == "both" and both:
        return ("c2s", "s2c")
    if direction in ("c2s", "s2c"):
        return (direction,)
    allowed = "'c2s', 's2c' or 'both'" if both else "'c2s' or 's2c'"
    raise ConfigError(f"direction: expected {allowed}, got {direction!r}")


def partition(sandbox: "Sandbox", one: Iterable, other: Iterable) -> Partition:
    groups = []
    for group in (one, other):
        if isinstance(group, str) or not isinstance(group, Iterable):
            group = [group]
        groups.append(tuple(host_index(sandbox, host) for host in group))
    if ANY in groups[0] or ANY in groups[1]:
        raise ConfigError("a partition names its hosts: '*' is not allowed")
    ident = sandbox._call("partition", one=groups[0], other=groups[1])
    return Partition(sandbox, ident)


def connections(sandbox: "Sandbox", hosts: Iterable = ()) -> list[Connection]:
    if isinstance(hosts, str) or not isinstance(hosts, Iterable):
        hosts = [hosts]
    indices = tuple(host_index(sandbox, host) for host in hosts)
    found = sandbox._call("connections", hosts=indices)
    return [Connection(sandbox, c["key"], Endpoint(*c["client"]), Endpoint(*c["server"])) for c in found]
