"""Record mode: live traffic, every connection written to the cassette as it happens."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .. import __version__
from ..cassette import CassetteWriter, partial_path_for
from ..core.addressing import Endpoint
from ..core.events import (
    Closed,
    ConnectionOpened,
    Direction,
    HalfClosed,
    Header,
    ListenDelay,
    Outcome,
    Reset,
    TlsNote,
)
from ..core.udp import UdpFlows, is_udp, refused_key
from ..errors import CassetteError
from .pipes import Pipe, Tap
from .session import Session


class RecordTap(Tap):
    """Forwards like live mode and writes every step to the recorder."""

    def __init__(self, recorder: "Recorder", conn: int):
        self.recorder = recorder
        self.conn = conn

    def data(self, pipe, direction, data, now):
        pipe.write(direction, data)
        self.recorder.write_data(self.recorder.t(now), self.conn, direction, data)

    def eof(self, pipe, direction, now):
        self.recorder.write(HalfClosed(self.recorder.t(now), self.conn, direction))
        pipe.shut_write(direction)

    def reset(self, pipe, direction, now):
        self.recorder.write(Reset(self.recorder.t(now), self.conn, direction))
        pipe.abort()

    def closed(self, pipe, now):
        self.recorder.write(Closed(self.recorder.t(now), self.conn))

    def tls_started(self, sni: str | None, alpn: str | None, now: float) -> None:
        """The proxy terminated TLS on this connection: what follows is its plaintext."""
        self.recorder.write(TlsNote(self.recorder.t(now), self.conn, sni, alpn))


class Recorder(Session):
    """Record mode: live traffic, every connection written to ``path`` as it happens."""

    mode = "record"
    udp_tap = True

    def __init__(self, clock_origin: float, path: str, subnet: str, subnet6: str = "", tls: str = "off"):
        super().__init__(clock_origin)
        self.tls = tls
        self.path = Path(path)
        self.subnet = subnet
        self.subnet6 = subnet6
        self.started = time.time()
        self.writer: CassetteWriter | None = None
        self.error: CassetteError | None = None
        self.next_conn = 0
        self.listened: set[Endpoint] = set()
        self.udp = UdpFlows()
        self._probe()

    def _header(self) -> Header:
        seed, faults = self.fault_state()
        return Header(
            self.subnet,
            tuple(self.hosts),
            self.started,
            __version__,
            subnet6=self.subnet6,
            tls=self.tls,
            faults=faults,
            fault_seed=seed if faults else None,
        )

    def _probe(self) -> None:
        """Fail now, before any process starts, if the cassette cannot be written."""
        CassetteWriter(self.path, self._header()).abort()
        os.unlink(partial_path_for(self.path))

    def _writing(self, write) -> None:
        """Run ``write(writer)``, making the writer at the first event (the header then
        lists the hosts known by then). A failure keeps the sandbox running; it is
        reported at the end."""
        if self.error is not None:
            return
        try:
            if self.writer is None:
                self.writer = CassetteWriter(self.path, self._header())
            write(self.writer)
        except CassetteError as exc:
            self.error = exc

    def write(self, event) -> None:
        self._writing(lambda writer: writer.write(event))

    def write_data(self, t: float, conn: int, direction: Direction, data: memoryview) -> None:
        self._writing(lambda writer: writer.write_data(t, conn, direction, data))

    def _open(self, client: Endpoint, server: Endpoint, outcome: Outcome) -> int:
        conn = self.next_conn
        self.next_conn += 1
        self.write(ConnectionOpened(self.t(), conn, client, server, outcome))
        return conn

    def tap_for(self, pipe: Pipe, server_live: bool) -> Tap:
        return RecordTap(self, self._open(pipe.client, pipe.server, Outcome.ESTABLISHED))

    def connect_failed(self, client: Endpoint, server: Endpoint, outcome: Outcome) -> None:
        self._open(client, server, outcome)

    def note_listening(self, server: Endpoint, delay: float) -> None:
        if server not in self.listened:
            self.listened.add(server)
            self.write(ListenDelay(self.t(), server, round(max(delay, 0.0), 6)))

    def on_datagram(self, packet: memoryview, now: float) -> bool:
        if not is_udp(packet):
            key = refused_key(packet)
            refusal = None if key is None else self.udp.refused(key, self.t(now))
            if refusal is not None:
                self.write(refusal)
            return True
        opened, datagram = self.udp.see(packet, self.t(now))
        if opened is not None:
            self.write(opened)
        if datagram is not None:
            self.write(datagram)
        return True

    def finish(self, action: object) -> dict:
        result: dict = {"cassette": None}
        self._writing(lambda writer: None)  # a run without connections still gets its cassette
        writer = self.writer
        try:
            if self.error is not None:
                raise self.error
            assert writer is not None
            if action == "commit":
                result["cassette"] = str(writer.commit(self.t()))
            elif isinstance(action, tuple) and action[0] == "keep_as":
                result["cassette"] = str(writer.keep_as(action[1], self.t()))
            elif action == "discard":
                partial = writer.abort()
                if partial is not None:
                    partial.unlink(missing_ok=True)
            else:
                result["cassette"] = str(writer.abort())
        except CassetteError as exc:
            if writer is not None:
                writer.abort()
            result["error"] = exc
        return result
