"""Cassette files: crash-safe writing and streaming reading around the codec.

Writing lives in :mod:`.cassette_writer` (a recording becomes the cassette
only once it finished cleanly). Readers stream the file in bounded chunks and
can index it, so replay memory grows with the number of records, never with
the bytes recorded.
"""

from __future__ import annotations

import array
import os
from collections.abc import Iterator
from pathlib import Path

import attrs

from .cassette_writer import CassetteWriter, io_error, partial_path_for
from .core import codec
from .core.addressing import ConnectionKey
from .core.codec import Decoder, End, Record, decode_record
from .core.coverage import RunNotes
from .core.events import NOTES, ConnectionOpened, Event, Header
from .core.matching import Leads
from .core.noise import LearnedNoise
from .errors import CassetteError, CassetteFormatError, CassetteMissing

__all__ = [
    "CHUNK_SIZE",
    "Cassette",
    "CassetteIndex",
    "CassetteWriter",
    "ConnectionIndex",
    "partial_path_for",
]

#: How much a reader asks the kernel for at a time.
CHUNK_SIZE = 1024 * 1024


@attrs.define
class ConnectionIndex:
    """Where one connection's records lie in the file: enough to replay it on demand."""

    opened: ConnectionOpened
    offsets: array.array = attrs.field(factory=lambda: array.array("q"))
    lengths: array.array = attrs.field(factory=lambda: array.array("q"))

    @property
    def conn(self) -> int:
        return self.opened.conn

    @property
    def key(self) -> ConnectionKey:
        return self.opened.key

    def spans(self) -> Iterator[tuple[int, int]]:
        """(offset, length) of each later record, in file order."""
        return zip(self.offsets, self.lengths)

    def __len__(self) -> int:
        return len(self.offsets)


@attrs.define
class CassetteIndex:
    """The result of one streaming pass over a cassette."""

    header: Header
    connections: dict[int, ConnectionIndex]
    complete: bool
    truncated_at: int | None = None
    end_time: float | None = None
    #: Each connection's lead (see :class:`~.core.matching.Leads`), for matching on replay.
    leads: dict[int, bytes | None] = attrs.field(factory=dict)
    notes: RunNotes = attrs.field(factory=RunNotes)  # listen delays, UDP not recorded
    #: Regions of recorded turns that differed between two recordings (``--runs 2``).
    noise: tuple[LearnedNoise, ...] = ()

    def by_key(self) -> dict[ConnectionKey, list[ConnectionIndex]]:
        """Connections grouped by key, each group in opening order (the order a replayer falls back on)."""
        groups: dict[ConnectionKey, list[ConnectionIndex]] = {}
        for entry in self.connections.values():
            groups.setdefault(entry.key, []).append(entry)
        return groups


class Cassette:
    """A cassette file opened for reading; events are streamed, never all loaded.

    With ``tolerate_truncation`` an incomplete last line (a recording killed
    half-way) ends iteration quietly and is reported in ``truncated_at``;
    otherwise it raises. A corrupt complete line always raises.
    """

    def __init__(self, path: str | os.PathLike, *, tolerate_truncation: bool = False):
        self.path = Path(path)
        self.tolerate_truncation = tolerate_truncation
        #: Whether the end marker was seen; None until a full pass has been made.
        self.complete: bool | None = None
        #: Offset of the incomplete last line a tolerant pass stopped at.
        self.truncated_at: int | None = None
        self._index: CassetteIndex | None = None
        self._fd: int | None = None
        scan = self._scan()
        try:
            _, _, header = next(scan)
        finally:
            scan.close()
        assert isinstance(header, Header)
        self.header: Header = header

    def _open_file(self):
        try:
            return open(self.path, "rb", buffering=0)
        except FileNotFoundError as exc:
            raise CassetteMissing(
                f"cassette {self.path} does not exist; record it first, or check the cassette path"
            ) from exc
        except OSError as exc:
            raise io_error("open", self.path, exc) from exc

    def _located(self, exc: CassetteFormatError) -> CassetteFormatError:
        return CassetteFormatError(exc.reason, path=str(self.path), offset=exc.offset)

    def _scan(self) -> Iterator[tuple[int, int, Record]]:
        """Every record with its (offset, length), header and end marker included."""
        decoder = Decoder(max_line=codec.MAX_LINE)
        with self._open_file() as f:
            while True:
                try:
                    chunk = f.read(CHUNK_SIZE)
                except OSError as exc:
                    raise io_error("read", self.path, exc) from exc
                if not chunk:
                    break
                try:
                    decoder.receive(chunk)
                    while (record := decoder.next_record()) is not None:
                        yield decoder.last_offset, decoder.last_length, record  # type: ignore[misc]
                except CassetteFormatError as exc:
                    raise self._located(exc) from None
        try:
            decoder.finish()
        except CassetteFormatError as exc:
            if not (self.tolerate_truncation and decoder.header is not None and decoder.buffered):
                raise self._located(exc) from None
            self.truncated_at = decoder.offset
        else:
            self.truncated_at = None
        self.complete = decoder.complete

    def events(self) -> Iterator[Event]:
        """Iterate the events from the start of the file; each call re-reads it."""
        for _, _, record in self._scan():
            if not isinstance(record, (Header, End, LearnedNoise, *NOTES)):
                yield record

    __iter__ = events

    def records(self) -> Iterator[Record]:
        """Every record from the start of the file, the header and end marker included."""
        for _, _, record in self._scan():
            yield record

    def index(self) -> CassetteIndex:
        """Locate every connection's records in one pass (cached on the instance)."""
        if self._index is not None:
            return self._index
        connections: dict[int, ConnectionIndex] = {}
        end_time = None
        leads, notes, noise = Leads(), RunNotes(), []
        for offset, length, record in notes.skim(self._scan()):
            if isinstance(record, LearnedNoise):
                noise.append(record)
            elif isinstance(record, ConnectionOpened):
                connections[record.conn] = ConnectionIndex(record)
                leads.feed(record)
            elif isinstance(record, End):
                end_time = record.t
            elif not isinstance(record, Header):
                entry = connections[record.conn]  # the decoder guarantees it was opened
                entry.offsets.append(offset)
                entry.lengths.append(length)
                leads.feed(record)
        self._index = CassetteIndex(
            header=self.header,
            connections=connections,
            complete=bool(self.complete),
            truncated_at=self.truncated_at,
            end_time=end_time,
            leads=leads.leads,
            notes=notes,
            noise=tuple(noise),
        )
        return self._index

    def _pread(self, offset: int, length: int) -> bytes:
        """Read at *offset* through one descriptor kept for the life of this object:
        a replay of thousands of connections then holds one, not one each."""
        if self._fd is None:
            with self._open_file() as f:
                self._fd = os.dup(f.fileno())
        try:
            return os.pread(self._fd, length, offset)
        except OSError as exc:
            raise io_error("read", self.path, exc) from exc

    def close(self) -> None:
        """Let go of the descriptor that reads records by offset (reopened if needed)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            self.close()

    def _decode_at(self, line: bytes, offset: int) -> Event:
        if not line.endswith(b"\n"):
            raise CassetteFormatError(
                "no complete record here; expected a newline-terminated JSON record "
                "(has the cassette changed since it was indexed?)",
                path=str(self.path),
                offset=offset,
            )
        try:
            record = decode_record(line, offset=offset)
        except CassetteFormatError as exc:
            raise self._located(exc) from None
        if isinstance(record, (Header, End, *NOTES)):
            raise CassetteFormatError(
                f"found a {'header' if isinstance(record, Header) else 'non-event'}, expected an event "
                "(has the cassette changed since it was indexed?)",
                path=str(self.path),
                offset=offset,
            )
        return record

    def iter_connection(self, conn: int) -> Iterator[Event]:
        """One connection's events, read one by one from their indexed offsets."""
        entry = self.index().connections.get(conn)
        if entry is None:
            raise CassetteError(
                f"cassette {self.path} has no connection #{conn}; "
                f"it has {len(self.index().connections)} connections"
            )
        yield entry.opened
        for offset, length in entry.spans():
            event = self._decode_at(self._pread(offset, length), offset)
            if event.conn != conn:
                raise CassetteFormatError(
                    f"found an event of connection {event.conn}, expected connection {conn} "
                    "(has the cassette changed since it was indexed?)",
                    path=str(self.path),
                    offset=offset,
                )
            yield event

    def __repr__(self) -> str:
        return f"<Cassette {str(self.path)!r}>"

