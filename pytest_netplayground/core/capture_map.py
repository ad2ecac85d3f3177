"""Which sandbox host stands for each address of a capture.

A cassette replays in a sandbox whose host *i* owns the subnet's address
*i + 1* (and the IPv6 prefix's), so every address a capture shows must become
one of those. ``--map OLD=NEW`` says it for an address; the others get the
free hosts in order, servers first (in the order they first answered), then
clients, so the servers of a capture land on the hosts a replay makes first.
An address that already belongs to the sandbox's plan keeps its host.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

import attrs

from ..errors import ConfigError
from .addressing import Endpoint, Subnet
from .addressing6 import Subnet6
from .events import ConnectionOpened, HostInfo, UdpFlow

__all__ = ["AddressMap", "parse_mappings"]


def _address(text: str, what: str, item: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        raise ConfigError(
            f"bad --map {item!r}: {what} {text!r} is not an IPv4 or IPv6 address; write OLD=NEW like 192.0.2.7=10.0.0.1"
        ) from None


def parse_mappings(items: Iterable[str]) -> dict[str, str]:
    """``OLD=NEW`` items as {capture address: sandbox address}, both canonical."""
    out: dict[str, str] = {}
    for item in items:
        if item.count("=") != 1:
            raise ConfigError(f"bad --map {item!r}: write OLD=NEW like 192.0.2.7=10.0.0.1")
        old_text, new_text = item.split("=")
        old = str(_address(old_text, "the capture's address", item))
        new = str(_address(new_text, "the sandbox address", item))
        if old in out and out[old] != new:
            raise ConfigError(f"bad --map {item!r}: {old} is already mapped to {out[old]}")
        out[old] = new
    return out


@attrs.define
class AddressMap:
    """Capture address -> sandbox address, and the hosts the cassette's header lists."""

    subnet: Subnet
    subnet6: Subnet6
    addresses: dict[str, str] = attrs.field(factory=dict)
    indexes: set[int] = attrs.field(factory=set)

    @classmethod
    def build(
        cls, subnet: Subnet, subnet6: Subnet6, given: dict[str, str], opened: Sequence[object]
    ) -> "AddressMap":
        """The map for a capture whose connections and flows open as ``opened`` (first pass events)."""
        plan = cls(subnet, subnet6)
        for old, new in given.items():
            plan.addresses[old] = new
            plan.indexes.add(plan._index_of(new, f"{old}={new}"))
        order = [e.server.host for e in opened if isinstance(e, (ConnectionOpened, UdpFlow))]
        order += [e.client.host for e in opened if isinstance(e, (ConnectionOpened, UdpFlow))]
        for address in order:
            # An address that is already a sandbox host's (a capture of a sandbox, an exported
            # cassette) keeps its host.
            index = plan._own_index(address)
            if address not in plan.addresses and index is not None:
                plan.addresses[address] = address
                plan.indexes.add(index)
        free = 0
        for address in order:
            if address in plan.addresses:
                continue
            while free in plan.indexes:
                free += 1
            if free >= min(subnet.capacity, subnet6.capacity):
                raise ConfigError(
                    f"the capture has more addresses than subnet {subnet} has hosts; "
                    "give a larger --subnet or --map several addresses to one host"
                )
            plan.indexes.add(free)
            plan.addresses[address] = (
                subnet6.host_address(free) if ":" in address else subnet.host_address(free)
            )
        return plan

    def _own_index(self, address: str) -> int | None:
        """The index of the sandbox host owning ``address``, if one would."""
        ip = ipaddress.ip_address(address)
        plan = self.subnet6 if ip.version == 6 else self.subnet
        index = int(ip) - int(plan.network.network_address) - 1
        return index if ip in plan.network and 0 <= index < plan.capacity else None

    def _index_of(self, address: str, item: str) -> int:
        ip = ipaddress.ip_address(address)
        network = self.subnet6.network if ip.version == 6 else self.subnet.network
        if ip not in network:
            raise ConfigError(
                f"bad --map {item!r}: {address} is not in the sandbox's "
                f"{'IPv6 prefix' if ip.version == 6 else 'subnet'} {network}; map to a host address in it"
            )
        index = int(ip) - int(network.network_address) - 1
        if index < 0 or index >= (self.subnet6 if ip.version == 6 else self.subnet).capacity:
            raise ConfigError(f"bad --map {item!r}: {address} is not a host address of {network}")
        return index

    def endpoint(self, endpoint: Endpoint) -> Endpoint:
        return Endpoint(self.addresses.get(endpoint.host, endpoint.host), endpoint.port)

    def hosts(self) -> tuple[HostInfo, ...]:
        """Every host up to the highest one used, so a replay making hosts in order gets these addresses."""
        count = max(self.indexes, default=-1) + 1
        return tuple(
            HostInfo(self.subnet.host_address(i), f"h{i + 1}", "", self.subnet6.host_address(i))
            for i in range(count)
        )

    def lines(self) -> list[str]:
        """The mapping as the import prints it: ``capture address -> sandbox address``."""
        return [f"{old} -> {new}" for old, new in self.addresses.items()]
