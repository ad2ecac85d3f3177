"""One direction of a faulty link: what happens to each packet that takes it.

Given a packet's length and the time it left its host, a :class:`LinkShaper`
decides whether it is lost, when it arrives, whether it arrives twice and
whether a byte of it is flipped. It never sleeps and holds no packet: the
shell keeps the packets and writes them when they are due. Every random
choice comes from the ``random.Random`` it is given, so the same seed and the
same packets give the same decisions.

The stages follow ``tc netem``'s order: loss, then the rate limit (a token
bucket feeding a queue with tail drop), duplication, corruption, then delay.
Delay never reorders packets (each arrives no earlier than the one before it)
unless ``reorder`` picks a packet, which then skips the delay, as in netem.
"""

from __future__ import annotations

import random

import attrs

from .faults import Distribution, LinkFaults

__all__ = ["Delivery", "LinkShaper", "flip_byte"]

#: When a packet arrives, and where in it a byte is flipped (a fraction in [0, 1), or None).
Delivery = tuple[float, "float | None"]

LOSS = "fault: loss"
QUEUE_FULL = "fault: queue full"


@attrs.define
class LinkShaper:
    """The state of one direction of a link: last arrival, the token bucket, the burst-loss state."""

    faults: LinkFaults
    rng: random.Random
    last_arrival: float = float("-inf")
    # The token bucket, as of ``free_at``: when the last queued packet leaves, and the tokens then.
    free_at: float = float("-inf")
    tokens: float = 0.0
    bad: bool = False  # Gilbert-Elliott state
    started: bool = False

    def decide(self, length: int, now: float) -> tuple[str | None, tuple[Delivery, ...]]:
        """(reason it was dropped, or None; the deliveries: none, one, or two for a duplicate)."""
        faults = self.faults
        rng = self.rng
        if self._lost(rng):
            return LOSS, ()
        depart = now
        if faults.rate is not None:
            depart = self._rate(length, now)
            if depart is None:
                return QUEUE_FULL, ()
        copies = 2 if faults.duplicate and rng.random() < faults.duplicate else 1
        flip = rng.random() if faults.corrupt and rng.random() < faults.corrupt else None
        if faults.reorder and rng.random() < faults.reorder:
            at = depart
        else:
            at = max(self.last_arrival, depart + self._delay(rng))
            self.last_arrival = at
        if copies == 1:
            return None, ((at, flip),)
        return None, ((at, flip), (at, None))

    def _lost(self, rng: random.Random) -> bool:
        faults = self.faults
        model = faults.gemodel
        if model is not None:
            if self.bad:
                if rng.random() < model.r:
                    self.bad = False
            elif rng.random() < model.p:
                self.bad = True
            chance = model.bad_loss if self.bad else model.good_loss
            if chance and rng.random() < chance:
                return True
        return bool(faults.loss) and rng.random() < faults.loss

    def _delay(self, rng: random.Random) -> float:
        faults = self.faults
        if not faults.jitter:
            return faults.latency
        if faults.distribution is Distribution.NORMAL:
            offset = rng.gauss(0.0, faults.jitter)
        else:
            offset = rng.uniform(-faults.jitter, faults.jitter)
        return max(0.0, faults.latency + offset)

    def _rate(self, length: int, now: float) -> float | None:
        """When the packet leaves the token bucket, or None when the queue is full (tail drop)."""
        faults = self.faults
        bytes_per_second = faults.rate
        if not self.started:
            self.started = True
            self.free_at, self.tokens = now, faults.burst
        if now > self.free_at:
            self.tokens = min(faults.burst, self.tokens + (now - self.free_at) * bytes_per_second)
            self.free_at = now
        waiting = (self.free_at - now) * bytes_per_second
        if waiting > 0 and waiting + length > faults.queue_limit:
            return None
        if self.tokens >= length:
            self.tokens -= length
        else:
            self.free_at += (length - self.tokens) / bytes_per_second
            self.tokens = 0.0
        return self.free_at


def _payload_start(buf, n: int) -> int:
    """Where the transport payload of an IPv4 or IPv6 packet starts (``n`` if unknown)."""
    version = buf[0] >> 4
    if version == 4:
        offset, proto = (buf[0] & 0x0F) << 2, buf[9]
    elif version == 6 and n >= 40:
        offset, proto = 40, buf[6]
    else:
        return n
    if proto == 6 and n >= offset + 20:
        return offset + ((buf[offset + 12] >> 4) << 2)
    if proto in (17, 1, 58):
        return offset + 8
    return n


def flip_byte(buf: bytearray, n: int, where: float) -> int:
    """Flip one byte of the packet's payload (``where`` a fraction in [0, 1)), so the
    receiver's checksum fails; a packet with no payload gets its transport checksum
    flipped instead. Returns the offset flipped (-1: nothing to flip)."""
    start = _payload_start(buf, n)
    if start < n:
        offset = start + min(n - start - 1, int(where * (n - start)))
    else:
        version = buf[0] >> 4
        header = (buf[0] & 0x0F) << 2 if version == 4 else 40
        proto = buf[9] if version == 4 else buf[6]
        checksum = {6: 16, 17: 6, 1: 2, 58: 2}.get(proto)
        if checksum is None or header + checksum + 1 >= n:
            return -1
        offset = header + checksum + 1
    buf[offset] ^= 0xFF
    return offset
