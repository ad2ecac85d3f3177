"""The faults of a whole sandbox: a shaper per faulty link direction, and partitions.

Hosts are their indices; :data:`ANY` stands for every other host, so one host
can be made slow or lossy against all the others at once. A packet is judged
once, as it leaves its host, by (source host, destination host): a round trip
between two hosts therefore crosses the link once each way.

Every link direction draws from its own ``random.Random``, seeded from the
sandbox's seed and the two hosts, so what one link drops does not depend on
the traffic of another, and a rerun with the same seed repeats the drops.
"""

from __future__ import annotations

import random
from collections import Counter

import attrs

from ..errors import ConfigError
from .faults import LinkFaults
from .shaper import Delivery, LinkShaper

__all__ = ["ANY", "PARTITIONED", "FaultTable", "new_seed"]

ANY = -1
PARTITIONED = "fault: partition"


def new_seed() -> int:
    """A seed for a run that was given none (reported, so the run can be repeated)."""
    return random.SystemRandom().randrange(1 << 32)


@attrs.define
class FaultTable:
    """See the module docstring; ``active`` is the one check the router's path makes."""

    seed: int
    links: dict[tuple[int, int], LinkShaper] = attrs.field(factory=dict)
    partitions: dict[int, tuple[frozenset[int], frozenset[int]]] = attrs.field(factory=dict)
    dropped: Counter = attrs.field(factory=Counter)
    active: bool = False
    _blocked: set[tuple[int, int]] = attrs.field(factory=set)
    _rngs: dict[tuple[int, int], random.Random] = attrs.field(factory=dict)
    _next_partition: int = 1

    def _rng(self, src: int, dst: int) -> random.Random:
        rng = self._rngs.get((src, dst))
        if rng is None:
            rng = self._rngs[(src, dst)] = random.Random(f"{self.seed}:{src}:{dst}")
        return rng

    def set(self, src: int, dst: int, faults: LinkFaults) -> None:
        """Give the direction ``src -> dst`` these faults (all clear: a perfect wire again).

        The link's random stream carries on where it was, so changing a link
        mid-run stays reproducible.
        """
        if src == dst and src != ANY:
            raise ConfigError(f"a link joins two different hosts, got host {src} twice")
        if faults.is_clear:
            self.links.pop((src, dst), None)
        else:
            self.links[(src, dst)] = LinkShaper(faults, self._rng(src, dst))
        self._update()

    def clear(self) -> None:
        """Every link a perfect wire again and every partition healed."""
        self.links.clear()
        self.partitions.clear()
        self._blocked.clear()
        self._update()

    def partition(self, one: frozenset[int], other: frozenset[int]) -> int:
        """Drop every packet between the two groups until :meth:`heal`; returns the partition's id."""
        one, other = frozenset(one), frozenset(other)
        if not one or not other:
            raise ConfigError("a partition needs a host on each side")
        both = one & other
        if both:
            raise ConfigError(f"a host cannot be on both sides of a partition: {sorted(both)}")
        ident = self._next_partition
        self._next_partition += 1
        self.partitions[ident] = (one, other)
        self._recompute_blocked()
        return ident

    def heal(self, ident: int | None = None) -> None:
        """End one partition (all of them with None)."""
        if ident is None:
            self.partitions.clear()
        else:
            self.partitions.pop(ident, None)
        self._recompute_blocked()

    def _recompute_blocked(self) -> None:
        self._blocked = {
            pair
            for one, other in self.partitions.values()
            for a in one
            for b in other
            for pair in ((a, b), (b, a))
        }
        self._update()

    def _update(self) -> None:
        self.active = bool(self.links or self._blocked)

    def shaper(self, src: int, dst: int) -> LinkShaper | None:
        links = self.links
        return links.get((src, dst)) or links.get((src, ANY)) or links.get((ANY, dst))

    def decide(self, src: int, dst: int | None, length: int, now: float) -> tuple[Delivery, ...] | None:
        """What becomes of a packet from host ``src`` to host ``dst``: None when no fault
        applies (route it now), else its deliveries (none: dropped, and counted)."""
        if dst is None:
            return None
        if (src, dst) in self._blocked:
            self.dropped[PARTITIONED] += 1
            return ()
        shaper = self.shaper(src, dst)
        if shaper is None:
            return None
        reason, deliveries = shaper.decide(length, now)
        if reason is not None:
            self.dropped[reason] += 1
        return deliveries

    def describe(self) -> list[str]:
        """One line per faulty link direction and partition, for the cassette header and reports."""
        lines = []
        for (src, dst), shaper in sorted(self.links.items()):
            lines.append(f"{_host(src)}->{_host(dst)}: {shaper.faults.describe()}")
        for one, other in self.partitions.values():
            lines.append(f"partition {sorted(one)} | {sorted(other)}")
        return lines


def _host(index: int) -> str:
    return "*" if index == ANY else str(index)
