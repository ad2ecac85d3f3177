"""The supervisor's fault stage: packets leaving a host, judged, held and written when due.

A packet is judged once, as it leaves its host (before the router rewrites
it), by (source host, destination host), so each direction of a link is
crossed once per packet, TCP, UDP and ICMP alike. A packet with no fault on
its way is routed at once; a delayed one is copied into a heap and routed
when its time comes, from a loop timer; a corrupted one gets a byte of its
payload flipped so that the receiving kernel drops it by checksum.

The stage also answers the requests that change faults while the sandbox
runs, and those that list and reset the proxy's live TCP connections.
"""

from __future__ import annotations

import heapq
import itertools
import os
from typing import TYPE_CHECKING, Callable

from ..core.addressing import pack_ip
from ..core.fault_spec import EVERY, FaultSpec
from ..core.fault_table import ANY, FaultTable
from ..core.names import default_name
from ..core.router import Router, Verdict
from ..core.shaper import flip_byte
from ..errors import ConfigError
from . import fault_control as requests
from .toxic_tap import ToxicBox

if TYPE_CHECKING:
    from .loop import Loop
    from .network import Network
    from .proxy import Proxy

Forward = Callable[[int, bytearray], None]


class Never:
    """Stands in for the fault table where no packet is ever judged (the proxy's TUN)."""

    active = False


def make_forwarder(router: Router, network: "Network", open_server_leg, on_datagram, now) -> Forward:
    """What routes and writes a packet that host ``index`` sent, once its faults let it go."""
    host_tun = network.host_tun

    def forward(index: int, packet: bytearray) -> None:
        n = len(packet)
        verdict = router.from_host(packet, n)
        try:
            if verdict == Verdict.TO_PROXY:
                os.write(network.proxy_tun, packet)
            elif verdict == Verdict.DELIVER:
                os.write(host_tun[router.target], packet)
            elif verdict == Verdict.NEW_CONNECTION:
                open_server_leg(router.key)
            elif verdict == Verdict.REPLY:
                os.write(host_tun[index], router.reply)
            elif verdict == Verdict.UDP and on_datagram(memoryview(packet), now()):
                os.write(host_tun[router.target], packet)
        except OSError:
            router.dropped["write failed"] += 1

    return forward


class FaultStage:
    """The fault table, the packets it holds back, and the fault requests; see the module docstring."""

    def __init__(self, loop: "Loop", router: Router, seed: int, specs: tuple[FaultSpec, ...] = ()):
        self.loop = loop
        self.router = router
        self.table = FaultTable(seed)
        self.forward: Forward = lambda index, packet: None
        self.held: list[tuple[float, int, int, bytearray]] = []
        self._seq = itertools.count()
        self._armed = float("inf")
        # Faults given for the whole run, applied as their hosts come to be.
        self.pending: list[FaultSpec] = list(specs)
        self.applied: list[str] = []
        self.names: dict[str, int] = {EVERY: ANY}
        self.host_names: list[str] = []
        self.proxy: "Proxy | None" = None
        self.toxics = ToxicBox(loop, seed, router.host_of)

    # -- the packet path -----------------------------------------------------------------

    def intercept(self, index: int, buf: bytearray, n: int) -> bool:
        """Judge a packet host ``index`` wrote: False routes it now as it is; True means the
        stage took it (dropped it, or holds a copy until it is due)."""
        version = buf[0] >> 4
        if version == 4 and n >= 20:
            dst = self.router.hosts.get(bytes(buf[16:20]))
        elif version == 6 and n >= 40:
            dst = self.router.host_of(bytes(buf[24:40]))
        else:
            return False
        now = self.loop.now()
        deliveries = self.table.decide(index, dst, n, now)
        if deliveries is None:
            return False
        if len(deliveries) == 1 and deliveries[0][0] <= now and deliveries[0][1] is None:
            return False
        for at, flip in deliveries:
            packet = bytearray(buf[:n])
            if flip is not None:
                flip_byte(packet, n, flip)
            if at <= now:
                self.forward(index, packet)
            else:
                heapq.heappush(self.held, (at, next(self._seq), index, packet))
        if self.held and self.held[0][0] < self._armed:
            self._arm(self.held[0][0])
        return True

    def _arm(self, when: float) -> None:
        self._armed = when
        self.loop.call_at(when, lambda: self._due(when))

    def _due(self, when: float) -> None:
        if when == self._armed:
            self._armed = float("inf")
        held = self.held
        now = self.loop.now()
        while held and held[0][0] <= now:
            _, _, index, packet = heapq.heappop(held)
            self.forward(index, packet)
        if held and held[0][0] < self._armed:
            self._arm(held[0][0])

    # -- hosts and whole-run faults ---------------------------------------------------------

    def host_added(self, index: int, *names: str) -> None:
        """A host came to be: faults given for the whole run that name it take effect now."""
        self.host_names.append(names[0] if names else default_name(index))
        for name in (*names, default_name(index)):
            if name:
                self.names.setdefault(name, index)
        still = []
        for spec in self.pending:
            pairs = [(self.names.get(a), self.names.get(b)) for a, b in spec.pairs()]
            if any(src is None or dst is None for src, dst in pairs):
                still.append(spec)
                continue
            for src, dst in pairs:
                self.table.set(src, dst, spec.faults)
                if not spec.toxics.is_clear:
                    self.toxics.links[(src, dst)] = spec.toxics
            self.applied.append(spec.describe())
        self.pending = still

    # -- requests --------------------------------------------------------------------------------

    def handlers(self) -> dict[type, Callable]:
        return {
            requests.SetLink: self._set_link,
            requests.ClearFaults: self._clear,
            requests.Partition: lambda r: (self.table.partition(frozenset(r.one), frozenset(r.other)), []),
            requests.Heal: lambda request: (self.table.heal(request.ident), []),
            requests.Connections: self._connections,
            requests.ResetConnection: self._reset,
            requests.FaultState: lambda request: (self.state(), []),
            **self.toxics.handlers(),
            requests.SetLinkToxics: self._set_link_toxics,
        }

    def _clear(self, request: requests.ClearFaults) -> tuple[object, list[int]]:
        self.table.clear()
        self.toxics.clear()
        return None, []

    def _set_link(self, request: requests.SetLink) -> tuple[object, list[int]]:
        self._known(request.src, request.dst)
        self.table.set(request.src, request.dst, request.faults)
        if not request.faults.is_clear:
            self.applied.append(f"{self._link_name(request)}: {request.faults.describe()}")
        return None, []

    def _set_link_toxics(self, request: requests.SetLinkToxics) -> tuple[object, list[int]]:
        self._known(request.src, request.dst)
        self.toxics.set_link(request)
        if not request.toxics.is_clear:
            self.applied.append(f"{self._link_name(request)}: {request.toxics.describe()}")
        return None, []

    def _known(self, *indices: int) -> None:
        known = len(self.router.hosts)
        for index in indices:
            if index != ANY and not 0 <= index < known:
                raise ConfigError(f"no host {index} in this sandbox (it has {known})")

    def _link_name(self, request) -> str:
        src, dst = (EVERY if i == ANY else self.host_names[i] for i in (request.src, request.dst))
        return f"{src}->{dst}"

    def state(self) -> dict:
        return {
            "seed": self.table.seed,
            "links": self.table.describe() + self.toxics.describe(),
            "applied": list(self.applied),
            "dropped": dict(self.table.dropped),
        }

    def _connections(self, request: requests.Connections) -> tuple[object, list[int]]:
        wanted = set(request.hosts)
        found = []
        if self.proxy is not None:
            # A client's handshake may be complete in the kernel but not yet accepted by the loop.
            for listener in list(self.proxy.listeners.values()):
                self.proxy._accept(listener)
        for key, pipe in list(self.proxy.pipes.items() if self.proxy else ()):
            if pipe.finished or pipe.client_leg is None:
                continue
            ends = {self.router.host_of(_packed(pipe.client.host)), self.router.host_of(_packed(pipe.server.host))}
            if wanted and not wanted & ends:
                continue
            found.append({"key": key, "client": (pipe.client.host, pipe.client.port),
                          "server": (pipe.server.host, pipe.server.port)})
        return found, []

    def _reset(self, request: requests.ResetConnection) -> tuple[object, list[int]]:
        pipe = self.proxy.pipes.get(request.key) if self.proxy else None
        if pipe is None or pipe.finished:
            return False, []
        pipe.abort()
        return True, []


def _packed(address: str) -> bytes:
    return pack_ip(address)
