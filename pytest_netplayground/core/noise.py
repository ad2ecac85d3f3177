"""Noise: the parts of a conversation that may differ from run to run.

A server's ``Date`` header, PostgreSQL's BackendKeyData, a session id: bytes
that change on every run although nothing is wrong. Replay compares the live
side's turns with the recorded ones; noise tells that comparison what to
overlook. It comes from two places:

* ignore rules (:class:`IgnoreRule`), regular expressions the user gives, each
  optionally scoped to a server port and a direction: a region one of them
  matches may differ in content and in length, on both sides;
* learned noise (:class:`LearnedNoise`): the byte ranges of recorded turns that
  differed between two recordings of the same run (see :func:`learn`); on
  replay anything, of any length, may stand in their place.

:class:`Noise` gathers both, with the set of hosts whose sending is checked
at all, and hands the replay a comparator for each turn.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping

import attrs

from ..errors import ConfigError
from .events import ConnectionOpened, Data, Direction, HostInfo
from .prefix import common_prefix
from .turns import split_turns

__all__ = ["IgnoreRule", "LearnedNoise", "Noise", "check_hosts", "ignore_rules", "learn", "resolve_check"]

#: Differing middles of two turns up to this size are diffed byte by byte;
#: larger ones (after their common prefix and suffix) become one span.
DIFF_CAP = 16 * 1024
#: Spans closer than this many bytes are joined: a byte that happened to agree
#: between two random values is no evidence that it is fixed.
COALESCE_GAP = 4
# A span of these bytes grows over its neighbours of this set, so a learned
# region covers a whole value (a date, a number, a token) rather than the few
# bytes that happened to differ between two runs a second apart.
_VALUE_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 :.,+-/_")
# Where a value starts: a span never grows left past a "name: " separator.
_SEPARATOR = b": "

# Masked regions and learned gaps are compared in a text made of the bytes as
# latin-1 characters: this character is outside latin-1, so it stands for a
# masked region and never equals a byte.
_MASK = "\u0100"

_RULE_TEXT = re.compile(r"(?:(\d{1,5}):)?(?:(c2s|s2c):)?(.*)", re.DOTALL)

Comparator = Callable[[bytes, bytes], "int | None"]


def _compile(pattern: object) -> re.Pattern[bytes]:
    if isinstance(pattern, re.Pattern):
        if isinstance(pattern.pattern, bytes):
            return pattern
        pattern = pattern.pattern
    if isinstance(pattern, str):
        pattern = pattern.encode("utf-8")
    if not isinstance(pattern, bytes):
        raise ConfigError(f"an ignore rule needs a regular expression, got {pattern!r}")
    if not pattern:
        raise ConfigError("an ignore rule's regular expression is empty; give one that matches the noise")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(
            f"bad regular expression {pattern.decode('utf-8', 'replace')!r} in an ignore rule: {exc}"
        ) from None


def _port(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"an ignore rule's port must be a number from 1 to 65535, got {value!r}")
    try:
        port = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"an ignore rule's port must be a number from 1 to 65535, got {value!r}") from None
    if not 0 < port < 65536:
        raise ConfigError(f"an ignore rule's port must be a number from 1 to 65535, got {value!r}")
    return port


def _direction(value: object) -> Direction | None:
    if value is None:
        return None
    try:
        return Direction(str(getattr(value, "value", value)).strip().lower())
    except ValueError:
        raise ConfigError(f"an ignore rule's direction must be c2s or s2c, got {value!r}") from None


@attrs.frozen
class IgnoreRule:
    """A region the user says may differ: a regex, optionally only for one server port and direction."""

    pattern: re.Pattern[bytes] = attrs.field(converter=_compile)
    port: int | None = attrs.field(default=None, converter=_port)
    direction: Direction | None = attrs.field(default=None, converter=_direction)

    @classmethod
    def parse(cls, text: object) -> "IgnoreRule":
        """A rule from ``"REGEX"``, ``"PORT:REGEX"``, ``"DIR:REGEX"``, ``"PORT:DIR:REGEX"``,
        a dict with ``pattern`` and optional ``port`` and ``direction``, or a rule.

        A regex that itself starts like ``80:`` is written ``(?:80:)...``.
        """
        if isinstance(text, IgnoreRule):
            return text
        if isinstance(text, Mapping):
            unknown = set(text) - {"pattern", "port", "direction"}
            if unknown or "pattern" not in text:
                raise ConfigError(
                    "an ignore rule given as a dict takes the keys pattern, port and direction, "
                    f"got {dict(text)!r}"
                )
            return cls(text["pattern"], text.get("port"), text.get("direction"))
        if isinstance(text, (bytes, re.Pattern)):
            return cls(text)
        if not isinstance(text, str):
            raise ConfigError(f"an ignore rule is a regex string or a dict, got {text!r}")
        match = _RULE_TEXT.fullmatch(text)
        assert match is not None  # the last group takes anything
        port, direction, pattern = match.groups()
        return cls(pattern, port, direction)

    def applies(self, port: int, direction: Direction) -> bool:
        return (self.port is None or self.port == port) and (
            self.direction is None or self.direction is direction
        )

    def __str__(self) -> str:
        scope = "".join(f"{part}:" for part in (self.port, self.direction and self.direction.value) if part)
        return scope + self.pattern.pattern.decode("utf-8", "replace")


def _spans(value: object) -> tuple[tuple[int, int], ...]:
    spans = tuple((int(start), int(end)) for start, end in value)  # type: ignore[union-attr]
    for start, end in spans:
        if not 0 <= start <= end:
            raise ValueError(f"a noise span must be (start, end) with 0 <= start <= end, got {(start, end)}")
    return tuple(sorted(spans))


@attrs.frozen
class LearnedNoise:
    """Byte ranges of one recorded turn that differed between two recordings of one run."""

    conn: int
    direction: Direction = attrs.field(converter=Direction)
    turn: int  # the turn's index among its direction's turns
    spans: tuple[tuple[int, int], ...] = attrs.field(converter=_spans)


def resolve_check(check: Iterable[str], hosts: Iterable[HostInfo]) -> frozenset[str] | None:
    """The addresses of the checked hosts (None: every host), names looked up in *hosts*.

    A name no host has stays as it is: it matches no address, so a host
    named later (or a typo) checks nothing rather than everything.
    """
    check = tuple(check)
    if not check:
        return None
    names: dict[str, tuple[str, ...]] = {}
    by_address: dict[str, tuple[str, ...]] = {}
    for host in hosts:
        both = (host.address, host.address6) if host.address6 else (host.address,)
        if host.name:
            names.setdefault(host.name, both)
        for address in both:
            by_address[address] = both
    addresses: set[str] = set()
    for item in check:
        try:
            address = str(ipaddress.ip_address(item))
        except ValueError:
            addresses.update(names.get(item, (item,)))
        else:
            # A host is checked whichever of its addresses it sends from.
            addresses.update(by_address.get(address, (address,)))
    return frozenset(addresses)


@attrs.frozen
class Noise:
    """What a replay overlooks when it compares live turns with recorded ones, and who it checks."""

    ignore: tuple[IgnoreRule, ...] = attrs.field(default=(), converter=lambda v: ignore_rules(v))
    learned: tuple[LearnedNoise, ...] = attrs.field(default=(), converter=tuple)
    #: Addresses of the hosts whose sending is compared; None: all of them.
    checked: frozenset[str] | None = attrs.field(default=None)
    _by_turn: dict = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        by_turn: dict = {}
        for item in self.learned:
            by_turn.setdefault((item.conn, item.direction, item.turn), []).extend(item.spans)
        object.__setattr__(self, "_by_turn", by_turn)

    def is_checked(self, opened: ConnectionOpened, direction: Direction) -> bool:
        """Whether the live bytes of *direction* count: its sending host is checked."""
        if self.checked is None:
            return True
        sender = opened.client if direction is Direction.C2S else opened.server
        return sender.host in self.checked

    def learned_spans(self, conn: int, direction: Direction, turn_index: int) -> tuple[tuple[int, int], ...]:
        return tuple(sorted(self._by_turn.get((conn, Direction(direction), turn_index), ())))

    def comparator(
        self, opened: ConnectionOpened, direction: Direction, turn_index: int
    ) -> Comparator | None:
        """None when no rule touches this turn (the caller compares exactly); else
        ``f(recorded_turn, live_turn)``: None when they are equal but for noise,
        or the offset in the live turn where they part."""
        direction = Direction(direction)
        rules = tuple(rule for rule in self.ignore if rule.applies(opened.server.port, direction))
        spans = self.learned_spans(opened.conn, direction, turn_index)
        if not rules and not spans:
            return None
        return lambda recorded, live: compare(recorded, live, rules, spans)


# --------------------------------------------------------------------------- comparing


def _merged(regions: Iterable[tuple[int, int]], *, touching: bool) -> list[list[int]]:
    merged: list[list[int]] = []
    for start, end in sorted(regions):
        if merged and (start < merged[-1][1] or (touching and start == merged[-1][1])):
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def _masks(data: bytes, rules: tuple[IgnoreRule, ...]) -> list[list[int]]:
    """Where the rules match in *data*, overlapping and touching matches joined."""
    found = (m.span() for rule in rules for m in rule.pattern.finditer(data) if m.end() > m.start())
    return _merged(found, touching=True)


def _masked_text(data: bytes, masks: list[list[int]]) -> str:
    parts = []
    position = 0
    for start, end in masks:
        parts.append(data[position:start].decode("latin-1"))
        parts.append(_MASK)
        position = end
    parts.append(data[position:].decode("latin-1"))
    return "".join(parts)


def _template(recorded: bytes, rules: tuple[IgnoreRule, ...], spans) -> list[str]:
    """The recorded turn as the pieces that must appear in order, masks as :data:`_MASK`;
    between two pieces (a learned span) anything may stand."""
    size = len(recorded)
    gaps = _merged(((min(s, size), min(e, size)) for s, e in spans), touching=True)
    masks = _masks(recorded, rules)
    # A mask that overlaps a learned span is swallowed by it.
    changed = True
    while changed:
        changed = False
        for mask in list(masks):
            for gap in gaps:
                if mask[0] < gap[1] and gap[0] < mask[1] or mask[0] < gap[0] == gap[1] < mask[1]:
                    gap[0], gap[1] = min(gap[0], mask[0]), max(gap[1], mask[1])
                    masks.remove(mask)
                    changed = True
                    break
        if changed:
            gaps = _merged(gaps, touching=True)
    pieces = []
    position = 0
    for start, end in gaps:
        inner = [[s - position, e - position] for s, e in masks if position <= s and e <= start]
        pieces.append(_masked_text(recorded[position:start], inner))
        position = end
    inner = [[s - position, e - position] for s, e in masks if position <= s]
    pieces.append(_masked_text(recorded[position:], inner))
    return pieces


def _glob(pieces: list[str], text: str) -> int | None:
    """None if *text* is the pieces in order with anything between them; else where it parts.

    Taking each piece at its leftmost place after the previous one is enough:
    it leaves the most room for the rest.
    """
    if len(pieces) == 1:
        return None if text == pieces[0] else common_prefix(pieces[0], text)
    first, *middle, last = pieces
    if not text.startswith(first):
        return common_prefix(first, text)
    position = len(first)
    for piece in middle:
        found = text.find(piece, position)
        if found < 0:
            return _partial(piece, text, position)
        position = found + len(piece)
    if len(text) - len(last) >= position and text.endswith(last):
        return None
    found = text.find(last, position)
    return _partial(last, text, position) if found < 0 else found + len(last)


def _partial(piece: str, text: str, position: int) -> int:
    """Where *text* parts from *piece* (which it lacks) after *position*: just past
    the longest start of the piece that it has."""
    low, high = 0, len(piece)
    while low < high:
        middle = (low + high + 1) // 2
        if text.find(piece[:middle], position) >= 0:
            low = middle
        else:
            high = middle - 1
    return text.find(piece[:low], position) + low


def _to_live_offset(offset: int, masks: list[list[int]]) -> int:
    """An offset in the masked text of the live turn as an offset in its bytes."""
    shift = 0
    for start, end in masks:
        if start - shift >= offset:
            break
        shift += end - start - 1
    return offset + shift


def compare(recorded: bytes, live: bytes, rules: tuple[IgnoreRule, ...] = (), spans=()) -> int | None:
    """None when *live* equals *recorded* but for noise; else the offset in *live* where they part."""
    recorded, live = bytes(recorded), bytes(live)
    if recorded == live:
        return None
    pieces = _template(recorded, rules, spans)
    masks = _masks(live, rules)
    offset = _glob(pieces, _masked_text(live, masks))
    return None if offset is None else min(_to_live_offset(offset, masks), len(live))


# --------------------------------------------------------------------------- learning


def _grown(data: bytes, start: int, end: int) -> tuple[int, int]:
    """The span grown to the whole value it lies in, if it is text; binary stays as it is."""
    inside = data[start:end] if end > start else data[max(start - 1, 0) : start + 1]
    if not inside or any(byte not in _VALUE_BYTES for byte in inside):
        return start, end
    while start > 0 and data[start - 1] in _VALUE_BYTES and data[start - 2 : start] != _SEPARATOR:
        start -= 1
    while end < len(data) and data[end] in _VALUE_BYTES:
        end += 1
    return start, end


def _common_suffix(a: bytes, b: bytes, limit: int) -> int:
    low, high = 0, limit
    while low < high:
        middle = (low + high + 1) // 2
        if a[len(a) - middle :] == b[len(b) - middle :]:
            low = middle
        else:
            high = middle - 1
    return low


def diff_spans(first: bytes, second: bytes) -> tuple[tuple[int, int], ...]:
    """The ranges of *first* that differ from *second*, grown to whole values and coalesced."""
    if first == second:
        return ()
    prefix = common_prefix(first.decode("latin-1"), second.decode("latin-1"))
    suffix = _common_suffix(first, second, min(len(first), len(second)) - prefix)
    a, b = first[prefix : len(first) - suffix], second[prefix : len(second) - suffix]
    if len(a) > DIFF_CAP or len(b) > DIFF_CAP:
        raw = [(prefix, prefix + len(a))]
    else:
        matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
        raw = [(prefix + i1, prefix + i2) for tag, i1, i2, _, _ in matcher.get_opcodes() if tag != "equal"]
    grown = [_grown(first, start, end) for start, end in raw]
    spans: list[list[int]] = []
    for start, end in sorted(grown):
        if spans and start - spans[-1][1] <= COALESCE_GAP:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    return tuple((start, end) for start, end in spans)


def _connections(events: Iterable[object]) -> dict:
    """Each connection's opening and Data events, grouped by key in opening order."""
    opened: dict[int, ConnectionOpened] = {}
    data: dict[int, list[Data]] = {}
    for event in events:
        if isinstance(event, ConnectionOpened):
            opened[event.conn] = event
            data[event.conn] = []
        elif isinstance(event, Data) and event.conn in data:
            data[event.conn].append(event)
    by_key: dict = {}
    for conn, opening in opened.items():
        by_key.setdefault(opening.key, []).append((opening, data[conn]))
    return by_key


def learn(first: Iterable[object], second: Iterable[object]) -> tuple[LearnedNoise, ...]:
    """Noise between two recordings of the same run, in the first recording's terms.

    Connections pair by key (client host, server host and port) and order of
    opening, turns by direction and index. A turn the second recording lacks
    is noise as a whole; a connection it lacks has nothing to compare with and
    is left alone.
    """
    others = _connections(second)
    found = []
    for key, connections in _connections(first).items():
        for (opening, data), (_, other_data) in zip(connections, others.get(key, ())):
            other_turns = {(turn.direction, turn.index): turn for turn in split_turns(other_data)}
            for turn in split_turns(data):
                other = other_turns.get((turn.direction, turn.index))
                spans = ((0, len(turn.data)),) if other is None else diff_spans(turn.data, other.data)
                if spans:
                    found.append(LearnedNoise(opening.conn, turn.direction, turn.index, spans))
    return tuple(sorted(found, key=lambda n: (n.conn, n.direction.value, n.turn)))


# --------------------------------------------------------------------------- settings


def ignore_rules(value: object) -> tuple[IgnoreRule, ...]:
    """Ignore rules from one rule or a list of them (strings, dicts or rules)."""
    if isinstance(value, (str, bytes, Mapping, IgnoreRule, re.Pattern)):
        value = [value]
    try:
        items = list(value)  # type: ignore[call-overload]
    except TypeError:
        raise ConfigError(f"ignore takes a list of regular expressions, got {value!r}") from None
    return tuple(IgnoreRule.parse(item) for item in items)


def check_hosts(value: object) -> tuple[str, ...]:
    """Checked hosts from names or addresses, as a list or one comma-separated string."""
    items = value.split(",") if isinstance(value, str) else value
    try:
        hosts = tuple(str(item).strip() for item in items)  # type: ignore[union-attr]
    except TypeError:
        raise ConfigError(f"check takes host names or addresses, got {value!r}") from None
    for host in hosts:
        if not host or any(ch.isspace() for ch in host):
            raise ConfigError(f"check takes host names or addresses, got {host!r} in {value!r}")
    return hosts
