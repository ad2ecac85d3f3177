"""The events of a recorded run: what a cassette holds, in time order.

Every event carries ``t``, seconds since the sandbox started, and (except the
header) ``conn``, the connection's number in order of opening. These are the
values the codec encodes, the recorder emits and the replayer consumes.
"""

from __future__ import annotations

import enum

import attrs

from .addressing import ConnectionKey, Endpoint

__all__ = [
    "Direction",
    "Outcome",
    "HostInfo",
    "Header",
    "ConnectionOpened",
    "Data",
    "HalfClosed",
    "Reset",
    "Closed",
    "Event",
    "ListenDelay",
    "Note",
    "NOTES",
    "UdpSeen",
    "UdpFlow",
    "TlsNote",
    "Datagram",
    "Refusal",
    "UDP_RECORDS",
    "FORMAT_VERSION",
]

#: Version 2 added IPv6: endpoints like ``[fd00::1]:80``, ``subnet6`` and each
#: host's ``address6`` in the header. Version 1 cassettes read as they are.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


class Direction(str, enum.Enum):
    """Which way bytes flow: client to server, or server to client."""

    C2S = "c2s"
    S2C = "s2c"

    @property
    def reverse(self) -> "Direction":
        return Direction.S2C if self is Direction.C2S else Direction.C2S

    @property
    def sender(self) -> str:
        """The side that sends bytes this way, as reports name it: "client" or "server"."""
        return "client" if self is Direction.C2S else "server"


class Outcome(str, enum.Enum):
    """How a connection attempt ended when it was recorded."""

    ESTABLISHED = "established"
    REFUSED = "refused"
    TIMED_OUT = "timeout"
    UNREACHABLE = "unreachable"


def _endpoint(value: object) -> Endpoint:
    return Endpoint.of(value)  # type: ignore[arg-type]


def _tuple(value: object) -> tuple:
    return tuple(value)  # type: ignore[arg-type]


@attrs.frozen
class HostInfo:
    address: str
    name: str = ""
    command: str = ""
    address6: str = ""


@attrs.frozen
class Header:
    """First record of a cassette: what made it and for which sandbox."""

    subnet: str
    hosts: tuple[HostInfo, ...] = attrs.field(converter=_tuple, default=())
    started: float = 0.0
    tool_version: str = ""
    version: int = FORMAT_VERSION
    subnet6: str = ""
    tls: str = "off"  # "intercept": TLS connections hold the plaintext said inside them
    # Faults on the wire while it was recorded (one line per link), and their seed.
    faults: tuple[str, ...] = attrs.field(converter=tuple, default=())
    fault_seed: int | None = None


@attrs.frozen
class ConnectionOpened:
    t: float
    conn: int
    client: Endpoint = attrs.field(converter=_endpoint)
    server: Endpoint = attrs.field(converter=_endpoint)
    outcome: Outcome = attrs.field(converter=Outcome, default=Outcome.ESTABLISHED)

    @property
    def key(self) -> ConnectionKey:
        return ConnectionKey.of(self.client, self.server)


@attrs.frozen
class Data:
    """Bytes one side sent; ``direction`` says which side."""

    t: float
    conn: int
    direction: Direction = attrs.field(converter=Direction)
    data: bytes = attrs.field(converter=bytes)


@attrs.frozen
class HalfClosed:
    """The sending side of ``direction`` shut down writing: the peer reads EOF."""

    t: float
    conn: int
    direction: Direction = attrs.field(converter=Direction)


@attrs.frozen
class Reset:
    """The sending side of ``direction`` aborted the connection (RST)."""

    t: float
    conn: int
    direction: Direction = attrs.field(converter=Direction)


@attrs.frozen
class Closed:
    """Both directions are finished; nothing more will happen on ``conn``."""

    t: float
    conn: int


Event = ConnectionOpened | Data | HalfClosed | Reset | Closed


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return value


@attrs.frozen
class ListenDelay:
    """How long after its host was first given a process ``server`` first accepted a connection.

    An upper bound of how long that server takes to listen: on replay, a
    connection to a live host waits that long (and a margin) for it before
    the cassette stands in.
    """

    t: float
    server: Endpoint = attrs.field(converter=_endpoint)
    delay: float = attrs.field(validator=attrs.validators.ge(0.0))


@attrs.frozen
class UdpSeen:
    """UDP datagrams that went between hosts while recording, which a cassette does not hold.

    ``client`` is the address that sent the flow's first datagram, ``server``
    the address and port it went to; ``datagrams`` counts both directions.
    """

    t: float
    client: str
    server: Endpoint = attrs.field(converter=_endpoint)
    datagrams: int = attrs.field(converter=_count)

    @property
    def summary(self) -> str:
        word = "datagram" if self.datagrams == 1 else "datagrams"
        return f"{self.datagrams} {word} between {self.client} and {self.server}"


@attrs.frozen
class UdpFlow:
    """A UDP flow's first datagram: ``client`` sent it to ``server``; later datagrams name ``flow``."""

    t: float
    flow: int = attrs.field(converter=_count)
    client: Endpoint = attrs.field(converter=_endpoint)
    server: Endpoint = attrs.field(converter=_endpoint)


@attrs.frozen
class Datagram:
    """One UDP datagram of ``flow``, whole: its boundaries are part of what was said."""

    t: float
    flow: int = attrs.field(converter=_count)
    direction: Direction = attrs.field(converter=Direction)
    data: bytes = attrs.field(converter=bytes)


@attrs.frozen
class Refusal:
    """The receiver's host refused ``flow``'s last datagram of ``direction`` (ICMP port unreachable).

    Nothing listened on the port it went to: a ``connect``-ed socket that sent
    it got ``ECONNREFUSED``.
    """

    t: float
    flow: int = attrs.field(converter=_count)
    direction: Direction = attrs.field(converter=Direction)


@attrs.frozen
class TlsNote:
    """Connection ``conn`` spoke TLS, terminated by the proxy: its data records hold the plaintext.

    ``sni``: the name the client asked for (None when it sent none); ``alpn``: the
    negotiated application protocol (``h2``, ``http/1.1``) or None.
    """

    t: float
    conn: int = attrs.field(converter=_count)
    sni: str | None = None
    alpn: str | None = None


#: The records of recorded UDP: they number flows, not TCP connections.
UDP_RECORDS = (UdpFlow, Datagram, Refusal)

Note = ListenDelay | UdpSeen | UdpFlow | Datagram | Refusal | TlsNote
"""Records that are not events a replay plays: all but ``tls`` carry no ``conn``.

``UdpSeen`` is what cassettes made before UDP was recorded hold in its place.
"""

#: The :data:`Note` types, for ``isinstance`` and for unpacking into a tuple of types.
NOTES = (ListenDelay, UdpSeen, *UDP_RECORDS, TlsNote)
