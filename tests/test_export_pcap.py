"""pcap export: the synthesized TCP streams carry exactly the cassette's bytes."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from pytest_netplayground.cassette import CassetteWriter
from pytest_netplayground.core.events import (
    Closed,
    ConnectionOpened,
    Data,
    Direction,
    HalfClosed,
    Header,
    Outcome,
    Reset,
)
from pytest_netplayground.errors import CassetteError, CassetteMissing
from pytest_netplayground.export_pcap import MAX_SEGMENT, export_pcap

HEADER = Header(subnet="10.0.0.0/24", started=1732170000.25, tool_version="0.1.0")
CLIENT_TEXT = ("10.0.0.2", 40000)
CLIENT_BIN = ("10.0.0.3", 40001)
CLIENT_REFUSED = ("10.0.0.2", 40002)
CLIENT_RESET = ("10.0.0.3", 40003)
SERVER = ("10.0.0.1", 80)

rng = random.Random(1234)
BIN_UP = [rng.randbytes(n) for n in (1, 40000, 70000)]
BIN_DOWN = [rng.randbytes(n) for n in (65536, 3)]

EVENTS = [
    ConnectionOpened(0.001, 0, CLIENT_TEXT, SERVER),
    ConnectionOpened(0.002, 1, CLIENT_BIN, ("10.0.0.1", 9000)),
    Data(0.003, 0, Direction.C2S, b"GET / HTTP/1.1\r\nHost: server\r\n\r\n"),
    Data(0.004, 1, Direction.C2S, BIN_UP[0]),
    Data(0.005, 0, Direction.S2C, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
    Data(0.006, 0, Direction.S2C, b"hello"),
    Data(0.007, 1, Direction.C2S, BIN_UP[1]),
    ConnectionOpened(0.008, 2, CLIENT_REFUSED, ("10.0.0.1", 81), Outcome.REFUSED),
    Closed(0.008, 2),
    Data(0.009, 1, Direction.S2C, BIN_DOWN[0]),
    HalfClosed(0.010, 0, Direction.C2S),
    Data(0.011, 1, Direction.C2S, BIN_UP[2]),
    Data(0.012, 1, Direction.S2C, BIN_DOWN[1]),
    Closed(0.013, 0),
    HalfClosed(0.014, 1, Direction.S2C),
    HalfClosed(0.015, 1, Direction.C2S),
    Closed(0.015, 1),
    ConnectionOpened(0.016, 3, CLIENT_RESET, SERVER),
    Data(0.017, 3, Direction.C2S, b"ping"),
    Reset(0.018, 3, Direction.S2C),
    Closed(0.018, 3),
]


def sent(conn: int, direction: Direction) -> bytes:
    return b"".join(
        e.data for e in EVENTS if isinstance(e, Data) and e.conn == conn and e.direction is direction
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, int]:
    directory = tmp_path_factory.mktemp("pcap")
    cassette = directory / "rec.jsonl"
    with CassetteWriter(cassette, HEADER) as writer:
        for event in EVENTS:
            writer.write(event)
        writer.commit(0.02)
    out = directory / "rec.pcap"
    count = export_pcap(cassette, out)
    return out, count


@pytest.fixture(scope="module")
def packets(exported):
    from scapy.layers.inet import IP, TCP
    from scapy.utils import rdpcap

    out, count = exported
    read = rdpcap(str(out))
    assert len(read) == count
    return [(float(p.time), p[IP], p[TCP]) for p in read]


def flows(packets):
    by_flow = defaultdict(list)
    for time, ip, tcp in packets:
        by_flow[(ip.src, tcp.sport, ip.dst, tcp.dport)].append((time, ip, tcp))
    return by_flow


def reassemble(segments) -> bytes:
    data = [(tcp.seq, bytes(tcp.payload)) for _, _, tcp in segments if len(tcp.payload)]
    stream = b""
    for (seq, payload), following in zip(data, data[1:] + [None]):
        stream += payload
        if following is not None:
            assert following[0] == (seq + len(payload)) & 0xFFFFFFFF, "sequence numbers must be contiguous"
    return stream


@pytest.mark.parametrize(
    ("conn", "client", "server"),
    [(0, CLIENT_TEXT, SERVER), (1, CLIENT_BIN, ("10.0.0.1", 9000))],
)
def test_each_direction_reassembles_to_the_recorded_bytes(packets, conn, client, server):
    by_flow = flows(packets)
    up = by_flow[(*client, *server)]
    down = by_flow[(*server, *client)]
    assert reassemble(up) == sent(conn, Direction.C2S)
    assert reassemble(down) == sent(conn, Direction.S2C)


def test_segments_respect_the_size_limit(packets):
    sizes = [len(tcp.payload) for _, _, tcp in packets]
    assert max(sizes) == MAX_SEGMENT
    assert sum(1 for s in sizes if s) > len([e for e in EVENTS if isinstance(e, Data)])


def test_established_connection_has_a_handshake_acks_and_fins(packets):
    by_flow = flows(packets)
    up = by_flow[(*CLIENT_TEXT, *SERVER)]
    down = by_flow[(*SERVER, *CLIENT_TEXT)]
    assert str(up[0][2].flags) == "S"
    assert str(down[0][2].flags) == "SA"
    assert down[0][2].ack == (up[0][2].seq + 1) & 0xFFFFFFFF
    assert str(up[1][2].flags) == "A"
    # Every segment acknowledges everything the peer has sent so far.
    client_isn, server_isn = up[0][2].seq, down[0][2].seq
    last_ack = {}
    for _, ip, tcp in sorted(up + down, key=lambda item: item[0]):
        if "A" in str(tcp.flags):
            last_ack[ip.src] = tcp.ack
    total_down = len(sent(0, Direction.S2C))
    total_up = len(sent(0, Direction.C2S))
    assert last_ack["10.0.0.2"] == (server_isn + 1 + total_down + 1) & 0xFFFFFFFF  # SYN + data + FIN
    assert last_ack["10.0.0.1"] == (client_isn + 1 + total_up + 1) & 0xFFFFFFFF
    assert [str(t.flags) for _, _, t in up].count("FA") == 1
    assert [str(t.flags) for _, _, t in down].count("FA") == 1


def test_refused_connection_is_a_syn_and_a_reset(packets):
    by_flow = flows(packets)
    up = by_flow[(*CLIENT_REFUSED, "10.0.0.1", 81)]
    down = by_flow[("10.0.0.1", 81, *CLIENT_REFUSED)]
    assert [str(t.flags) for _, _, t in up] == ["S"]
    assert [str(t.flags) for _, _, t in down] == ["RA"]
    assert down[0][2].ack == (up[0][2].seq + 1) & 0xFFFFFFFF


def test_reset_connection_ends_with_rst_and_no_fin(packets):
    by_flow = flows(packets)
    down = by_flow[(*SERVER, *CLIENT_RESET)]
    up = by_flow[(*CLIENT_RESET, *SERVER)]
    assert str(down[-1][2].flags) == "RA"
    assert all("F" not in str(t.flags) for _, _, t in up + down)


def test_timestamps_follow_the_cassette_clock(packets):
    assert packets[0][0] == pytest.approx(HEADER.started + 0.001, abs=1e-6)
    assert packets[-1][0] == pytest.approx(HEADER.started + 0.018, abs=1e-6)
    times = [t for t, _, _ in packets]
    assert times == sorted(times)


def test_checksums_are_valid(packets):
    from scapy.layers.inet import IP, TCP

    for _, ip, tcp in packets:
        rebuilt = ip.copy()
        del rebuilt[IP].chksum
        del rebuilt[TCP].chksum
        rebuilt = IP(bytes(rebuilt))
        assert rebuilt[IP].chksum == ip.chksum
        assert rebuilt[TCP].chksum == tcp.chksum


def tshark_follow(pcap: Path, stream: int) -> tuple[bytes, bytes]:
    result = subprocess.run(
        ["tshark", "-r", str(pcap), "-q", "-z", f"follow,tcp,raw,{stream}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    lines = result.stdout.splitlines()
    body = lines[next(i for i, line in enumerate(lines) if line.startswith("Node 1:")) + 1 :]
    first, second = [], []
    for line in body:
        if line.startswith("====="):
            break
        (second if line.startswith("\t") else first).append(line.strip())
    return bytes.fromhex("".join(first)), bytes.fromhex("".join(second))


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest.mark.parametrize("conn", [0, 1, 3])
def test_tshark_follows_the_same_bytes(exported, conn):
    out, _ = exported
    stream = {0: 0, 1: 1, 3: 3}[conn]  # tshark numbers streams in order of their first packet
    up, down = tshark_follow(out, stream)
    assert up == sent(conn, Direction.C2S)
    assert down == sent(conn, Direction.S2C)


def test_missing_cassette(tmp_path):
    with pytest.raises(CassetteMissing):
        export_pcap(tmp_path / "none.jsonl", tmp_path / "out.pcap")
    assert not (tmp_path / "out.pcap").exists()


def test_unwritable_output(tmp_path):
    cassette = tmp_path / "rec.jsonl"
    with CassetteWriter(cassette, HEADER) as writer:
        writer.commit(0.0)
    with pytest.raises(CassetteError, match="cannot write pcap file .*no/such/dir/out.pcap"):
        export_pcap(cassette, tmp_path / "no" / "such" / "dir" / "out.pcap")


def test_a_corrupt_cassette_leaves_no_half_written_pcap(tmp_path):
    cassette = tmp_path / "rec.jsonl"
    with CassetteWriter(cassette, HEADER) as writer:
        writer.write(EVENTS[0])
        writer.commit(0.1)
    with cassette.open("ab") as f:
        f.write(b"garbage\n")
    with pytest.raises(CassetteError):
        export_pcap(cassette, tmp_path / "out.pcap")
    assert not (tmp_path / "out.pcap").exists()


def test_scapy_is_imported_lazily_and_never_whole(tmp_path, exported):
    cassette = exported[0].with_suffix(".jsonl")
    code = (
        "import sys\n"
        "import pytest_netplayground.export_pcap as m\n"
        "assert not any(name.startswith('scapy') for name in sys.modules), 'scapy imported eagerly'\n"
        f"m.export_pcap({str(cassette)!r}, {str(tmp_path / 'x.pcap')!r})\n"
        "assert 'scapy.all' not in sys.modules, 'scapy.all was imported'\n"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=120)


def test_a_killed_recording_exports_when_truncation_is_tolerated(tmp_path):
    from scapy.utils import rdpcap

    cassette = tmp_path / "rec.jsonl.partial"
    with CassetteWriter(tmp_path / "rec.jsonl", HEADER) as writer:
        writer.write(EVENTS[0])
        writer.write(EVENTS[2])
    with cassette.open("ab") as f:
        f.write(b'{"t": 0.1, "ev": "da')
    with pytest.raises(CassetteError, match="truncated record"):
        export_pcap(cassette, tmp_path / "out.pcap")
    assert export_pcap(cassette, tmp_path / "out.pcap", tolerate_truncation=True) == 5
    payloads = [bytes(p["TCP"].payload) for p in rdpcap(str(tmp_path / "out.pcap"))]
    assert EVENTS[2].data in payloads


def test_an_ipv6_connection_exports_as_ipv6_packets_carrying_its_bytes(tmp_path):
    from scapy.layers.inet import TCP
    from scapy.layers.inet6 import IPv6
    from scapy.utils import rdpcap

    client, server = ("fd00:1::2", 40000), ("fd00:1::1", 80)
    cassette = tmp_path / "v6.jsonl"
    with CassetteWriter(cassette, HEADER) as writer:
        for event in (
            ConnectionOpened(0.001, 0, client, server),
            Data(0.002, 0, Direction.C2S, b"GET / HTTP/1.1\r\n\r\n"),
            Data(0.003, 0, Direction.S2C, b"HTTP/1.1 204 No Content\r\n\r\n"),
            Closed(0.004, 0),
        ):
            writer.write(event)
        writer.commit(0.005)
    out = tmp_path / "v6.pcap"
    export_pcap(cassette, out)
    read = rdpcap(str(out))
    assert read and all(IPv6 in p and TCP in p for p in read)
    upstream = [p for p in read if (p[IPv6].src, p[TCP].sport, p[IPv6].dst) == (*client, server[0])]
    downstream = [p for p in read if (p[IPv6].src, p[TCP].sport, p[IPv6].dst) == (*server, client[0])]
    assert b"".join(bytes(p[TCP].payload) for p in upstream) == b"GET / HTTP/1.1\r\n\r\n"
    assert b"".join(bytes(p[TCP].payload) for p in downstream) == b"HTTP/1.1 204 No Content\r\n\r\n"
