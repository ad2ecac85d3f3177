"""Value types for addresses and the address plan of a sandbox.

Host *i* (0-based, in creation order) owns the subnet's address *i + 1*, so
cassettes recorded on one run match the next. The proxy namespace owns an
*alias* of every subnet address, the bitwise inverse (as the original tool
did): an address no host ever sees, so the router can steer a TCP segment to
the proxy by rewriting its destination, and back by rewriting its source.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import struct

import attrs

from ..errors import ConfigError, SubnetFull

__all__ = [
    "AddressPlan",
    "ConnectionKey",
    "DEFAULT_SUBNET",
    "Endpoint",
    "FlowKey",
    "Subnet",
    "decode_key",
    "encode_key",
    "key_client",
    "key_server",
    "pack_ip",
    "reverse_key",
    "unpack_ip",
]

DEFAULT_SUBNET = "10.0.0.0/24"

_FORBIDDEN = [
    (ipaddress.IPv4Network("0.0.0.0/8"), "the 'this network' range 0.0.0.0/8"),
    (ipaddress.IPv4Network("127.0.0.0/8"), "the loopback range 127.0.0.0/8"),
    (ipaddress.IPv4Network("224.0.0.0/4"), "the multicast range 224.0.0.0/4"),
    (ipaddress.IPv4Network("255.255.255.255/32"), "the broadcast address"),
]


def parse_network(value: object, own: type, kind: type, setting: str, example: str):
    """``value`` as a network of ``kind`` (IPv4Network or IPv6Network), from an
    ``own`` value (Subnet, Subnet6), a network, or text; errors name ``setting``."""
    if isinstance(value, own):
        return value.network
    if isinstance(value, kind):
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{setting} must be a string like '{example}', got {value!r}")
    text = value.strip()
    if "/" not in text:
        raise ConfigError(
            f"malformed {setting} {value!r}: give a network with its prefix length, like '{example}'"
        )
    try:
        return kind(text, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            fixed = kind(text, strict=False)
            raise ConfigError(
                f"malformed {setting} {value!r}: it has host bits set; did you mean '{fixed}'?"
            ) from exc
        family = "IPv4" if kind is ipaddress.IPv4Network else "IPv6"
        raise ConfigError(
            f"malformed {setting} {value!r}: {exc}; give an {family} network like '{example}'"
        ) from exc


def _to_network(value: object) -> ipaddress.IPv4Network:
    return parse_network(value, Subnet, ipaddress.IPv4Network, "subnet", "10.0.0.0/24")


def _check_usable(net: ipaddress.IPv4Network, original: object) -> None:
    if net.prefixlen > 30:
        raise ConfigError(
            f"subnet {original!r} is too small: a /{net.prefixlen} has no room for two hosts; "
            "use a prefix length of 30 or less, like '10.0.0.0/24'"
        )
    if net.prefixlen < 8:
        raise ConfigError(
            f"subnet {original!r} is too large: use a prefix length of 8 or more, like '10.0.0.0/24'"
        )
    check_ranges(net, original, "subnet", _FORBIDDEN, "choose a private range like '10.0.0.0/24'")


def check_ranges(net, original: object, setting: str, forbidden: list, advice: str) -> None:
    """Refuse a network (IPv4 or IPv6) that, or whose proxy alias range, overlaps a ``forbidden`` range."""
    alias = inverse_network(net)
    for network, what in forbidden:
        if net.overlaps(network):
            raise ConfigError(f"{setting} {original!r} overlaps {what}; {advice}")
        if alias.overlaps(network):
            raise ConfigError(
                f"{setting} {original!r} cannot be used: its proxy alias range {alias} overlaps {what}; {advice}"
            )


def inverse_network(net):
    """The proxy's alias range of a network, IPv4 or IPv6: its bitwise inverse."""
    inverted = ~int(net.network_address) & ((1 << net.max_prefixlen) - 1)
    return type(net)((inverted & int(net.netmask), net.prefixlen))


@attrs.frozen
class Subnet:
    """An IPv4 network whose addresses the sandbox hands to its hosts."""

    network: ipaddress.IPv4Network = attrs.field(converter=_to_network)

    def __attrs_post_init__(self) -> None:
        _check_usable(self.network, str(self.network))

    @classmethod
    def parse(cls, value: object) -> "Subnet":
        """Parse user input, raising :class:`ConfigError` naming the value."""
        net = _to_network(value)
        _check_usable(net, value)
        return cls(net)

    @property
    def capacity(self) -> int:
        """How many hosts fit: every address but the network and broadcast ones."""
        return self.network.num_addresses - 2

    def host_address(self, index: int) -> str:
        """Address of the host made *index*-th (0-based)."""
        if not 0 <= index < self.capacity:
            raise self.full(index)
        return str(self.network.network_address + index + 1)

    def full(self, index: int) -> SubnetFull:
        """The error for host number ``index + 1`` when it does not fit."""
        return SubnetFull(
            f"subnet {self.network} has room for {self.capacity} hosts; host number {index + 1} "
            "does not fit: use a larger subnet (a /24 has room for 254)"
        )

    @property
    def alias_network(self) -> ipaddress.IPv4Network:
        return inverse_network(self.network)

    def __str__(self) -> str:
        return str(self.network)


def _check_port(instance, attribute, value) -> None:
    if not 0 <= value <= 65535:
        raise ConfigError(f"{attribute.name} must be a port number 0..65535, got {value}")


@functools.lru_cache(maxsize=4096)
def _canonical_ip(text: str) -> str:
    # A sandbox has a few hundred addresses at most, seen at every connection.
    return str(ipaddress.ip_address(text))


def _to_ip(value: object) -> str:
    try:
        if isinstance(value, str):
            return _canonical_ip(value)
        if isinstance(value, bytes):
            return unpack_ip(value)
        return str(ipaddress.ip_address(value))
    except (ValueError, OSError) as exc:
        raise ConfigError(f"not an IPv4 or IPv6 address: {value!r}") from exc


def pack_ip(address: str) -> bytes:
    """The packed form of an IPv4 (4 bytes) or IPv6 (16 bytes) address, as in a packet's header."""
    return socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET, address)


def unpack_ip(packed: bytes) -> str:
    """The text of a packed IPv4 or IPv6 address (the canonical form)."""
    return socket.inet_ntop(socket.AF_INET6 if len(packed) == 16 else socket.AF_INET, packed)


def family(address: str) -> int:
    """``socket.AF_INET`` or ``socket.AF_INET6``: the family of a socket for ``address``."""
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def bracketed(address: str) -> str:
    """An address as it is written before ``:port``: IPv6 in brackets (RFC 3986)."""
    return f"[{address}]" if ":" in address else address


@attrs.frozen(order=True)
class Endpoint:
    """One end of a TCP connection or UDP flow: an IPv4 or IPv6 address and a port."""

    host: str = attrs.field(converter=_to_ip)
    port: int = attrs.field(converter=int, validator=_check_port)

    @classmethod
    def of(cls, value: "Endpoint | tuple[str, int]") -> "Endpoint":
        if isinstance(value, Endpoint):
            return value
        host, port = value
        return cls(host, port)

    def __str__(self) -> str:
        return f"{bracketed(self.host)}:{self.port}"


@attrs.frozen(order=True)
class ConnectionKey:
    """What identifies a recorded connection across runs.

    The client's ephemeral port changes from run to run, so it is not part of
    the key; connections of one key are told apart by their opening order and
    by what their clients say first (see :mod:`.matching`).
    """

    client_host: str = attrs.field(converter=_to_ip)
    server_host: str = attrs.field(converter=_to_ip)
    server_port: int = attrs.field(converter=int, validator=_check_port)

    @classmethod
    def of(cls, client: Endpoint, server: Endpoint) -> "ConnectionKey":
        return cls(client.host, server.host, server.port)

    def __str__(self) -> str:
        return f"{self.client_host} -> {bracketed(self.server_host)}:{self.server_port}"


#: One live TCP or UDP flow as the router sees it: source address, destination
#: address, source port, destination port, packed as in the packet's headers
#: (12 bytes over IPv4, 36 over IPv6), so the router cuts it from a packet
#: without decoding anything.
#: Unlike :class:`ConnectionKey` it holds the client's port: it names one
#: connection of one run, not what connections of many runs have in common.
FlowKey = bytes

_PORTS = struct.Struct("!HH")


def encode_key(client: Endpoint, server: Endpoint) -> FlowKey:
    """The flow key of a connection from ``client`` to ``server`` (both of one family)."""
    return pack_ip(client.host) + pack_ip(server.host) + _PORTS.pack(client.port, server.port)


def decode_key(key: FlowKey) -> tuple[Endpoint, Endpoint]:
    """Source (client) and destination (server) endpoints of a flow key."""
    half = (len(key) - 4) >> 1
    sport, dport = _PORTS.unpack(key[-4:])
    return Endpoint(unpack_ip(key[:half]), sport), Endpoint(unpack_ip(key[half : 2 * half]), dport)


def key_client(key: FlowKey) -> bytes:
    """The packed address of a flow's source (its client)."""
    return key[: (len(key) - 4) >> 1]


def key_server(key: FlowKey) -> bytes:
    """The packed address of a flow's destination (its server)."""
    half = (len(key) - 4) >> 1
    return key[half : 2 * half]


def reverse_key(key: FlowKey) -> FlowKey:
    """The key of the packets going the other way."""
    half = (len(key) - 4) >> 1
    return key[half : 2 * half] + key[:half] + key[-2:] + key[-4:-2]


@attrs.frozen
class AddressPlan:
    """Maps between host addresses and their proxy aliases (see the module docstring).

    The router keeps, per host, the packed alias and the checksum adjustment
    of the rewrite, so its hot path never calls these.
    """

    subnet: Subnet = attrs.field(converter=Subnet.parse)

    @property
    def alias_network(self) -> ipaddress.IPv4Network:
        return self.subnet.alias_network

    def alias(self, address: str) -> str:
        """The proxy's alias of a host address, IPv4 or IPv6."""
        return unpack_ip(invert(pack_ip(address)))

    def unalias(self, alias: str) -> str:
        return unpack_ip(invert(pack_ip(alias)))


def invert(packed: bytes) -> bytes:
    """Bitwise inverse of a packed IPv4 or IPv6 address: the alias mapping, its own inverse."""
    return (~int.from_bytes(packed, "big") & ((1 << (8 * len(packed))) - 1)).to_bytes(len(packed), "big")
