"""The IPv6 side of the address plan: a /64-or-smaller prefix beside the IPv4 subnet.

Host *i* owns the prefix's address *i + 1*, the same index as its IPv4
address. By default the prefix is a unique local one (RFC 4193) whose 48-bit
global ID is a hash of the IPv4 subnet, so cassettes recorded on one run
match the next, and two sandboxes of different subnets never share a prefix.
"""

from __future__ import annotations

import hashlib
import ipaddress

import attrs

from ..errors import ConfigError
from .addressing import check_ranges, inverse_network, parse_network

__all__ = ["Subnet6", "default_subnet6"]

_FORBIDDEN = [
    (ipaddress.IPv6Network("::/96"), "the unspecified, loopback and IPv4-compatible range ::/96"),
    (ipaddress.IPv6Network("::ffff:0:0/96"), "the IPv4-mapped range ::ffff:0:0/96"),
    (ipaddress.IPv6Network("64:ff9b::/96"), "the NAT64 range 64:ff9b::/96"),
    (ipaddress.IPv6Network("fe80::/10"), "the link-local range fe80::/10"),
    (ipaddress.IPv6Network("ff00::/8"), "the multicast range ff00::/8"),
]

_ULA = ipaddress.IPv6Network("fc00::/7")


def default_subnet6(subnet: object) -> "Subnet6":
    """The ULA /64 derived from an IPv4 subnet: ``fd`` followed by 40 bits of its hash, subnet ID 0."""
    digest = hashlib.sha256(str(subnet).encode()).digest()
    prefix = b"\xfd" + digest[:5] + b"\0\0" + bytes(8)
    return Subnet6(ipaddress.IPv6Network((prefix, 64)))


def _to_network(value: object) -> ipaddress.IPv6Network:
    return parse_network(value, Subnet6, ipaddress.IPv6Network, "subnet6", "fd00:1::/64")


def _check_usable(net: ipaddress.IPv6Network, original: object) -> None:
    if net.prefixlen > 120:
        raise ConfigError(
            f"subnet6 {original!r} is too small: use a prefix length of 120 or less, like 'fd00:1::/64'"
        )
    if net.prefixlen < 48:
        raise ConfigError(
            f"subnet6 {original!r} is too large: use a prefix length of 48 or more, like 'fd00:1::/64'"
        )
    check_ranges(net, original, "subnet6", _FORBIDDEN, "choose a unique local range like 'fd00:1::/64'")


@attrs.frozen
class Subnet6:
    """An IPv6 network whose addresses the sandbox hands to its hosts, beside their IPv4 ones."""

    network: ipaddress.IPv6Network = attrs.field(converter=_to_network)

    def __attrs_post_init__(self) -> None:
        _check_usable(self.network, str(self.network))

    @classmethod
    def parse(cls, value: object, subnet: object = None) -> "Subnet6":
        """Parse user input (None: the prefix derived from ``subnet``), raising :class:`ConfigError`."""
        if value is None:
            return default_subnet6(subnet)
        net = _to_network(value)
        _check_usable(net, value)
        return cls(net)

    @property
    def unique_local(self) -> bool:
        return self.network.subnet_of(_ULA)

    @property
    def capacity(self) -> int:
        """How many hosts fit: every address but the all-zeros one (the subnet-router anycast)."""
        return self.network.num_addresses - 1

    def host_address(self, index: int) -> str:
        """Address of the host made *index*-th (0-based), the same index as its IPv4 address."""
        if not 0 <= index < self.capacity:
            raise ConfigError(f"subnet6 {self.network} has no room for host number {index + 1}")
        return str(self.network.network_address + index + 1)

    @property
    def alias_network(self) -> ipaddress.IPv6Network:
        """Where the proxy's aliases of the hosts' IPv6 addresses live (routed as local there)."""
        return inverse_network(self.network)

    def __str__(self) -> str:
        return str(self.network)
