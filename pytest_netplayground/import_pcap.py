"""Import a packet capture (pcap or pcapng) as a cassette.

The file is read twice, frame by frame, never whole: the first pass learns
which addresses are servers and clients, so the address map (servers first)
and the cassette's header can be written before any event; the second pass
reassembles again and writes the events. The cassette is written with
:class:`CassetteWriter`, so a failed import leaves no cassette and no
partial file behind.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import attrs

from . import __version__
from .cassette_writer import CassetteWriter
from .core.addressing import DEFAULT_SUBNET, Subnet
from .core.addressing6 import Subnet6
from .core.capture_decode import LINK_TYPES, CapturedPacket, decode_frame
from .core.capture_filter import parse_filter
from .core.capture_flows import CaptureFlows
from .core.capture_map import AddressMap, parse_mappings
from .core.capture_stream import GAP_MODES
from .core.events import ConnectionOpened, Header, UdpFlow
from .errors import CaptureError, ConfigError

__all__ = ["ImportResult", "import_capture", "read_capture"]

#: Largest record read whole; scapy's own bound (4 x 64 KiB) for a malicious length.
_MAX_RECORD = 4 * 0xFFFF


@attrs.define
class ImportResult:
    """What an import made and found; :func:`.capture_report.format_report` prints it."""

    cassette: Path
    flows: CaptureFlows
    addresses: AddressMap
    frames: int = 0
    skipped_link_types: dict[int, int] = attrs.field(factory=dict)
    truncated_at: int | None = None


@attrs.define
class _Reading:
    """Counts kept while reading frames, shared by both passes."""

    frames: int = 0
    skipped_link_types: dict[int, int] = attrs.field(factory=dict)
    truncated_at: int | None = None


def _open_reader(path: Path):
    from scapy.error import Scapy_Exception
    from scapy.utils import RawPcapReader

    if not path.exists():
        raise CaptureError(f"cannot import {path}: no such file; give the path of a pcap or pcapng capture")
    if path.is_dir():
        raise CaptureError(f"cannot import {path}: it is a directory; give the path of a pcap or pcapng capture")
    try:
        return RawPcapReader(str(path))
    except Scapy_Exception as exc:
        raise CaptureError(
            f"cannot import {path} at byte 0: not a pcap or pcapng capture ({exc}); "
            "save the capture as pcap or pcapng (tcpdump -w, Wireshark 'Save As')"
        ) from exc
    except OSError as exc:
        raise CaptureError(f"cannot read capture {path}: {exc.strerror or exc}") from exc


def _size(reader) -> int | None:
    """The file's size, where offsets are file offsets (not for gzip-compressed captures)."""
    import gzip

    if isinstance(reader.f, gzip.GzipFile):
        return None
    try:
        return os.fstat(reader.f.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        return None


def _frames(path: Path, reading: _Reading, allow_truncated: bool) -> Iterator[tuple[int, bytes, float]]:
    """(link type, frame, time) of every record of the capture, in file order."""
    from scapy.utils import RawPcapNgReader

    reader = _open_reader(path)
    size = _size(reader)
    pcapng = isinstance(reader, RawPcapNgReader)
    try:
        while True:
            offset = reader.f.tell()
            try:
                # pcapng: one block at a time, so that offset is where the block that ends the
                # file starts (a statistics block after the last packet is not a cut).
                found = reader._read_block(size=_MAX_RECORD) if pcapng else reader._read_packet(size=_MAX_RECORD)
                if found is None:
                    continue
                data, meta = found
            except (OverflowError, zlib.error):
                _cut_short(path, offset, "record", reading, allow_truncated)
                return
            except EOFError:
                if size is not None and offset < size:
                    _cut_short(path, offset, "record", reading, allow_truncated)
                return
            except (OSError, ValueError) as exc:
                raise CaptureError(f"cannot read capture {path} at byte {offset}: {exc}") from exc
            if pcapng:
                linktype = meta.linktype
                t = ((meta.tshigh << 32) | meta.tslow) / meta.tsresol
            else:
                linktype = reader.linktype
                if len(data) < min(meta.caplen, _MAX_RECORD):
                    _cut_short(path, offset, "packet", reading, allow_truncated)
                    return
                t = meta.sec + meta.usec / (1e9 if reader.nano else 1e6)
            reading.frames += 1
            yield linktype, data, t
    finally:
        reader.close()


def _cut_short(path: Path, offset: int, what: str, reading: _Reading, allow: bool) -> None:
    if allow:
        reading.truncated_at = offset
        return
    raise CaptureError(
        f"capture {path} is cut short or corrupt at byte {offset}: the {what} there is incomplete; "
        "pass --truncated to import the packets before it"
    )


def read_capture(
    path: str | os.PathLike, predicate=None, reading: _Reading | None = None, allow_truncated: bool = False
) -> Iterator[CapturedPacket]:
    """The TCP and UDP packets of a capture that pass ``predicate``, streamed."""
    reading = _Reading() if reading is None else reading
    for linktype, frame, t in _frames(Path(path), reading, allow_truncated):
        if linktype not in LINK_TYPES:
            reading.skipped_link_types[linktype] = reading.skipped_link_types.get(linktype, 0) + 1
            continue
        packet = decode_frame(linktype, frame, t)
        if packet is not None and (predicate is None or predicate(packet)):
            yield packet


def _events(packets: Iterable[CapturedPacket], flows: CaptureFlows) -> Iterator[object]:
    for packet in packets:
        yield from flows.feed(packet)
    yield from flows.finish()


def _mapped(event, addresses: AddressMap):
    if isinstance(event, (ConnectionOpened, UdpFlow)):
        return attrs.evolve(event, client=addresses.endpoint(event.client), server=addresses.endpoint(event.server))
    return event


def import_capture(
    capture: str | os.PathLike,
    cassette: str | os.PathLike,
    *,
    packet_filter: str | None = None,
    mappings: Iterable[str] = (),
    subnet: str = DEFAULT_SUBNET,
    subnet6: str | None = None,
    gaps: str = "cut",
    allow_truncated: bool = False,
) -> ImportResult:
    """Reassemble the TCP streams and UDP flows of *capture* into the cassette *cassette*.

    Raises :class:`CaptureError` for a capture that cannot be read and
    :class:`ConfigError` for a bad filter, mapping or subnet; nothing is
    written then.
    """
    capture, cassette = Path(capture), Path(cassette)
    if gaps not in GAP_MODES:
        raise ConfigError(f"gaps must be one of {', '.join(GAP_MODES)}, got {gaps!r}")
    predicate = parse_filter(packet_filter) if packet_filter else None
    given = parse_mappings(mappings)
    net = Subnet.parse(subnet)
    net6 = Subnet6.parse(subnet6, net)

    first = CaptureFlows(gap_mode=gaps)
    opened = [
        event
        for event in _events(read_capture(capture, predicate, _Reading(), allow_truncated), first)
        if isinstance(event, (ConnectionOpened, UdpFlow))
    ]
    addresses = AddressMap.build(net, net6, given, opened)

    flows = CaptureFlows(gap_mode=gaps)
    reading = _Reading()
    header = Header(str(net), addresses.hosts(), first.origin or 0.0, __version__, subnet6=str(net6))
    writer = CassetteWriter(cassette, header)
    try:
        for event in _events(read_capture(capture, predicate, reading, allow_truncated), flows):
            writer.write(_mapped(event, addresses))
        writer.commit(flows.last)
    except BaseException:
        partial = writer.abort()
        if partial is not None:
            partial.unlink(missing_ok=True)
        raise
    return ImportResult(cassette, flows, addresses, reading.frames, reading.skipped_link_types, reading.truncated_at)

