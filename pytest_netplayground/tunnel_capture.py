"""Decode a capture of the tunnel between a supervisor and an agent into the packets it carried.

The capture is read twice, streamed: the first pass finds the handshakes of
the control connections and derives each session's keys; the second opens the
datagrams and writes their IP packets, with the capture's timestamps, to a
pcap (raw IP link type) that Wireshark and tshark read. The output is written
beside its final name and renamed into place, so a failed decode leaves none.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from .core.tunnel_crypto import KEY_SIZE
from .core.tunnel_decode import TunnelDecoder
from .errors import CaptureError, TunnelKeyMismatch
from .import_pcap import read_capture

__all__ = ["DecodeResult", "decode_tunnel_capture"]

_LINKTYPE_RAW = 101


@attrs.frozen
class DecodeResult:
    """What a decode wrote and found (``notes``: control connections, ``dropped``: datagrams, by reason)."""

    output: Path
    packets: int
    notes: dict[str, int]
    dropped: dict[str, int]

    def summary(self) -> str:
        parts = [f"wrote {self.packets} packets to {self.output}"]
        parts += [f"{what}: {count}" for what, count in sorted(self.notes.items())]
        if self.dropped:
            dropped = ", ".join(f"{why} {count}" for why, count in sorted(self.dropped.items()))
            parts.append(f"datagrams not decoded: {dropped}")
        return "; ".join(parts)


def decode_tunnel_capture(
    capture: str | os.PathLike,
    key: bytes,
    output: str | os.PathLike,
    *,
    port: int = 50000,
    allow_truncated: bool = False,
) -> DecodeResult:
    """Write the IP packets the tunnel on ``port`` carried in ``capture`` to ``output``, opened with ``key``."""
    if len(key) != KEY_SIZE:
        raise ValueError(f"a tunnel key is {KEY_SIZE} bytes")
    capture, output = Path(capture), Path(output)
    decoder = TunnelDecoder(key, port)
    for packet in read_capture(capture, allow_truncated=allow_truncated):
        decoder.control(packet)
    partial = output.with_name(output.name + ".part")
    count = 0
    try:
        writer = _writer(partial)
        try:
            for packet in read_capture(capture, allow_truncated=allow_truncated):
                inner = decoder.open(packet)
                if inner is not None:
                    micros = round(packet.t * 1_000_000)
                    writer.write_packet(inner, sec=micros // 1_000_000, usec=micros % 1_000_000)
                    count += 1
        finally:
            writer.close()
        _check_found(decoder, capture, port)
        os.replace(partial, output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return DecodeResult(output, count, dict(decoder.notes), dict(decoder.dropped))


def _writer(path: Path):
    from scapy.utils import PcapWriter

    try:
        writer = PcapWriter(str(path), linktype=_LINKTYPE_RAW, snaplen=65535, sync=False)
        writer.write_header(None)
    except OSError as exc:
        raise CaptureError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return writer


def _check_found(decoder: TunnelDecoder, capture: Path, port: int) -> None:
    """A decode that found no session is an error that says why, not an empty file."""
    if decoder.notes["sessions"]:
        return
    if decoder.notes["wrong key"]:
        raise TunnelKeyMismatch(
            f"the tunnel handshakes in {capture} were made with another key than the one given: "
            "use the key file of that supervisor and agent"
        )
    seen = sum(decoder.notes.values())
    raise CaptureError(
        f"no tunnel handshake on port {port} in {capture} ({seen} control connections without one): "
        "start the capture before the supervisor connects to the agent, capture TCP as well as UDP, "
        "and give the agent's port with --port"
    )
