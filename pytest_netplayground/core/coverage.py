"""What a recording does not cover, said out loud.

The router carries UDP between hosts but the cassette holds TCP only, and a
TLS handshake recorded byte for byte cannot be replayed. Both would otherwise
pass unnoticed: a recording of only UDP looks like an empty, clean one, and a
replay failing in a handshake reads as an unexplained byte difference. This
module turns the router's counts into notes and findings, and recognises TLS.
"""

from __future__ import annotations

import attrs

from .addressing import Endpoint, FlowKey, decode_key, reverse_key
from .events import NOTES, ListenDelay, UdpSeen

__all__ = [
    "NOTES",
    "TLS_ADVICE",
    "RunNotes",
    "starts_tls_record",
    "udp_flows",
    "udp_line",
]

TLS_ADVICE = (
    "TLS cannot be replayed byte for byte: both sides put fresh randomness into every handshake, "
    "so neither a live peer nor the recording can say what the other expects. Record and replay the "
    "plaintext side instead (terminate TLS outside the sandbox, or run the program without TLS in "
    "the test), or wait for TLS interception support."
)


def starts_tls_record(data: bytes) -> bool:
    """Whether ``data`` begins with a TLS handshake record header (type 22, version 3.0 to 1.3)."""
    return len(data) >= 3 and data[0] == 0x16 and data[1] == 0x03 and data[2] <= 0x04


def udp_line(flows) -> str:
    """``UDP not recorded: 12 datagrams between 10.0.0.2 and 10.0.0.1:53; ...``, or "" without UDP."""
    if not flows:
        return ""
    return "UDP not recorded: " + "; ".join(flow.summary for flow in flows)


def udp_flows(counts: dict[FlowKey, int], t: float = 0.0) -> tuple[UdpSeen, ...]:
    """Datagram counts per (src, dst, sport, dport) key, gathered into flows.

    The sender of a flow's first datagram is its client: a key whose reverse
    was seen earlier is the answer of that flow. ``counts`` must be in the
    order the keys were first seen (a dict filled as the packets came).
    Flows are then merged per client address and server endpoint, so a
    resolver asking from a new port each time reads as one line.
    """
    owner: dict[FlowKey, tuple[str, Endpoint]] = {}
    totals: dict[tuple[str, Endpoint], int] = {}
    for key, count in counts.items():
        flow = owner.get(reverse_key(key))
        if flow is None:
            client, server = decode_key(key)
            flow = (client.host, server)
        owner[key] = flow
        totals[flow] = totals.get(flow, 0) + count
    return tuple(UdpSeen(t, client, server, count) for (client, server), count in totals.items())


@attrs.define
class RunNotes:
    """The notes of one cassette, gathered as a reading pass meets them."""

    listen_delays: dict[Endpoint, float] = attrs.field(factory=dict)
    udp: list[UdpSeen] = attrs.field(factory=list)

    def skim(self, scan):
        """Pass on the (offset, length, record) of ``scan`` that are not notes, keeping the notes."""
        for item in scan:
            note = item[2]
            if isinstance(note, ListenDelay):
                self.listen_delays.setdefault(note.server, note.delay)
            elif isinstance(note, UdpSeen):
                self.udp.append(note)
            else:
                yield item
