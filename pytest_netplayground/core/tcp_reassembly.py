"""One direction of a captured TCP stream put back in order.

A capture shows segments as the wire carried them: out of order, repeated,
overlapping, sometimes missing. This turns them into the byte stream the
receiver read, the way a receiver's TCP does: bytes are placed by sequence
number, the first copy of a byte wins, and a byte is released only once every
byte before it is there. What could not be placed (a hole the capture never
filled) is left for the caller to declare a gap.

Offsets are counted from the stream's base (the byte after the SYN, or the
first byte the capture saw) and are unbounded: 32-bit sequence numbers are
unwrapped relative to the next expected byte, so streams over 4 GiB work.
"""

from __future__ import annotations

import bisect

import attrs

__all__ = ["Conflict", "Gap", "HalfStream", "MAX_PENDING", "HISTORY"]

_MOD = 1 << 32
_HALF = 1 << 31

#: Bytes kept beyond the next expected byte before the hole in front of them is
#: declared a gap: a capture that lost a segment must not grow memory forever.
MAX_PENDING = 64 << 20

#: Bytes of already released data kept to compare retransmissions with.
HISTORY = 256 << 10


@attrs.frozen
class Gap:
    """Bytes ``[offset, offset + length)`` of a direction that the capture does not hold."""

    offset: int
    length: int


@attrs.frozen
class Conflict:
    """A retransmission whose bytes differ from the first copy at ``offset`` (the first copy was kept)."""

    offset: int
    length: int


@attrs.define
class HalfStream:
    """The bytes one side sent, placed by sequence number; ``base`` is the sequence number of offset 0."""

    base: int
    next: int = 0  # offset of the next byte to release
    pending: dict[int, bytes] = attrs.field(factory=dict)  # offset -> bytes, beyond ``next``
    starts: list[int] = attrs.field(factory=list)  # sorted keys of ``pending``
    pending_bytes: int = 0
    history: bytearray = attrs.field(factory=bytearray)  # the last released bytes, ending at ``next``
    fin: int | None = None  # offset of the FIN, once seen
    retransmitted: int = 0  # segments whose bytes were all there already
    duplicate_bytes: int = 0
    placed: int = 0  # segments that arrived ahead of a hole and were released later
    conflicts: list[Conflict] = attrs.field(factory=list)
    gaps: list[Gap] = attrs.field(factory=list)
    _early: set[int] = attrs.field(factory=set)  # pending offsets that arrived out of order

    def offset_of(self, seq: int) -> int:
        """The stream offset of sequence number ``seq``, taken as the one nearest ``next``."""
        delta = (seq - self.base - self.next) % _MOD
        if delta >= _HALF:
            delta -= _MOD
        return self.next + delta

    def add(self, seq: int, data: bytes) -> bytes:
        """Place a segment's payload; returns the bytes that became readable (maybe none)."""
        if not data:
            return b""
        start = self.offset_of(seq)
        end = start + len(data)
        if end <= self.next:
            if not (len(data) == 1 and start == self.next - 1):  # a keep-alive probe's filler byte
                self._compare_released(start, data)
            self.retransmitted += 1
            self.duplicate_bytes += len(data)
            return b""
        if start < self.next:
            self._compare_released(start, data[: self.next - start])
            self.duplicate_bytes += self.next - start
            data = data[self.next - start :]
            start = self.next
        fresh = self._insert(start, data)
        if not fresh:
            self.retransmitted += 1
        return self._release()

    def _compare_released(self, start: int, data: bytes) -> None:
        """Report where an old copy of released bytes differs from what was released."""
        kept_from = self.next - len(self.history)
        lo = max(start, kept_from)
        hi = min(start + len(data), self.next)
        if lo >= hi:
            return
        old = self.history[lo - kept_from : hi - kept_from]
        new = data[lo - start : hi - start]
        if old != new:
            self._conflict(lo, old, new)

    def _conflict(self, at: int, old, new) -> None:
        first = next(i for i, (a, b) in enumerate(zip(old, new)) if a != b)
        self.conflicts.append(Conflict(at + first, len(old) - first))

    def _insert(self, start: int, data: bytes) -> bool:
        """Keep the parts of ``data`` not already pending (the first copy wins); True if any was new."""
        end = start + len(data)
        i = bisect.bisect_right(self.starts, start) - 1
        if i < 0:
            i = 0
        cursor = start
        pieces: list[tuple[int, bytes]] = []
        while i < len(self.starts) and self.starts[i] < end:
            p_start = self.starts[i]
            p_data = self.pending[p_start]
            p_end = p_start + len(p_data)
            i += 1
            if p_end <= cursor:
                continue
            if p_start > cursor:
                pieces.append((cursor, data[cursor - start : p_start - start]))
            lo, hi = max(cursor, p_start), min(end, p_end)
            old, new = p_data[lo - p_start : hi - p_start], data[lo - start : hi - start]
            self.duplicate_bytes += hi - lo
            if old != new:
                self._conflict(lo, old, new)
            cursor = max(cursor, p_end)
        if cursor < end:
            pieces.append((cursor, data[cursor - start :]))
        for p_start, p_data in pieces:
            self.pending[p_start] = p_data
            bisect.insort(self.starts, p_start)
            self.pending_bytes += len(p_data)
            if p_start > self.next:
                self._early.add(p_start)
        return bool(pieces)

    def _release(self) -> bytes:
        out = bytearray()
        while self.starts and self.starts[0] == self.next:
            start = self.starts.pop(0)
            data = self.pending.pop(start)
            self.pending_bytes -= len(data)
            if start in self._early:
                self._early.discard(start)
                self.placed += 1
            out += data
            self.next += len(data)
        if out:
            self.history += out
            if len(self.history) > HISTORY:
                del self.history[: len(self.history) - HISTORY]
        return bytes(out)

    @property
    def hole(self) -> bool:
        """Whether bytes are waiting behind a missing stretch."""
        return bool(self.starts)

    @property
    def overfull(self) -> bool:
        return self.pending_bytes > MAX_PENDING

    @property
    def finished(self) -> bool:
        """Whether every byte up to the FIN has been released."""
        return self.fin is not None and self.next >= self.fin

    def missing_before(self, offset: int) -> Gap | None:
        """The stretch before ``offset`` (or before the first pending byte) the capture lacks, if any."""
        if self.starts:
            offset = self.starts[0] if offset <= self.next else min(offset, self.starts[0])
        if offset <= self.next:
            return None
        return Gap(self.next, offset - self.next)

    def skip(self, gap: Gap) -> bytes:
        """Go on past ``gap`` as if its bytes had been released; returns what became readable after it."""
        self.gaps.append(gap)
        self.next = gap.offset + gap.length
        self.history.clear()
        # Pending pieces that now lie (partly) behind ``next`` are trimmed.
        while self.starts and self.starts[0] < self.next:
            start = self.starts.pop(0)
            data = self.pending.pop(start)
            self.pending_bytes -= len(data)
            self._early.discard(start)
            if start + len(data) > self.next:
                rest = data[self.next - start :]
                self.pending[self.next] = rest
                self.starts.insert(0, self.next)
                self.pending_bytes += len(rest)
                break
        return self._release()

    def cut(self, gap: Gap) -> None:
        """Stop at ``gap``: what lies beyond it is dropped."""
        self.gaps.append(gap)
        self.pending.clear()
        self.starts.clear()
        self._early.clear()
        self.pending_bytes = 0
