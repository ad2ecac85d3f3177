"""What a replay found different from its recording, and how to tell a person.

Every finding names its recorded connection (number, key and ordinal among the
connections of that key) so a report reads without the cassette at hand. A
:class:`DivergenceReport` gathers findings and formats the text a failing test
shows.
"""

from __future__ import annotations

import textwrap

import attrs

from .addressing import ConnectionKey, Endpoint
from .coverage import TLS_ADVICE, starts_tls_record
from .events import Direction

__all__ = [
    "CONTEXT_AFTER",
    "CONTEXT_BEFORE",
    "ByteMismatch",
    "Divergence",
    "DivergenceReport",
    "ExtraBytes",
    "MissingBytes",
    "MissingReset",
    "Stall",
    "UdpNotReplayed",
    "UdpDiverged",
    "UnexpectedReset",
    "UnrecordedConnection",
    "UnusedRecording",
    "ordinal_word",
    "plural",
]

#: Bytes of agreed context kept before the point where two streams part.
CONTEXT_BEFORE = 16
#: Bytes of each stream kept from the point where they part.
CONTEXT_AFTER = 48

# The formatted view shows a narrower window than the stored snippets so that
# a row of hex and text fits a terminal.
_VIEW_BEFORE = 8
_VIEW_AFTER = 16


def _direction(value: object) -> Direction:
    return Direction(value)


def _snippet_start(offset_attribute: str):
    def default(self) -> int:
        return max(0, getattr(self, offset_attribute) - CONTEXT_BEFORE)

    return attrs.Factory(default, takes_self=True)


@attrs.frozen
class ByteMismatch:
    """The live bytes of ``direction`` first differ from the recorded ones at ``offset``.

    ``expected`` (recorded) and ``actual`` (live) are snippets of the two
    streams, both starting at stream offset ``snippet_offset``, so a report
    can show the difference in its context.
    """

    conn: int
    key: ConnectionKey
    ordinal: int
    direction: Direction = attrs.field(converter=_direction)
    offset: int
    expected: bytes
    actual: bytes
    snippet_offset: int = _snippet_start("offset")

    @property
    def summary(self) -> str:
        return f"{self.direction.value}: bytes differ at offset {self.offset}"


@attrs.frozen
class ExtraBytes:
    """The live side of ``direction`` sent more than was recorded.

    ``offset`` is the recorded length, where the live stream goes on alone;
    ``sent`` is how many bytes the live side had sent when the finding was
    taken. The snippets start at ``snippet_offset``; ``expected`` ends at the
    recorded end.
    """

    conn: int
    key: ConnectionKey
    ordinal: int
    direction: Direction = attrs.field(converter=_direction)
    offset: int
    sent: int
    expected: bytes
    actual: bytes
    snippet_offset: int = _snippet_start("offset")

    @property
    def summary(self) -> str:
        return (
            f"{self.direction.value}: extra bytes: the {self.direction.sender} sent {self.sent} bytes, "
            f"{self.offset} were recorded"
        )


@attrs.frozen
class MissingBytes:
    """The live side of ``direction`` finished having sent fewer bytes than recorded.

    The snippets start at ``snippet_offset``; ``actual`` ends where the live
    stream ended, ``expected`` goes on with the bytes that never came.
    """

    conn: int
    key: ConnectionKey
    ordinal: int
    direction: Direction = attrs.field(converter=_direction)
    sent: int
    recorded: int
    expected: bytes
    actual: bytes
    snippet_offset: int = _snippet_start("sent")

    @property
    def offset(self) -> int:
        return self.sent

    @property
    def summary(self) -> str:
        return (
            f"{self.direction.value}: missing bytes: the {self.direction.sender} sent {self.sent} "
            f"of {self.recorded} recorded bytes"
        )


@attrs.frozen
class UnexpectedReset:
    """The live sender of ``direction`` reset the connection; the recorded one did not."""

    conn: int
    key: ConnectionKey
    ordinal: int
    direction: Direction = attrs.field(converter=_direction)

    @property
    def summary(self) -> str:
        side = self.direction.sender
        return f"{self.direction.value}: the {side} reset the connection; the recorded {side} did not"


@attrs.frozen
class MissingReset:
    """The recorded sender of ``direction`` reset the connection; the live one did not."""

    conn: int
    key: ConnectionKey
    ordinal: int
    direction: Direction = attrs.field(converter=_direction)

    @property
    def summary(self) -> str:
        side = self.direction.sender
        return f"{self.direction.value}: the recorded {side} reset the connection; the live {side} did not"


@attrs.frozen
class UnrecordedConnection:
    """A connection opened on replay that no recording matches; the shell refuses it."""

    client: Endpoint
    server: Endpoint

    @property
    def key(self) -> ConnectionKey:
        return ConnectionKey.of(self.client, self.server)

    @property
    def summary(self) -> str:
        return "opened on replay but no recording matches it; it was refused"


@attrs.frozen
class UnusedRecording:
    """A recorded connection that no live connection opened during replay."""

    conn: int
    key: ConnectionKey
    ordinal: int

    @property
    def summary(self) -> str:
        return "recorded but never opened on replay"


@attrs.frozen
class Stall:
    """Replay of a connection waited ``waited`` seconds for the live side of ``direction``.

    Then the rest of the recording was played out, so the connection ended.
    ``waiting_for`` says in words which bytes or which close it needed.
    """

    conn: int
    key: ConnectionKey
    ordinal: int
    direction: Direction = attrs.field(converter=_direction)
    waiting_for: str
    waited: float

    @property
    def summary(self) -> str:
        return f"{self.direction.value}: stalled {self.waited:.1f} s waiting for {self.waiting_for}"


@attrs.frozen
class UdpNotReplayed:
    """UDP went live between hosts on replay: nothing recorded matched its flow."""

    client: str
    server: Endpoint
    datagrams: int

    @property
    def summary(self) -> str:
        word = "datagram" if self.datagrams == 1 else "datagrams"
        return (
            f"UDP not replayed: {self.datagrams} {word} went live between {self.client} and "
            f"{self.server}; no recorded flow matched, so this traffic was not checked"
        )


@attrs.frozen
class UdpDiverged:
    """A recorded UDP flow went otherwise on replay.

    ``what`` says how: ``differs`` (``index`` is the live datagram's number
    among those its sender sent in the flow, ``offset`` the first differing
    byte), ``extra`` (a live datagram past the recording), ``missing``
    (``index`` recorded datagrams of that sender never sent) or ``unused`` (a
    recorded flow no client used). ``direction`` says whose datagrams: the
    client's (``c2s``) or, with the server running, the server's.
    """

    client: str
    server: Endpoint
    flow: int
    what: str = attrs.field(validator=attrs.validators.in_(("differs", "extra", "missing", "unused")))
    index: int = 0
    offset: int = 0
    expected: bytes = b""
    actual: bytes = b""
    direction: Direction = attrs.field(default=Direction.C2S, converter=_direction)

    @property
    def summary(self) -> str:
        sender = self.direction.sender
        if self.what == "differs":
            return (
                f"recorded flow {self.flow}, {sender} datagram {self.index}: differs at byte {self.offset} "
                f"(expected {self.expected[:32]!r}, got {self.actual[:32]!r})"
            )
        if self.what == "extra":
            return f"recorded flow {self.flow}: {sender} datagram {self.index} has no recording: {self.actual[:32]!r}"
        if self.what == "missing":
            return f"recorded flow {self.flow}: {self.index} recorded {sender} datagram(s) never sent"
        return f"recorded flow {self.flow}: never used on replay"


Divergence = (
    ByteMismatch
    | ExtraBytes
    | MissingBytes
    | UnexpectedReset
    | MissingReset
    | UnrecordedConnection
    | UnusedRecording
    | Stall
    | UdpNotReplayed
    | UdpDiverged
)


def ordinal_word(n: int) -> str:
    """``1`` -> ``1st``, ``2`` -> ``2nd``, ``11`` -> ``11th``, ``23`` -> ``23rd``."""
    if 10 <= n % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def plural(n: int, word: str) -> str:
    """``1 connection``, ``2 connections``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _connection_label(item: Divergence) -> str:
    if isinstance(item, (UdpNotReplayed, UdpDiverged)):
        return f"UDP {item.client} -> {item.server}"
    if isinstance(item, UnrecordedConnection):
        return f"{item.client} -> {item.server}"
    return f"#{item.conn} {item.key} ({ordinal_word(item.ordinal)} of that key)"


def _printable(byte: int) -> str:
    return chr(byte) if 0x20 <= byte < 0x7F else "."


def _side_by_side(expected: bytes, actual: bytes, snippet_offset: int, offset: int) -> list[str]:
    """Two aligned rows of hex then text, and a row of carets under the byte at ``offset``."""
    start = max(snippet_offset, offset - _VIEW_BEFORE)
    stop = offset + _VIEW_AFTER
    rows = []
    for label, data in (("expected:", expected), ("actual:", actual)):
        window = data[start - snippet_offset : stop - snippet_offset]
        rows.append((label, window))
    width = max(len(window) for _, window in rows)
    lines = []
    for label, window in rows:
        hex_part = " ".join(f"{b:02x}" for b in window).ljust(3 * width - 1)
        text = "".join(_printable(b) for b in window)
        lines.append(f"    {label:<10}{hex_part}  {text}".rstrip())
    column = offset - start
    indent = 4 + 10
    marker = " " * (indent + 3 * column) + "^^"
    marker = marker.ljust(indent + 3 * width - 1 + 2 + column) + "^"
    lines.append(marker)
    return lines


@attrs.frozen
class DivergenceReport:
    """Everything a replay found, in a form a test failure can show.

    Behaves as a sized collection of findings, so ``len(report)`` counts them
    and an empty report is falsy like an empty list; ask :attr:`ok` to know
    whether the replay matched.
    """

    items: tuple[Divergence, ...] = attrs.field(converter=tuple, default=())
    #: (conn, direction) pairs whose recorded bytes start with a TLS record, so
    #: a difference there is explained; found from the snippets too where they
    #: reach back to the stream's start.
    tls: frozenset = attrs.field(converter=frozenset, default=frozenset())
    #: The sandbox's mode: a report of a live or record run compared nothing.
    mode: str = attrs.field(default="replay", kw_only=True)

    @property
    def ok(self) -> bool:
        return not self.items

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def by_connection(self) -> dict[int | None, tuple[Divergence, ...]]:
        """Findings grouped by recorded connection number, in that order.

        Connections opened on replay with no recording, and UDP that went
        live, have no number; they are grouped under ``None``, last.
        """
        groups: dict[int | None, list[Divergence]] = {}
        for item in self.items:
            conn = getattr(item, "conn", None)
            groups.setdefault(conn, []).append(item)
        order = sorted(c for c in groups if c is not None) + ([None] if None in groups else [])
        return {conn: tuple(groups[conn]) for conn in order}

    def _connection_count(self) -> int:
        recorded = {item.conn for item in self.items if hasattr(item, "conn")}
        unrecorded = {item for item in self.items if isinstance(item, UnrecordedConnection)}
        return len(recorded) + len(unrecorded)

    def is_tls(self, item: Divergence) -> bool:
        """Whether ``item`` is a byte difference where the recorded bytes are TLS."""
        if not isinstance(item, (ByteMismatch, ExtraBytes, MissingBytes)):
            return False
        if (item.conn, item.direction) in self.tls:
            return True
        return item.snippet_offset == 0 and starts_tls_record(item.expected)

    def format(self) -> str:
        """A summary line, then one line per finding with a hex view where bytes differ."""
        if self.mode != "replay":
            return f"no replay: the sandbox ran in {self.mode} mode, so nothing was compared with a recording"
        if self.ok:
            return "replay matched the recording: no divergences"
        summary = f"{plural(len(self.items), 'divergence')} in "
        summary += plural(self._connection_count(), "connection")
        flows = len({(i.client, i.server) for i in self.items if isinstance(i, (UdpNotReplayed, UdpDiverged))})
        if flows:
            summary += f" and {plural(flows, 'UDP flow')}"
        lines = [summary]
        for items in self.by_connection().values():
            explained = False
            for item in items:
                lines.append(f"{_connection_label(item)}, {item.summary}")
                if isinstance(item, (ByteMismatch, ExtraBytes, MissingBytes)):
                    lines.extend(_side_by_side(item.expected, item.actual, item.snippet_offset, item.offset))
                if not explained and self.is_tls(item):
                    explained = True
                    side = item.direction.sender
                    text = f"The recorded {side} bytes are a TLS handshake. {TLS_ADVICE}"
                    lines.extend(textwrap.wrap(text, 100, initial_indent="    ", subsequent_indent="    "))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()
