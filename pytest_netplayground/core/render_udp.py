"""Human-readable rendering of a cassette's UDP flows, beside its TCP conversations.

Each flow is shown like a connection: heading, then each datagram with its
time, direction and bytes (text as text, binary as a hexdump), one entry per
datagram so its boundaries show.
"""

from __future__ import annotations

from collections.abc import Iterable

from .codec import is_text
from .events import Datagram, Direction, Refusal, UdpFlow

__all__ = ["render_udp_flow"]

_INDENT = "  "
_BODY_INDENT = "      "
_ARROW = {Direction.C2S: "-->", Direction.S2C: "<--"}


def render_udp_flow(
    flow: UdpFlow, datagrams: Iterable[Datagram | Refusal], *, width: int = 80, names: dict[str, str] | None = None
) -> str:
    """One UDP flow: heading, each datagram in time order, then a summary."""
    from .render import _text_lines, hexdump

    names = names or {}
    heading = f"UDP flow {flow.flow} {flow.client} -> {flow.server}"
    client, server = names.get(flow.client.host), names.get(flow.server.host)
    if client or server:
        heading += f"  [{client or flow.client.host} -> {server or flow.server.host}]"
    lines = [heading]
    counts = {Direction.C2S: 0, Direction.S2C: 0}
    for datagram in datagrams:
        if isinstance(datagram, Refusal):
            refuser = "server" if datagram.direction is Direction.C2S else "client"
            lines.append(
                f"{_INDENT}{datagram.t:.6f}s  the {refuser}'s host refused it: ICMP port unreachable"
            )
            continue
        size = len(datagram.data)
        counts[datagram.direction] += 1
        lines.append(
            f"{_INDENT}{datagram.t:.6f}s  client {_ARROW[datagram.direction]} server  "
            f"datagram of {size} byte{'s' if size != 1 else ''}"
        )
        if is_text(datagram.data):
            lines.extend(_text_lines(datagram.data, width))
        else:
            lines.extend(hexdump(datagram.data, width=width, indent=_BODY_INDENT))
    lines.append(
        f"{_INDENT}= {counts[Direction.C2S]} datagrams client -> server, "
        f"{counts[Direction.S2C]} datagrams server -> client"
    )
    return "\n".join(lines)
