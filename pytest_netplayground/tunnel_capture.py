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
    control_log: str | os.PathLike | None = None,
) -> DecodeResult:
    """Write the IP packets the tunnel on ``port`` carried in ``capture`` to ``output``, opened with ``key``.

    With ``control_log``, also write there one line per control message: time, direction,
    size and the message's first line (the control protocol's header), escaped where not text.
    """
    if len(key) != KEY_SIZE:
        raise ValueError(f"a tunnel key is {KEY_SIZE} bytes")
    capture, output = Path(capture), Path(output)
    decoder = TunnelDecoder(key, port)
    log = _open_log(control_log)
    try:
        try:
            for packet in read_capture(capture, allow_truncated=allow_truncated):
                for direction, message in decoder.control(packet):
                    if log is not None:
                        log.write(_log_line(packet.t, direction, message))
        finally:
            if log is not None:
                log.close()
        decoder.finish()
        _check_found(decoder, capture, port)
    except BaseException:
        if control_log is not None:
            Path(control_log).unlink(missing_ok=True)
        raise
    partial = output.with_name(output.name + ".part")
    count = 0
    try:
        writer = _writer(partial)
        try:
            for packet in read_capture(capture, allow_truncated=allow_truncated):
                for inner in decoder.open_all(packet):
                    micros = round(packet.t * 1_000_000)
                    writer.write_packet(inner, sec=micros // 1_000_000, usec=micros % 1_000_000)
                    count += 1
        finally:
            writer.close()
        os.replace(partial, output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    notes = dict(decoder.notes)
    for direction, messages in sorted(decoder.control_messages.items()):
        notes[f"control messages {direction}"] = messages
    return DecodeResult(output, count, notes, dict(decoder.dropped))


def _open_log(path: str | os.PathLike | None):
    if path is None:
        return None
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise CaptureError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _log_line(t: float, direction: str, message: bytes) -> str:
    """``TIME DIRECTION SIZE FIRST-LINE``: the first line as text where it is, with escapes where not."""
    head, newline, rest = message.partition(b"\n")
    text = "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
        for c in head[:400].decode("utf-8", "backslashreplace")
    )
    more = f" (+{len(rest)} bytes)" if newline and rest else ""
    cut = "..." if len(head) > 400 else ""
    return f"{t:.6f} {direction:<13} {len(message):>7} {text}{cut}{more}\n"


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
