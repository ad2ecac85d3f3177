"""The report an import prints: what was taken from the capture and what it lacked.

A capture is evidence, not a recording: retransmissions, reordering, holes
and connections joined mid-way are normal there, and each changes how far the
cassette can be trusted, so the report says so connection by connection.
"""

from __future__ import annotations

from collections.abc import Iterable

from .capture_flows import CaptureFlows
from .divergence import plural
from .events import Direction

__all__ = ["format_report"]


def format_report(
    flows: CaptureFlows,
    mapping: Iterable[str] = (),
    frames: int = 0,
    skipped_link_types: dict[int, int] | None = None,
    truncated_at: int | None = None,
) -> str:
    """Lines for the end of an import: totals, then one line per connection and flow, then the address map."""
    c2s, s2c = Direction.C2S, Direction.S2C
    streams = [s for s in flows.summaries if s.conn is not None]
    lines = [
        f"read {plural(frames, 'frame')}, {plural(flows.packets, 'TCP/UDP packet')}; imported "
        f"{plural(len(streams), 'TCP connection')} and {plural(len(flows.udp_summaries), 'UDP flow')}",
        "  bytes client->server {}, server->client {}".format(
            sum(s.sent[c2s] for s in streams), sum(s.sent[s2c] for s in streams)
        ),
        f"  retransmitted segments dropped: {sum(s.retransmitted for s in streams)} "
        f"({sum(s.duplicate_bytes for s in streams)} duplicate bytes)",
        f"  out-of-order segments placed: {sum(s.placed for s in streams)}",
        f"  gaps (bytes the capture lacks): {sum(len(s.gaps) for s in streams)}",
        f"  connections without a handshake (joined mid-way): {sum(not s.handshake for s in streams)}",
        f"  retransmissions that differed from the first copy (first copy kept): "
        f"{sum(len(s.conflicts) for s in streams)}",
    ]
    if flows.snapped:
        lines.append(f"  packets cut short by the capture's snapshot length: {flows.snapped}")
    for linktype, count in sorted((skipped_link_types or {}).items()):
        lines.append(f"  skipped {plural(count, 'frame')} of unsupported link type {linktype}")
    if truncated_at is not None:
        lines.append(f"  the capture is cut short at byte {truncated_at}: imported what came before")
    for s in streams:
        notes = [s.ending]
        if not s.handshake:
            notes.append("no handshake")
        if s.retransmitted:
            notes.append(f"{s.retransmitted} retransmitted")
        if s.placed:
            notes.append(f"{s.placed} out of order")
        notes += [f"gap of {g.length} bytes at {d.value} offset {g.offset}" for d, g in s.gaps]
        notes += [f"differing retransmission at {d.value} offset {offset}" for d, offset in s.conflicts]
        lines.append(
            f"conn {s.conn}: {s.client} -> {s.server}: {s.sent[c2s]} bytes c2s, {s.sent[s2c]} bytes s2c; "
            + ", ".join(notes)
        )
    for u in flows.udp_summaries:
        lines.append(
            f"udp flow {u.flow}: {u.client} -> {u.server}: {plural(u.datagrams, 'datagram')}, "
            f"{u.sent[c2s]} bytes c2s, {u.sent[s2c]} bytes s2c"
        )
    mapping = list(mapping)
    if mapping:
        lines.append("addresses (capture -> sandbox):")
        lines += [f"  {line}" for line in mapping]
    return "\n".join(lines)
