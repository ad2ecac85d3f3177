"""Human-readable rendering of a cassette, one conversation at a time.

Like Wireshark's "Follow TCP Stream": each connection is shown on its own
with what each side sent, in order, so a reader can see what a test talked
about without decoding JSON or base64. Text stays text (control characters
escaped so nothing invisible hides in the output); binary becomes a hexdump.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable

import attrs

from .codec import End, is_text
from .coverage import udp_line
from .events import (
    Closed,
    ConnectionOpened,
    Data,
    Datagram,
    Direction,
    HalfClosed,
    Header,
    ListenDelay,
    Outcome,
    Refusal,
    Reset,
    TlsNote,
    UdpFlow,
    UdpSeen,
)
from .noise import LearnedNoise
from .turns import split_turns

__all__ = ["escape_text", "hexdump", "render_connection", "render_conversations", "render_header"]

_INDENT = "  "
_BODY_INDENT = "      "
_ARROW = {Direction.C2S: "-->", Direction.S2C: "<--"}
_ESCAPES = {"\\": "\\\\", "\r": "\\r", "\n": "\\n", "\t": "\\t"}


def _escape_char(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if ch == " " or ch.isprintable():
        return ch
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape_text(text: str) -> str:
    """Text with backslashes, tab, CR, LF and anything unprintable written as escapes."""
    return "".join(_escape_char(ch) for ch in text)


def _text_lines(data: bytes, width: int) -> list[str]:
    room = max(width - len(_BODY_INDENT), 16)
    lines = []
    for line in data.decode("utf-8").splitlines(keepends=True):
        piece = ""
        for ch in line:
            escaped = _escape_char(ch)
            if piece and len(piece) + len(escaped) > room:
                lines.append(_BODY_INDENT + piece)
                piece = ""
            piece += escaped
        lines.append(_BODY_INDENT + piece)
    return lines


def hexdump(data: bytes, *, width: int = 80, indent: str = "") -> list[str]:
    """Classic offset / hex / ASCII rows, as many bytes per row as *width* allows (4, 8 or 16)."""
    digits = 4 if len(data) <= 0x10000 else 8
    per_row = 4
    for candidate in (16, 8):
        if len(indent) + digits + 4 * candidate + 5 <= width:
            per_row = candidate
            break
    rows = []
    for start in range(0, len(data), per_row):
        chunk = data[start : start + per_row]
        hex_part = " ".join(f"{b:02x}" for b in chunk)
        ascii_part = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        rows.append(f"{indent}{start:0{digits}x}  {hex_part:<{3 * per_row - 1}}  |{ascii_part}|")
    return rows


def _seconds(t: float) -> str:
    return f"{t:.6f}s"


def render_header(header: Header) -> str:
    """What was recorded, when and on which hosts."""
    when = datetime.datetime.fromtimestamp(header.started, tz=datetime.timezone.utc)
    subnets = header.subnet + (f" and {header.subnet6}" if header.subnet6 else "")
    lines = [
        f"Cassette of subnet {subnets}, recorded {when:%Y-%m-%d %H:%M:%S.%f} UTC"
        + (f" by Net Playground {header.tool_version}" if header.tool_version else "")
    ]
    if header.hosts:
        lines.append("Hosts:")
        for host in header.hosts:
            parts = [host.address, *([host.address6] if host.address6 else []), host.name or "-"]
            if host.command:
                parts.append(host.command)
            lines.append(_INDENT + "  ".join(parts))
    if header.tls == "intercept":
        lines.append("TLS intercepted: connections marked TLS show the plaintext said inside it")
    return "\n".join(lines)


def host_names(header: Header) -> dict[str, str]:
    """Each recorded host's name by address, for headings a reader can follow by name."""
    return {host.address: host.name for host in header.hosts if host.name}


def _heading(conn: int, opened: ConnectionOpened | None, names: dict[str, str]) -> str:
    if opened is None:
        return f"#{conn} (opening not recorded)"
    heading = f"#{conn} {opened.client} -> {opened.server} {opened.outcome.value}"
    client, server = names.get(opened.client.host), names.get(opened.server.host)
    if client or server:
        heading += f"  [{client or opened.client.host} -> {server or opened.server.host}]"
    return heading


_NOISE_SHOWN = 60  # characters of a noise region shown


def _noise_lines(events: list, noise: Iterable[LearnedNoise]) -> list[str]:
    """Each learned noise region with the recorded bytes it covers."""
    turns = {(turn.direction, turn.index): turn.data for turn in split_turns(events)}
    lines = []
    for item in sorted(noise, key=lambda n: (n.direction.value, n.turn)):
        data = turns.get((item.direction, item.turn), b"")
        for start, end in item.spans:
            piece = data[start:end]
            shown = escape_text(piece.decode("utf-8")) if is_text(piece) else piece.hex(" ")
            if len(shown) > _NOISE_SHOWN:
                shown = shown[:_NOISE_SHOWN] + "..."
            lines.append(
                f"{_INDENT}~ noise: {item.direction.sender} turn {item.turn}, bytes {start}-{end}: {shown}"
            )
    return lines


def render_connection(
    conn: int,
    opened: ConnectionOpened | None,
    events: Iterable,
    *,
    width: int = 80,
    noise: Iterable[LearnedNoise] = (),
    names: dict[str, str] | None = None,
    tls: TlsNote | None = None,
) -> str:
    """One conversation: heading, each event with its time and direction, then a summary.

    *events* are the connection's events after its opening, in time order;
    *noise* its learned noise regions, listed after them; *names* (address to
    host name) adds the hosts' names to the heading; *tls* says its data is the
    plaintext inside a TLS session the proxy terminated.
    """
    events = list(events)
    lines = [_heading(conn, opened, names or {})]
    if tls is not None:
        lines.append(
            f"{_INDENT}TLS (intercepted, plaintext shown): SNI {tls.sni or '(none)'}, ALPN {tls.alpn or '(none)'}"
        )
    sent = {Direction.C2S: 0, Direction.S2C: 0}
    first_t = opened.t if opened is not None else None
    last_t = first_t
    closed = False
    if opened is not None:
        lines.append(f"{_INDENT}{_seconds(opened.t)}  opened")
    upgraded = tls is not None  # TLS begun after plaintext (an upgrade): marked where it began
    for event in events:
        if first_t is None:
            first_t = event.t
        last_t = event.t
        if upgraded and event.t >= tls.t:
            upgraded = False
            if sent[Direction.C2S] or sent[Direction.S2C]:
                lines.append(f"{_INDENT}{_seconds(tls.t)}  TLS begins: what follows was said inside it")
        stamp = f"{_INDENT}{_seconds(event.t)}"
        if isinstance(event, Data):
            arrow = _ARROW[event.direction]
            size = len(event.data)
            sent[event.direction] += size
            lines.append(f"{stamp}  client {arrow} server  {size} byte{'s' if size != 1 else ''}")
            if is_text(event.data):
                lines.extend(_text_lines(event.data, width))
            else:
                lines.extend(hexdump(event.data, width=width, indent=_BODY_INDENT))
        elif isinstance(event, HalfClosed):
            side = event.direction.sender
            lines.append(f"{stamp}  client {_ARROW[event.direction]} server  FIN: {side} shut down writing")
        elif isinstance(event, Reset):
            side = event.direction.sender
            lines.append(
                f"{stamp}  client {_ARROW[event.direction]} server  RST: {side} reset the connection"
            )
        elif isinstance(event, Closed):
            closed = True
            lines.append(f"{stamp}  closed")
    lines.extend(_noise_lines(events, noise))
    duration = (last_t - first_t) if first_t is not None and last_t is not None else 0.0
    summary = (
        f"{_INDENT}= {sent[Direction.C2S]} bytes client -> server, "
        f"{sent[Direction.S2C]} bytes server -> client, {_seconds(duration)}"
    )
    if not closed and (opened is None or opened.outcome is Outcome.ESTABLISHED):
        summary += ", still open when the recording stopped"
    lines.append(summary)
    return "\n".join(lines)


@attrs.define
class _Conversation:
    opened: ConnectionOpened | None
    events: list = attrs.field(factory=list)
    noise: list = attrs.field(factory=list)
    tls: TlsNote | None = None


def render_conversations(
    header: Header, events: Iterable, *, width: int = 80, complete: bool | None = None
) -> str:
    """The whole cassette as text: header, then every connection in opening order.

    *events* may be the full record stream, header and end marker included
    (as ``Cassette.records()`` yields it): then whether the recording
    finished cleanly is known and said on the last line. Otherwise pass
    *complete* to have it said.
    """
    conversations: dict[int, _Conversation] = {}
    full_stream = False
    ended = False
    delays: list[ListenDelay] = []
    udp: list[UdpSeen] = []
    flows: dict[int, tuple[UdpFlow, list[Datagram]]] = {}
    for event in events:
        if isinstance(event, Header):
            full_stream = True
            continue
        if isinstance(event, End):
            ended = True
            continue
        if isinstance(event, UdpFlow):
            flows[event.flow] = (event, [])
            continue
        if isinstance(event, (Datagram, Refusal)):
            flows[event.flow][1].append(event)
            continue
        if isinstance(event, (ListenDelay, UdpSeen)):
            (delays if isinstance(event, ListenDelay) else udp).append(event)
            continue
        if isinstance(event, TlsNote):
            conversations.setdefault(event.conn, _Conversation(None)).tls = event
            continue
        if isinstance(event, ConnectionOpened):
            conversations[event.conn] = _Conversation(event)
        elif isinstance(event, LearnedNoise):
            conversations.setdefault(event.conn, _Conversation(None)).noise.append(event)
        else:
            conversations.setdefault(event.conn, _Conversation(None)).events.append(event)
    if ended:
        complete = True
    elif full_stream and complete is None:
        complete = False
    sections = [render_header(header)]
    names = host_names(header)
    for conn, conversation in conversations.items():
        sections.append(
            render_connection(
                conn,
                conversation.opened,
                conversation.events,
                width=width,
                noise=conversation.noise,
                names=names,
                tls=conversation.tls,
            )
        )
    if flows:
        from .render_udp import render_udp_flow

        sections.extend(
            render_udp_flow(flow, datagrams, width=width, names=names) for flow, datagrams in flows.values()
        )
    if delays:
        sections.append(
            "Servers first accepted (seconds after their host's first process):\n"
            + "\n".join(f"{_INDENT}{note.server}  {note.delay:.3f}s" for note in delays)
        )
    if udp:
        sections.append(udp_line(udp))
    count = len(conversations)
    footer = f"{count} connection{'s' if count != 1 else ''}"
    if flows:
        footer += f", {len(flows)} UDP flow{'s' if len(flows) != 1 else ''}"
    if udp:
        datagrams = sum(note.datagrams for note in udp)
        footer += f"; {datagrams} UDP datagram{'s' if datagrams != 1 else ''} seen but not recorded"
    if complete is True:
        footer += "; the recording finished cleanly"
    elif complete is False:
        footer += "; no end marker: the recording was cut short"
    sections.append(footer)
    return "\n\n".join(sections) + "\n"
