"""The incremental cassette reader: bytes in as they are read, complete records out.

It checks the stream's structure as well as each line: the header comes
first and once, events name opened connections, nothing follows the end
marker. Whatever bytes it is given, it raises nothing but
:class:`CassetteFormatError`, with the byte offset of the offending line.
"""

from __future__ import annotations

from ..errors import CassetteFormatError
from .codec_base import MAX_LINE, End, Record
from .decoding import decode_record
from .events import FORMAT_VERSION, NOTES, ConnectionOpened, Datagram, Header, Refusal, TlsNote, UdpFlow

__all__ = ["Decoder"]


class Decoder:
    """Incremental cassette decoder: bytes in, complete records out.

    Keeps only the incomplete trailing line between calls (at most
    ``max_line`` bytes) and the set of opened connection numbers, and checks
    the stream's structure: the header comes first and once, events name
    opened connections, nothing follows the end marker.
    """

    def __init__(self, *, max_line: int = MAX_LINE):
        self.max_line = max_line
        self._buf = bytearray()
        self._pos = 0  # start of the pending line within _buf
        self._scanned = 0  # _buf[_pos:_scanned] holds no newline
        self._base = 0  # absolute offset of _buf[0]
        self._header: Header | None = None
        self._ended = False
        self._opened: set[int] = set()
        self._flows: set[int] = set()
        self._error: CassetteFormatError | None = None
        self.last_offset: int | None = None
        self.last_length: int | None = None

    @property
    def header(self) -> Header | None:
        """The header, once its line has been decoded."""
        return self._header

    @property
    def complete(self) -> bool:
        """Whether the end marker has been decoded."""
        return self._ended

    @property
    def offset(self) -> int:
        """Absolute offset of the first byte not yet returned as part of a record."""
        return self._base + self._pos

    @property
    def pending(self) -> bytes:
        """Bytes received but not yet decoded: an incomplete trailing line, or whole lines not drained."""
        return bytes(self._buf[self._pos :])

    @property
    def buffered(self) -> int:
        """How many bytes the decoder currently holds."""
        return len(self._buf) - self._pos

    def receive(self, data: bytes) -> None:
        """Add bytes to the buffer; drain them with :meth:`next_record`."""
        if self._error is not None:
            raise self._error
        if self._pos:
            del self._buf[: self._pos]
            self._base += self._pos
            self._scanned -= self._pos
            self._pos = 0
        self._buf += data

    def next_record(self) -> Record | None:
        """The next complete record, or None until more bytes arrive.

        ``last_offset`` and ``last_length`` then locate its line in the stream.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except CassetteFormatError as exc:
            self._error = exc
            raise

    def feed(self, data: bytes) -> list[Record]:
        """Receive bytes and return every record they complete."""
        self.receive(data)
        records = []
        while (record := self.next_record()) is not None:
            records.append(record)
        return records

    def finish(self) -> list[Record]:
        """Declare end of input: return any records not yet drained, then raise
        if an incomplete line remains or no header was ever seen."""
        records = []
        while (record := self.next_record()) is not None:
            records.append(record)
        if self.buffered:
            self._error = CassetteFormatError(
                f"truncated record: the last {self.buffered} bytes have no newline; "
                "expected a newline-terminated JSON record (was the recording interrupted?)",
                offset=self.offset,
            )
            raise self._error
        if self._header is None:
            self._error = CassetteFormatError(
                "empty file: not a Net Playground cassette (no header line)", offset=self.offset
            )
            raise self._error
        return records

    def _next(self) -> Record | None:
        start = self._pos
        newline = self._buf.find(b"\n", max(self._scanned, start))
        if newline < 0:
            self._scanned = len(self._buf)
            pending = len(self._buf) - start
            if pending > self.max_line:
                raise CassetteFormatError(
                    f"line longer than the {self.max_line}-byte limit with no newline in sight; "
                    "expected newline-terminated JSON records",
                    offset=self._base + start,
                )
            if self._header is None and pending:
                self._check_looks_like_header(start)
            return None
        offset = self._base + start
        line = bytes(self._buf[start:newline])
        self._pos = newline + 1
        self._scanned = self._pos
        if len(line) > self.max_line:
            raise CassetteFormatError(
                f"line of {len(line)} bytes is longer than the {self.max_line}-byte limit; "
                "expected one JSON record per line",
                offset=offset,
            )
        self.last_offset = offset
        self.last_length = newline + 1 - start
        if self._header is None:
            return self._first(line, offset)
        record = decode_record(line, offset=offset)
        self._check_order(record, offset)
        return record

    def _check_looks_like_header(self, start: int) -> None:
        head = bytes(self._buf[start : start + 64]).lstrip()
        if head and not head.startswith(b"{"):
            raise CassetteFormatError(
                "not a Net Playground cassette: the first line must be a JSON header "
                f'like {{"netplay_cassette": {FORMAT_VERSION}, ...}}',
                offset=self._base + start,
            )

    def _first(self, line: bytes, offset: int) -> Header:
        not_cassette = (
            "not a Net Playground cassette: the first line must be a JSON header "
            f'like {{"netplay_cassette": {FORMAT_VERSION}, ...}}'
        )
        try:
            record = decode_record(line, offset=offset)
        except CassetteFormatError as exc:
            if b'"netplay_cassette"' in line:
                raise
            raise CassetteFormatError(f"{not_cassette} ({exc.reason})", offset=offset) from None
        if not isinstance(record, Header):
            raise CassetteFormatError(not_cassette, offset=offset)
        self._header = record
        return record

    def _check_order(self, record: Record, offset: int) -> None:
        if self._ended:
            raise CassetteFormatError(
                "record after the end marker; the end marker must be the last line", offset=offset
            )
        if isinstance(record, Header):
            raise CassetteFormatError(
                "a second header; expected events after the first line (are two cassettes concatenated?)",
                offset=offset,
            )
        if isinstance(record, End):
            self._ended = True
            return
        if isinstance(record, UdpFlow):
            if record.flow in self._flows:
                raise CassetteFormatError(f"UDP flow {record.flow} is opened twice", offset=offset)
            self._flows.add(record.flow)
            return
        if isinstance(record, (Datagram, Refusal)) and record.flow not in self._flows:
            raise CassetteFormatError(
                f'datagram of UDP flow {record.flow}, which was never opened; expected a "flow" record first',
                offset=offset,
            )
        if isinstance(record, TlsNote) and record.conn not in self._opened:
            raise CassetteFormatError(
                f'TLS note of connection {record.conn}, which was never opened; expected an "open" record first',
                offset=offset,
            )
        if isinstance(record, NOTES):
            return
        if isinstance(record, ConnectionOpened):
            if record.conn in self._opened:
                raise CassetteFormatError(f"connection {record.conn} is opened twice", offset=offset)
            self._opened.add(record.conn)
        elif record.conn not in self._opened:
            raise CassetteFormatError(
                f'event for connection {record.conn}, which was never opened; expected an "open" record first',
                offset=offset,
            )
