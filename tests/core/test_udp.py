"""Recorded UDP without sockets: flow numbering, the router's hand-over, the records, show and export."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP, UDP

from pytest_netplayground.cassette import Cassette, CassetteWriter
from pytest_netplayground.core.addressing import AddressPlan, Endpoint
from pytest_netplayground.core.codec import Decoder, End, decode_record, encode_record
from pytest_netplayground.core.events import Datagram, Direction, Header, UdpFlow
from pytest_netplayground.core.render import render_conversations
from pytest_netplayground.core.router import Router, Verdict
from pytest_netplayground.core.udp import UdpFlows
from pytest_netplayground.errors import CassetteFormatError

HEADER = Header("10.0.0.0/24", started=1.0)
DNS = Endpoint("10.0.0.1", 53)
CLIENT = Endpoint("10.0.0.2", 40000)
C2S, S2C = Direction.C2S, Direction.S2C


def packet(src: Endpoint, dst: Endpoint, payload: bytes) -> bytes:
    return bytes(IP(src=src.host, dst=dst.host) / UDP(sport=src.port, dport=dst.port) / payload)


# -- the records ------------------------------------------------------------------


@pytest.mark.parametrize(
    "record, line",
    [
        (
            UdpFlow(0.5, 3, CLIENT, DNS),
            b'{"t": 0.500000, "ev": "flow", "flow": 3, "client": "10.0.0.2:40000", "server": "10.0.0.1:53"}\n',
        ),
        (Datagram(0.6, 3, C2S, b"hello"), b'{"t": 0.600000, "ev": "dgram", "flow": 3, "dir": "c2s", "text": "hello"}\n'),
        (
            Datagram(0.7, 3, S2C, b"\x00\xffab"),
            b'{"t": 0.700000, "ev": "dgram", "flow": 3, "dir": "s2c", "b64": "AP9hYg=="}\n',
        ),
        (Datagram(0.8, 0, C2S, b""), b'{"t": 0.800000, "ev": "dgram", "flow": 0, "dir": "c2s", "text": ""}\n'),
    ],
)
def test_udp_records_round_trip(record, line):
    assert encode_record(record) == line
    assert decode_record(line) == record


@pytest.mark.parametrize(
    "line, field",
    [
        (b'{"t": 1, "ev": "flow", "flow": -1, "client": "10.0.0.2:1", "server": "10.0.0.1:53"}', '"flow"'),
        (b'{"t": 1, "ev": "flow", "flow": 0, "client": "10.0.0.2", "server": "10.0.0.1:53"}', '"client"'),
        (b'{"t": 1, "ev": "dgram", "flow": 0, "dir": "up", "text": ""}', '"dir"'),
        (b'{"t": 1, "ev": "dgram", "flow": 0, "dir": "c2s"}', '"text"'),
    ],
)
def test_malformed_udp_records_are_refused_naming_the_field(line, field):
    with pytest.raises(CassetteFormatError, match=field):
        decode_record(line)


def test_a_datagram_of_a_flow_never_opened_is_refused_in_a_stream():
    decoder = Decoder()
    decoder.receive(encode_record(HEADER) + encode_record(Datagram(0.1, 4, C2S, b"x")))
    with pytest.raises(CassetteFormatError, match="UDP flow 4, which was never opened"):
        while decoder.next_record() is not None:
            pass


def test_a_cassette_keeps_its_udp_out_of_the_tcp_events_and_in_its_notes(tmp_path):
    path = tmp_path / "udp.jsonl"
    writer = CassetteWriter(path, HEADER)
    records = [UdpFlow(0.1, 0, CLIENT, DNS), Datagram(0.1, 0, C2S, b"q"), Datagram(0.2, 0, S2C, b"\x00a")]
    for record in records:
        writer.write(record)
    writer.commit(1.0)
    cassette = Cassette(path)
    assert list(cassette.events()) == []
    notes = cassette.index().notes
    assert notes.udp_flows == {0: records[0]}
    assert notes.datagrams == records[1:]
    assert [r for r in cassette.records() if isinstance(r, (UdpFlow, Datagram))] == records


# -- numbering flows -------------------------------------------------------------


def test_the_first_sender_is_the_client_and_each_datagram_keeps_its_bytes():
    flows = UdpFlows()
    opened, question = flows.see(packet(CLIENT, DNS, b"q1"), 1.0)
    assert opened == UdpFlow(1.0, 0, CLIENT, DNS)
    assert question == Datagram(1.0, 0, C2S, b"q1")
    assert flows.see(packet(DNS, CLIENT, b"a1"), 1.5) == (None, Datagram(1.5, 0, S2C, b"a1"))
    # A resolver asking from a new port opens a new flow.
    other = Endpoint("10.0.0.2", 40001)
    opened, _ = flows.see(packet(other, DNS, b""), 2.0)
    assert opened == UdpFlow(2.0, 1, other, DNS)
    assert flows.counts == [2, 1]


def test_past_the_flow_limit_datagrams_are_counted_not_recorded():
    flows = UdpFlows(limit=1)
    flows.see(packet(CLIENT, DNS, b"q"), 0.0)
    assert flows.see(packet(Endpoint("10.0.0.3", 9), DNS, b"q"), 0.0) == (None, None)
    assert flows.see(packet(DNS, CLIENT, b"a"), 0.0)[1] == Datagram(0.0, 0, S2C, b"a")
    assert flows.unrecorded == 1


@pytest.fixture
def router() -> Router:
    router = Router(AddressPlan("10.0.0.0/24"))
    for i in range(3):
        router.add_host(i, f"10.0.0.{i + 1}")
    return router


def route(router: Router, raw: bytes) -> int:
    buf = bytearray(raw)
    return router.from_host(buf, len(buf))


def test_the_router_hands_whole_udp_datagrams_to_a_tapping_session_only(router):
    question = packet(CLIENT, DNS, b"q")
    assert route(router, question) == Verdict.DELIVER
    router.udp_tap = True
    assert route(router, question) == Verdict.UDP
    assert router.target == 0
    # Fragments carry no whole datagram: they are delivered as they are.
    first = bytes(IP(src="10.0.0.2", dst="10.0.0.1", flags="MF") / UDP(sport=1, dport=53) / (b"x" * 16))
    assert route(router, first) == Verdict.DELIVER
    assert route(router, bytes(IP(src="10.0.0.2", dst="10.0.0.1", frag=100) / (b"x" * 16))) == Verdict.DELIVER
    assert route(router, bytes(IP(src="10.0.0.2", dst="10.0.0.1") / TCP(flags="A"))) == Verdict.TO_PROXY


# -- show and export -------------------------------------------------------------


def test_show_lists_each_flow_with_its_datagrams():
    records = [
        HEADER,
        UdpFlow(0.1, 0, CLIENT, DNS),
        Datagram(0.1, 0, C2S, b"question"),
        Datagram(0.2, 0, S2C, b"\x00\x01answer"),
        End(1.0),
    ]
    text = render_conversations(HEADER, records)
    assert "UDP flow 0 10.0.0.2:40000 -> 10.0.0.1:53" in text
    assert "client --> server  datagram of 8 bytes" in text
    assert "question" in text
    assert "client <-- server  datagram of 8 bytes" in text
    assert "00 01 61 6e" in text
    assert "not recorded" not in text
    assert text.rstrip().splitlines()[-1] == "0 connections, 1 UDP flow; the recording finished cleanly"


def test_export_writes_one_udp_packet_per_datagram(tmp_path):
    from scapy.utils import rdpcap

    from pytest_netplayground.export_pcap import export_pcap

    path = tmp_path / "udp.jsonl"
    writer = CassetteWriter(path, HEADER)
    for record in [UdpFlow(0.1, 0, CLIENT, DNS), Datagram(0.1, 0, C2S, b"q"), Datagram(0.2, 0, S2C, b"ab")]:
        writer.write(record)
    writer.commit(1.0)
    assert export_pcap(path, tmp_path / "out.pcap") == 2
    packets = rdpcap(str(tmp_path / "out.pcap"))
    got = [(p[IP].src, p[UDP].sport, p[IP].dst, p[UDP].dport, bytes(p[UDP].payload)) for p in packets]
    assert got == [("10.0.0.2", 40000, "10.0.0.1", 53, b"q"), ("10.0.0.1", 53, "10.0.0.2", 40000, b"ab")]
