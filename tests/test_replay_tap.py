"""The replay tap: which recording a stand-in connection plays, and when it starts playing.

No sockets: a real cassette file and :class:`Replayer`, with a pipe and a loop
that only note what the tap asks of them.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pytest_netplayground.cassette import CassetteWriter
from pytest_netplayground.core.addressing import Endpoint
from pytest_netplayground.core.divergence import MissingBytes, Stall, UnusedRecording
from pytest_netplayground.core.events import (
    Closed,
    ConnectionOpened,
    Data,
    Direction,
    HalfClosed,
    Header,
    Outcome,
)
from pytest_netplayground.core.replay import ReplayConfig
from pytest_netplayground.runtime.sessions import BIND_PATIENCE, Replayer

CLIENT = Endpoint("10.0.0.2", 50000)
SERVER = Endpoint("10.0.0.1", 80)
C2S, S2C = Direction.C2S, Direction.S2C


class FakeLoop:
    def __init__(self) -> None:
        self.timers: list[tuple[float, object]] = []

    def call_at(self, when: float, callback, owner: object = None) -> None:
        self.timers.append((when, callback if owner is None else lambda: callback(owner)))

    def fire_all(self) -> None:
        timers, self.timers = self.timers, []
        for _, callback in sorted(timers, key=lambda timer: timer[0]):
            callback()


class FakePipe:
    """What a tap may ask of a pipe, noted instead of done."""

    def __init__(self, client: Endpoint) -> None:
        self.client, self.server = client, SERVER
        self.client_leg = self.server_leg = None
        self.finished = False
        self.written: dict[Direction, bytearray] = {C2S: bytearray(), S2C: bytearray()}
        self.shut: list[Direction] = []

    def write(self, direction, data) -> None:
        self.written[direction] += data

    def shut_write(self, direction) -> None:
        self.shut.append(direction)

    def abort(self) -> None:
        self.finished = True

    def check_finished(self, now) -> None:
        pass


def write_cassette(path: Path, conversations: list[tuple[bytes | None, bytes]]) -> None:
    """One connection per (request, reply); a None request: the server speaks first."""
    header = Header("10.0.0.0/24", started=1732170000.0, tool_version="0.1.0")
    with CassetteWriter(path, header) as writer:
        t = 0.0
        for conn, (request, reply) in enumerate(conversations):
            t += 0.01
            writer.write(ConnectionOpened(t, conn, ("10.0.0.2", 40000 + conn), ("10.0.0.1", 80)))
            if request is not None:
                writer.write(Data(t + 0.001, conn, C2S, request))
                writer.write(HalfClosed(t + 0.002, conn, C2S))
            writer.write(Data(t + 0.003, conn, S2C, reply))
            writer.write(HalfClosed(t + 0.004, conn, S2C))
            writer.write(Closed(t + 0.005, conn))
        writer.commit(t + 1)


@pytest.fixture
def replayer_of(tmp_path):
    def make(conversations, **config) -> Replayer:
        path = tmp_path / "recording.netplay"
        write_cassette(path, conversations)
        return Replayer(time.monotonic(), str(path), FakeLoop(), ReplayConfig(**config))

    return make


def open_stand_in(replayer: Replayer, port: int):
    """A connection the cassette stands in for, as the supervisor opens it."""
    pipe = FakePipe(Endpoint("10.0.0.2", port))
    assert replayer.on_syn(pipe.client, pipe.server) is Outcome.ESTABLISHED
    tap = replayer.tap_for(pipe, server_live=False)
    tap.attach(pipe, time.monotonic())
    return pipe, tap


def client_says(tap, pipe, request: bytes) -> None:
    now = time.monotonic()
    tap.data(pipe, C2S, memoryview(request), now)
    tap.eof(pipe, C2S, now)


def test_each_connection_gets_the_reply_recorded_for_its_request_whatever_the_order(replayer_of):
    replayer = replayer_of([(b"first", b"reply 1"), (b"second", b"reply 2")])
    (pipe_a, tap_a), (pipe_b, tap_b) = open_stand_in(replayer, 50001), open_stand_in(replayer, 50002)
    client_says(tap_a, pipe_a, b"second")
    client_says(tap_b, pipe_b, b"first")
    assert (bytes(pipe_a.written[S2C]), bytes(pipe_b.written[S2C])) == (b"reply 2", b"reply 1")


def test_nothing_is_sent_before_the_client_has_said_which_recording_it_is(replayer_of):
    replayer = replayer_of([(b"first", b"reply 1"), (b"second", b"reply 2")], pacing="flood")
    pipe, tap = open_stand_in(replayer, 50001)
    assert pipe.written[S2C] == b""
    tap.data(pipe, C2S, memoryview(b"sec"), time.monotonic())  # could still be either
    assert pipe.written[S2C] == b""
    tap.data(pipe, C2S, memoryview(b"ond"), time.monotonic())
    assert pipe.written[S2C] == b"reply 2"


def test_bytes_held_while_undecided_are_compared_in_full_once_decided(replayer_of):
    replayer = replayer_of([(b"first", b"reply 1")])
    pipe, tap = open_stand_in(replayer, 50001)
    for piece in (b"fi", b"rst"):
        tap.data(pipe, C2S, memoryview(piece), time.monotonic())
    tap.eof(pipe, C2S, time.monotonic())
    tap.closed(pipe, time.monotonic())
    assert bytes(pipe.written[S2C]) == b"reply 1"
    assert replayer.finish("abort")["divergences"].ok


def test_a_server_that_spoke_first_is_played_before_the_client_says_anything(replayer_of):
    replayer = replayer_of([(None, b"220 hello")], pacing="flood")
    pipe, _ = open_stand_in(replayer, 50001)
    assert bytes(pipe.written[S2C]) == b"220 hello"


def test_a_silent_client_gets_the_first_recording_after_the_patience_runs_out(replayer_of):
    replayer = replayer_of([(b"first", b"reply 1"), (b"second", b"reply 2")], stall_timeout=0.01)
    pipe, tap = open_stand_in(replayer, 50001)
    [(when, _)] = replayer.loop.timers
    assert when == pytest.approx(time.monotonic() + BIND_PATIENCE, abs=0.1)
    time.sleep(0.02)
    replayer.loop.fire_all()  # settles on the first recording, whose client is now late
    replayer.loop.fire_all()
    tap.closed(pipe, time.monotonic())
    found = replayer.finish("abort")["divergences"].items
    assert [(type(item), item.conn) for item in found] == [
        (Stall, 0),
        (MissingBytes, 0),
        (UnusedRecording, 1),
    ]


def test_a_connection_closed_before_its_client_spoke_is_reported_against_a_recording(replayer_of):
    replayer = replayer_of([(b"first", b"reply 1")])
    pipe, tap = open_stand_in(replayer, 50001)
    tap.closed(pipe, time.monotonic())
    report = replayer.finish("abort")["divergences"]
    assert [(type(item), item.conn) for item in report.items] == [(MissingBytes, 0)]
