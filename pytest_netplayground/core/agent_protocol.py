"""The messages between a supervisor and its agents, and the numbers of the tunnel (sans-io).

A control message is a JSON object (one line) followed by raw bytes: the
object says what it is (``op``) and the bytes carry a process's output or
input as they are, without base64. JSON, not pickle: an agent acts on what a
peer sends, and a peer's message must never run code of its own.
"""

from __future__ import annotations

import ipaddress
import json
import re

import attrs

from ..errors import ConfigError
from .validation import whole_number

#: Protocol version of the control messages (beside the crypto's own).
VERSION = 1
#: Seconds between keepalives each way, and the silence after which the peer counts as gone.
KEEPALIVE = 1.0
DEAD_AFTER = 5.0
#: Seconds a request to an agent may take (spawn, listening, a new host).
REQUEST_TIMEOUT = 10.0
#: Remote processes get ids above every pid Linux hands out (pid_max is at most 2**22),
#: so they never collide with the supervisor's own children.
REMOTE_PID_BASE = 1 << 22
#: Bytes an IPv4 / IPv6 header and a UDP header add to each tunnel datagram.
IPV4_UDP = 28
IPV6_UDP = 48
#: Smallest MTU a host's TUN may get (IPv6 needs 1280).
MIN_TUN_MTU = 1280

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


def encode(op: str, payload: bytes = b"", **fields: object) -> bytes:
    """One control message: ``op`` and ``fields`` as a JSON line, then ``payload``."""
    return json.dumps({"op": op, **fields}, separators=(",", ":")).encode() + b"\n" + bytes(payload)


def decode(message: bytes) -> tuple[dict, bytes]:
    """``(fields, payload)`` of a control message; ValueError if it is not one."""
    head, sep, payload = bytes(message).partition(b"\n")
    if not sep:
        raise ValueError("control message without its header line")
    fields = json.loads(head)
    if not isinstance(fields, dict) or not isinstance(fields.get("op"), str):
        raise ValueError("control message header is not an object with an op")
    return fields, payload


#: Largest tunnel datagram ``tunnel_mtu`` may ask for: an IP packet's limit.
MAX_TUNNEL_MTU = 65535


def tunnel_mtu(value: object) -> int | None:
    """The ``tunnel_mtu`` setting: None (the path's MTU), or the largest IP packet a sealed
    datagram may make between the machines, fragmented there by the kernel when larger than
    the path's MTU (fewer, larger packets through the tunnel: faster on a link that loses none)."""
    if value is None:
        return None
    mtu = whole_number(value)
    if mtu is None:
        raise ConfigError(f"tunnel_mtu is a whole number of bytes (like 9000 or 65535), not {value!r}")
    if not MIN_TUN_MTU + IPV6_UDP + 40 <= mtu <= MAX_TUNNEL_MTU:
        raise ConfigError(
            f"tunnel_mtu {mtu} is out of range: between {MIN_TUN_MTU + IPV6_UDP + 40} and {MAX_TUNNEL_MTU} bytes"
        )
    return mtu


def tun_mtu(path_mtu: int, overhead: int, ipv6: bool = False) -> int:
    """The MTU of a remote host's TUN: an IP packet of that size, sealed and in one
    UDP datagram, fits the path between the machines (no fragment, no black hole)."""
    mtu = path_mtu - (IPV6_UDP if ipv6 else IPV4_UDP) - overhead
    if mtu < MIN_TUN_MTU:
        raise ConfigError(
            f"the path to the agent carries at most {path_mtu} bytes per packet: with the tunnel's "
            f"{overhead + (IPV6_UDP if ipv6 else IPV4_UDP)} bytes a host's packets would be under "
            f"{MIN_TUN_MTU} bytes; raise the MTU of the link between the machines"
        )
    return mtu


@attrs.frozen
class AgentAddress:
    """Where an agent listens: a name for messages, an IP address and a port (TCP and UDP)."""

    name: str
    host: str
    port: int

    @classmethod
    def parse(cls, name: str, text: str) -> "AgentAddress":
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"agent name {name!r}: use a letter, then letters, digits, '-' or '_'")
        if not isinstance(text, str):
            raise ConfigError(f"agent {name}: address {text!r} is not ADDR:PORT")
        host, sep, port = text.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            ipaddress.ip_address(host)
            number = int(port)
        except ValueError:
            raise ConfigError(
                f"agent {name}: {text!r} is not ADDR:PORT (an IP address and a port, e.g. 192.0.2.2:50000)"
            ) from None
        if not sep or not 0 < number < 65536:
            raise ConfigError(f"agent {name}: port of {text!r} must be 1-65535")
        return cls(name, host, number)

    @property
    def ipv6(self) -> bool:
        return ":" in self.host

    @property
    def text(self) -> str:
        """``ADDR:PORT`` as given (an IPv6 address in brackets)."""
        return f"{'[%s]' % self.host if self.ipv6 else self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.name} ({self.text})"


def parse_agents(value: object) -> dict[str, AgentAddress]:
    """``{"b": "ADDR:PORT"}``, or ``["b=ADDR:PORT", ...]`` as the command line gives them."""
    if not value:
        return {}
    if isinstance(value, (list, tuple)):
        pairs = {}
        for item in value:
            name, sep, address = str(item).partition("=")
            if not sep:
                raise ConfigError(f"--agent {item!r}: use NAME=ADDR:PORT, e.g. b=192.0.2.2:50000")
            if name in pairs:
                raise ConfigError(f"agent {name!r} is given twice")
            pairs[name] = address
        value = pairs
    if not isinstance(value, dict):
        raise ConfigError(f"agents {value!r}: a mapping of names to ADDR:PORT")
    return {name: AgentAddress.parse(name, address) for name, address in value.items()}


def parse_placements(items: object, commands: int, agents: dict) -> dict[int, str]:
    """``--on INDEX=AGENT`` values -> {command index (0-based): agent name}."""
    placed: dict[int, str] = {}
    for item in items or ():
        index, sep, agent = str(item).partition("=")
        if not sep or not index.isdigit():
            raise ConfigError(f"--on {item!r}: use INDEX=AGENT (INDEX counts commands from 1)")
        number = int(index)
        if not 1 <= number <= commands:
            raise ConfigError(f"--on {item!r}: there are {commands} commands (INDEX 1-{commands})")
        if agent not in agents:
            known = ", ".join(sorted(agents)) or "none: add --agent NAME=ADDR:PORT"
            raise ConfigError(f"--on {item!r}: no agent {agent!r} (agents: {known})")
        placed[number - 1] = agent
    return placed
