"""Shadowing: what a candidate server answered, compared with what the primary answered.

A shadow mirrors every connection to a primary server to a candidate server:
the candidate gets the client's bytes as they pass, its answers are read and
dropped. :class:`AnswerDiff` compares the two answers of one connection as
they come, keeping no more than it must (the part one side sent that the
other has not yet), so a long conversation costs a bounded amount of memory;
with ignore rules it keeps both answers whole (up to the same bound), since a
rule's match may span any stretch. The shell feeds bytes and ends; nothing
here reads a clock or a socket.
"""

from __future__ import annotations

import re

import attrs

from ..errors import ConfigError
from .addressing import ConnectionKey, Endpoint
from .divergence import CONTEXT_AFTER, CONTEXT_BEFORE, ByteMismatch, ExtraBytes, MissingBytes, Stall
from .events import Direction
from .noise import IgnoreRule, compare, ignore_rules
from .prefix import common_prefix
from .validation import positive_number

__all__ = [
    "AnswerDiff",
    "ShadowSpec",
    "endpoint_parts",
    "parse_shadow_flag",
    "shadow_pairs",
    "PATIENCE",
    "BUFFER",
]

S2C = Direction.S2C

#: Seconds a candidate has, once the primary's connection has ended, to finish its answer
#: (and seconds it has to accept the mirrored connection at all).
PATIENCE = 5.0
#: Bytes one side may run ahead of the other before the shadow gives up: the client's bytes
#: the candidate has not yet taken, or one answer's bytes the other has not yet matched.
BUFFER = 4 << 20

_ENDPOINT = re.compile(r"\[(?P<v6>[0-9A-Fa-f:.]+)\](?::(?P<port6>\d+))?|(?P<host>[^:\s]+)(?::(?P<port>\d+))?")


def endpoint_parts(text: str) -> tuple[str, int | None]:
    """``"10.0.0.1:80"``, ``"web:80"``, ``"[fd00::1]:80"`` or a bare host: (host, port or None)."""
    match = _ENDPOINT.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(f"expected HOST:PORT (an address or a host name, e.g. 10.0.0.1:80), got {text!r}")
    host = match["v6"] or match["host"]
    port = match["port6"] or match["port"]
    if port is not None and not 0 < int(port) < 65536:
        raise ConfigError(f"a port is a number from 1 to 65535, got {port} in {text!r}")
    return host, None if port is None else int(port)


def parse_shadow_flag(text: str) -> tuple[str, str]:
    """``"PRIMARY=CANDIDATE"`` (each HOST:PORT; the candidate's port defaults to the primary's)."""
    primary, sep, candidate = text.partition("=")
    if not sep or not primary.strip() or not candidate.strip():
        raise ConfigError(f"--shadow takes PRIMARY=CANDIDATE, e.g. 10.0.0.1:80=10.0.0.3:80, got {text!r}")
    endpoint_parts(primary)
    endpoint_parts(candidate)
    return primary.strip(), candidate.strip()


def shadow_pairs(value: object) -> tuple[tuple[str, str], ...]:
    """Shadows from ``"PRIMARY=CANDIDATE"``, a list of those or of ``(primary, candidate)`` pairs,
    or a dict ``{primary: candidate}``; each side ``HOST:PORT`` (the candidate's port may be left out)."""
    if isinstance(value, str):
        value = [value]
    elif isinstance(value, dict):
        value = list(value.items())
    try:
        items = list(value)  # type: ignore[call-overload]
    except TypeError:
        raise ConfigError(
            f"shadow takes 'PRIMARY=CANDIDATE' strings, e.g. ['10.0.0.1:80=10.0.0.3:80'], got {value!r}"
        ) from None
    pairs = []
    for item in items:
        if isinstance(item, str):
            pairs.append(parse_shadow_flag(item))
        elif isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item):
            pairs.append(parse_shadow_flag(f"{item[0]}={item[1]}"))
        else:
            raise ConfigError(f"a shadow is 'PRIMARY=CANDIDATE' or a (primary, candidate) pair, got {item!r}")
    for primary, _ in pairs:
        if endpoint_parts(primary)[1] is None:
            raise ConfigError(f"a shadow's primary needs its port: HOST:PORT, got {primary!r}")
    return tuple(pairs)


def _buffer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"a shadow's buffer is a number of bytes above 0, got {value!r}")
    return value


@attrs.frozen
class ShadowSpec:
    """Mirror connections to ``primary`` to ``candidate``; compare the answers but for ``ignore``.

    ``patience``: seconds the candidate has to accept a connection, and to finish its answer
    once the primary's connection has ended; ``buffer``: bytes the candidate may fall behind.
    """

    primary: Endpoint
    candidate: Endpoint
    ignore: tuple[IgnoreRule, ...] = attrs.field(default=(), converter=ignore_rules)
    patience: float = attrs.field(default=PATIENCE, converter=positive_number)
    buffer: int = attrs.field(default=BUFFER, converter=_buffer)

    def __attrs_post_init__(self) -> None:
        if self.primary == self.candidate:
            raise ConfigError(f"a shadow's candidate must differ from its primary, both are {self.primary}")
        for end in (self.primary, self.candidate):
            if end.port == 0:
                raise ConfigError(f"a shadow needs a port for {end.host}, got port 0")

    @property
    def rules(self) -> tuple[IgnoreRule, ...]:
        """The ignore rules that apply to the answers (the server's direction, the primary's port)."""
        return tuple(rule for rule in self.ignore if rule.applies(self.primary.port, S2C))


@attrs.define
class AnswerDiff:
    """Two answers of one connection, compared as they come; see the module docstring.

    ``offset`` is where the kept bytes start in both streams (the bytes before it agreed);
    ``context`` the agreed bytes just before it, for the report.
    """

    rules: tuple[IgnoreRule, ...] = ()
    limit: int = BUFFER
    primary: bytearray = attrs.field(factory=bytearray)
    candidate: bytearray = attrs.field(factory=bytearray)
    offset: int = 0
    context: bytes = b""
    sent: dict = attrs.field(factory=lambda: {"primary": 0, "candidate": 0})
    parted_at: int | None = None  # where the answers first differ (without rules)
    overflow: str = ""  # which side ran too far ahead of the other, when one did

    def feed(self, side: str, data: bytes | memoryview) -> None:
        """Bytes of ``side`` (``"primary"`` or ``"candidate"``)."""
        self.sent[side] += len(data)
        if self.parted_at is not None:
            kept = getattr(self, side)
            room = self.parted_at + CONTEXT_AFTER - self.offset - len(kept)
            if room > 0:
                kept += data[:room]
            return
        getattr(self, side).extend(data)
        if not self.rules:
            self._advance()
        if len(self.primary) > self.limit or len(self.candidate) > self.limit:
            self.overflow = "primary" if len(self.primary) > self.limit else "candidate"

    def _advance(self) -> None:
        """Drop what both sides agree on, keeping a little context; note where they part."""
        n = min(len(self.primary), len(self.candidate))
        if n == 0:
            return
        same = common_prefix(self.primary[:n], self.candidate[:n])
        if same < n:
            self.parted_at = self.offset + same
            keep = CONTEXT_AFTER + same
            del self.primary[keep:]
            del self.candidate[keep:]
            return
        self.context = (self.context + bytes(self.primary[max(0, n - CONTEXT_BEFORE) : n]))[-CONTEXT_BEFORE:]
        del self.primary[:n]
        del self.candidate[:n]
        self.offset += n

    @property
    def differs(self) -> bool:
        """Whether a difference is already certain (without rules, before either side ends)."""
        return self.parted_at is not None

    def findings(
        self, conn: int, key: ConnectionKey, ordinal: int, *, complete: bool, cut: bool, waited: float
    ):
        """What differs, once the connection is over.

        ``complete``: the candidate ended its answer (else it was still silent after ``waited``
        seconds: a shorter answer is a stall); ``cut``: the connection was reset, so only the
        bytes both sides sent are compared.
        """
        where = (conn, key, ordinal, S2C)
        if self.rules:
            return self._findings_with_rules(where, complete=complete, cut=cut, waited=waited)
        if self.parted_at is not None:
            return [self._mismatch(where, self.parted_at)]
        if cut or len(self.primary) == len(self.candidate):
            return []
        if self.primary:
            if not complete:
                return [self._stall(where, waited)]
            return [self._missing(where)]
        return [self._extra(where)]

    def _findings_with_rules(self, where, *, complete: bool, cut: bool, waited: float):
        primary, candidate = bytes(self.primary), bytes(self.candidate)
        if cut:
            n = min(len(primary), len(candidate))
            primary, candidate = primary[:n], candidate[:n]
        at = compare(primary, candidate, self.rules)
        if at is None:
            return []
        if len(candidate) > len(primary) and compare(primary, candidate[: len(primary)], self.rules) is None:
            return [self._extra(where)]
        if at >= len(candidate):
            return [self._missing(where) if complete else self._stall(where, waited)]
        return [self._mismatch(where, at)]

    def _snippets(self, at: int) -> tuple[int, bytes, bytes]:
        """Where the snippets start, and each side's bytes from there, around stream offset ``at``."""
        start = max(0, at - CONTEXT_BEFORE)
        if start < self.offset:  # reaches back into the agreed bytes that were dropped
            before = self.context[len(self.context) - (self.offset - start) :]
            start = self.offset - len(before)
        else:
            before = b""
        end = at + CONTEXT_AFTER - self.offset
        first = start - self.offset + len(before)
        primary = before + bytes(self.primary[max(0, first) : end])
        candidate = before + bytes(self.candidate[max(0, first) : end])
        return start, primary, candidate

    def _mismatch(self, where, at: int) -> ByteMismatch:
        start, primary, candidate = self._snippets(at)
        return ByteMismatch(*where, offset=at, expected=primary, actual=candidate, snippet_offset=start)

    def _missing(self, where) -> MissingBytes:
        sent = self.sent["candidate"]
        start, primary, candidate = self._snippets(sent)
        return MissingBytes(
            *where,
            sent=sent,
            recorded=self.sent["primary"],
            expected=primary,
            actual=candidate,
            snippet_offset=start,
        )

    def _extra(self, where) -> ExtraBytes:
        at = self.sent["primary"]
        start, primary, candidate = self._snippets(at)
        return ExtraBytes(
            *where,
            offset=at,
            sent=self.sent["candidate"],
            expected=primary,
            actual=candidate,
            snippet_offset=start,
        )

    def _stall(self, where, waited: float) -> Stall:
        missing = self.sent["primary"] - self.sent["candidate"]
        what = f"the candidate's last {missing} byte{'s' if missing != 1 else ''} (it sent {self.sent['candidate']})"
        return Stall(*where, waiting_for=what, waited=waited)
