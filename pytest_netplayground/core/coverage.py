"""What a recording does not cover, said out loud.

A TLS handshake recorded byte for byte cannot be replayed, and a replay
failing in one would read as an unexplained byte difference: this module
recognises TLS. It also gathers a cassette's notes as a reading pass meets
them, among them the UDP a cassette holds and, in cassettes made before UDP
was recorded, the counts of UDP that went unrecorded.
"""

from __future__ import annotations

import attrs

from .addressing import Endpoint
from .events import NOTES, Datagram, ListenDelay, Refusal, TlsNote, UdpFlow, UdpSeen

__all__ = [
    "NOTES",
    "TLS_ADVICE",
    "RunNotes",
    "starts_tls_record",
    "udp_line",
]

TLS_ADVICE = (
    "TLS cannot be replayed byte for byte: both sides put fresh randomness into every handshake, "
    "so neither a live peer nor the recording can say what the other expects. Record it again with "
    "TLS interception (tls=\"intercept\", --netplay-tls=intercept, netplay record --tls intercept): "
    "the cassette then holds the plaintext, and a replay answers inside a fresh handshake."
)


def starts_tls_record(data: bytes) -> bool:
    """Whether ``data`` begins with a TLS handshake record header (type 22, version 3.0 to 1.3)."""
    return len(data) >= 3 and data[0] == 0x16 and data[1] == 0x03 and data[2] <= 0x04


def udp_line(flows) -> str:
    """``UDP not recorded: 12 datagrams between 10.0.0.2 and 10.0.0.1:53; ...``, or "" without UDP.

    Only cassettes made before UDP was recorded hold such counts.
    """
    if not flows:
        return ""
    return "UDP not recorded: " + "; ".join(flow.summary for flow in flows)


@attrs.define
class RunNotes:
    """The notes of one cassette, gathered as a reading pass meets them."""

    listen_delays: dict[Endpoint, float] = attrs.field(factory=dict)
    udp: list[UdpSeen] = attrs.field(factory=list)
    udp_flows: dict[int, UdpFlow] = attrs.field(factory=dict)
    #: The recorded datagrams and refusals of every flow, in recorded order.
    datagrams: list[Datagram | Refusal] = attrs.field(factory=list)
    tls: dict[int, TlsNote] = attrs.field(factory=dict)  # by connection: its data is TLS plaintext

    def skim(self, scan):
        """Pass on the (offset, length, record) of ``scan`` that are not notes, keeping the notes."""
        for item in scan:
            note = item[2]
            if isinstance(note, ListenDelay):
                self.listen_delays.setdefault(note.server, note.delay)
            elif isinstance(note, UdpSeen):
                self.udp.append(note)
            elif isinstance(note, UdpFlow):
                self.udp_flows[note.flow] = note
            elif isinstance(note, (Datagram, Refusal)):
                self.datagrams.append(note)
            elif isinstance(note, TlsNote):
                self.tls[note.conn] = note
            else:
                yield item
