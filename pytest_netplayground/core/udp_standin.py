"""The cassette standing in for an absent UDP server, decided without sockets.

Recorded flows are grouped by (client host, server address, server port): the
client's port does not count. A live flow is bound to a recorded one at its
first datagram (the first unused recording whose first request has the same
bytes, else the first unused one). Each client datagram is then matched to the
flow's next recorded request, by order, and answered with the reply datagrams
that followed that request in the recording, one for one. What went otherwise
is a :class:`~.divergence.UdpDiverged`.
"""

from __future__ import annotations

import attrs

from .addressing import Endpoint
from .divergence import UdpDiverged
from .events import Datagram, Direction, UdpFlow
from .prefix import common_prefix

__all__ = ["UdpStandIn"]


@attrs.define
class _Script:
    """One recorded flow as requests, each with the replies that followed it."""

    flow: UdpFlow
    exchanges: list[tuple[bytes, list[bytes]]] = attrs.field(factory=list)
    position: int = 0
    used: bool = False


@attrs.define
class UdpStandIn:
    """See the module docstring; feed it with :meth:`ask`, end it with :meth:`finish`."""

    scripts: dict[tuple[str, Endpoint], list[_Script]] = attrs.field(factory=dict)
    live: dict[tuple[Endpoint, Endpoint], _Script] = attrs.field(factory=dict)
    found: list[UdpDiverged] = attrs.field(factory=list)
    #: Keys whose server ran on replay: their flows went live, reported as such.
    gone_live: set[tuple[str, Endpoint]] = attrs.field(factory=set)

    @classmethod
    def of(cls, flows: dict[int, UdpFlow], datagrams: list[Datagram]) -> "UdpStandIn":
        scripts = {number: _Script(flow) for number, flow in flows.items()}
        for datagram in datagrams:
            script = scripts[datagram.flow]
            if datagram.direction is Direction.C2S:
                script.exchanges.append((datagram.data, []))
            elif script.exchanges:
                script.exchanges[-1][1].append(datagram.data)
            # A server datagram before any request has nothing to answer: not played.
        stand_in = cls()
        for script in scripts.values():
            key = (script.flow.client.host, script.flow.server)
            stand_in.scripts.setdefault(key, []).append(script)
        return stand_in

    def knows(self, client_host: str, server: Endpoint) -> bool:
        """Whether any flow from ``client_host`` to ``server`` was recorded."""
        return (client_host, server) in self.scripts

    def went_live(self, client_host: str, server: Endpoint) -> None:
        """A datagram of this key went to a live server: its recordings are not unused."""
        self.gone_live.add((client_host, server))

    def ask(self, client: Endpoint, server: Endpoint, data: bytes) -> list[bytes] | None:
        """The recorded replies to ``data``, or None when nothing recorded answers it."""
        script = self.live.get((client, server))
        if script is None:
            unused = [s for s in self.scripts.get((client.host, server), ()) if not s.used]
            if not unused:
                return None
            same = [s for s in unused if s.exchanges and s.exchanges[0][0] == data]
            script = (same or unused)[0]
            script.used = True
            self.live[(client, server)] = script
        flow = script.flow
        if script.position >= len(script.exchanges):
            self.found.append(UdpDiverged(client.host, server, flow.flow, "extra", script.position, actual=data))
            script.position += 1
            return None
        expected, replies = script.exchanges[script.position]
        if expected != data:
            offset = common_prefix(expected, data)
            self.found.append(
                UdpDiverged(client.host, server, flow.flow, "differs", script.position, offset, expected, data)
            )
        script.position += 1
        return list(replies)

    def finish(self) -> list[UdpDiverged]:
        """What went otherwise, with the recorded requests never sent and the flows never used."""
        found = list(self.found)
        for (client_host, server), scripts in self.scripts.items():
            if (client_host, server) in self.gone_live:
                continue
            for script in scripts:
                if not script.used:
                    found.append(UdpDiverged(client_host, server, script.flow.flow, "unused"))
                elif script.position < len(script.exchanges):
                    left = len(script.exchanges) - script.position
                    found.append(UdpDiverged(client_host, server, script.flow.flow, "missing", left))
        return found
