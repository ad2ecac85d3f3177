"""Record and replay sessions keep and use the notes: listen delays, UDP datagrams, TLS streams.

No sockets: real cassette files and sessions, driven as the supervisor drives them.
"""

from __future__ import annotations

import time

from scapy.layers.inet import IP, UDP

from pytest_netplayground.cassette import Cassette, CassetteWriter
from pytest_netplayground.core.addressing import ConnectionKey, Endpoint
from pytest_netplayground.core.divergence import MissingBytes, UdpNotReplayed
from pytest_netplayground.core.events import (
    ConnectionOpened,
    Data,
    Datagram,
    Direction,
    Header,
    ListenDelay,
    Outcome,
    UdpFlow,
)
from pytest_netplayground.core.replay import ReplayConfig
from pytest_netplayground.core.standin import FALLBACK_PATIENCE, LISTEN_MARGIN
from pytest_netplayground.runtime.sessions import Recorder, Replayer

WEB = Endpoint("10.0.0.1", 443)
DNS = Endpoint("10.0.0.1", 53)
CLIENT = Endpoint("10.0.0.2", 40000)
KEY = ConnectionKey.of(CLIENT, WEB)


class NoLoop:
    def call_at(self, when, callback, owner=None) -> None:
        pass


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> memoryview:
    return memoryview(bytes(IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload))


def test_a_recorder_notes_each_servers_first_accept_and_records_the_udp_it_saw(tmp_path):
    path = tmp_path / "c.jsonl"
    recorder = Recorder(time.monotonic(), str(path), "10.0.0.0/24")
    recorder.note_host("10.0.0.1", "server")
    recorder.note_listening(WEB, 0.25)
    recorder.note_listening(WEB, 3.0)  # later connections say nothing new
    for i in range(2):
        assert recorder.on_datagram(udp("10.0.0.2", "10.0.0.1", 5000, 53, b"q%d" % i), time.monotonic())
        assert recorder.on_datagram(udp("10.0.0.1", "10.0.0.2", 53, 5000, b"\0a%d" % i), time.monotonic())
    recorder.finish("commit")
    records = list(Cassette(path).records())
    assert [r for r in records if isinstance(r, ListenDelay)] == [ListenDelay(records[1].t, WEB, 0.25)]
    [flow] = [r for r in records if isinstance(r, UdpFlow)]
    assert (flow.flow, flow.client, flow.server) == (0, Endpoint("10.0.0.2", 5000), DNS)
    datagrams = [(r.flow, r.direction, r.data) for r in records if isinstance(r, Datagram)]
    c2s, s2c = Direction.C2S, Direction.S2C
    assert datagrams == [(0, c2s, b"q0"), (0, s2c, b"\0a0"), (0, c2s, b"q1"), (0, s2c, b"\0a1")]


def write(path, records) -> None:
    with CassetteWriter(path, Header("10.0.0.0/24", started=1.0)) as writer:
        for record in records:
            writer.write(record)
        writer.commit(2.0)


def replayer(path) -> Replayer:
    return Replayer(time.monotonic(), str(path), NoLoop(), ReplayConfig())


def test_a_replayer_waits_as_long_as_the_cassette_says(tmp_path):
    noted, old = tmp_path / "noted.jsonl", tmp_path / "old.jsonl"
    opened = ConnectionOpened(0.1, 0, CLIENT, WEB)
    write(noted, [ListenDelay(0.1, WEB, 0.2), opened])
    write(old, [opened])
    assert replayer(noted).stand_in_deadline(WEB, 10.0, 10.05) == 10.0 + 0.2 + LISTEN_MARGIN
    assert replayer(noted).stand_in_deadline(DNS, 10.0, 10.05) == 10.05
    assert replayer(old).stand_in_deadline(WEB, 10.0, 10.05) == 10.05 + FALLBACK_PATIENCE


def test_a_replayer_reports_udp_and_finds_tls_streams_deep_in_a_difference(tmp_path):
    path = tmp_path / "tls.jsonl"
    server_flight = b"\x16\x03\x03\x04\x00" + bytes(1024)
    write(path, [ConnectionOpened(0.1, 0, CLIENT, WEB), Data(0.2, 0, Direction.S2C, server_flight)])
    session = replayer(path)
    assert session.on_syn(CLIENT, WEB) is Outcome.ESTABLISHED
    session.connect_failed(CLIENT, WEB, Outcome.REFUSED)  # the recording is used, never played here
    expected, actual = server_flight[884:948], server_flight[884:900]
    session.collect([MissingBytes(0, KEY, 1, Direction.S2C, 900, 1029, expected, actual)])
    session.on_datagram(udp("10.0.0.2", "10.0.0.1", 5000, 53, b"q"), time.monotonic())
    report = session.finish("commit")["divergences"]
    assert report.tls == {(0, Direction.S2C)}
    assert UdpNotReplayed("10.0.0.2", DNS, 1) in report.items
    assert "The recorded server bytes are a TLS handshake" in report.format()
