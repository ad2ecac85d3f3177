"""``netplay tunnel-decode``: a capture of the tunnel, written here with scapy, opened with the key."""

from __future__ import annotations

import random
import shutil
import subprocess

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw
from scapy.utils import RawPcapReader, rdpcap, wrpcap

from pytest_netplayground.cli import main
from pytest_netplayground.core.tunnel_crypto import Handshake, parse_key
from pytest_netplayground.errors import CaptureError, TunnelKeyMismatch
from pytest_netplayground.runtime.keyfile import write_key_file
from pytest_netplayground.tunnel_capture import decode_tunnel_capture

SUPERVISOR, AGENT = ("192.0.2.1", 40000), ("192.0.2.2", 50000)
UDP_SUPERVISOR = 41000


def _ip(src: str, dst: str):
    return IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)


class Wire:
    """Frames of a capture between the supervisor and the agent, with times and TCP sequence numbers."""

    def __init__(self, supervisor=SUPERVISOR, agent=AGENT):
        self.frames, self.t = [], 1_700_000_000.0
        self.ends = {"s": supervisor, "a": agent}
        self.seq = {"s": 1000, "a": 9000}

    def _add(self, packet):
        self.t += 0.001
        packet.time = self.t
        self.frames.append(packet)

    def tcp(self, who: str, data: bytes = b"", flags: str = "PA", segment: int = 1460, shuffle=None):
        other = "a" if who == "s" else "s"
        (src, sport), (dst, dport) = self.ends[who], self.ends[other]
        if "S" in flags:
            self._add(_ip(src, dst) / TCP(sport=sport, dport=dport, flags=flags, seq=self.seq[who]))
            self.seq[who] += 1
            return
        pieces = [(self.seq[who] + i, data[i : i + segment]) for i in range(0, len(data), segment)]
        self.seq[who] += len(data)
        if shuffle is not None:
            shuffle.shuffle(pieces)
        for seq, piece in pieces:
            ip = _ip(src, dst) / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=self.seq[other])
            self._add(ip / Raw(piece))

    def udp(self, who: str, payload: bytes):
        (supervisor, _), agent = self.ends["s"], self.ends["a"]
        ends = [(supervisor, UDP_SUPERVISOR), agent]
        (src, sport), (dst, dport) = ends if who == "s" else ends[::-1]
        self._add(_ip(src, dst) / UDP(sport=sport, dport=dport) / Raw(payload))


def connect(wire: Wire, key: bytes, agent_key: bytes | None = None, plaintext: bool = False, segment=1460, rng=None):
    """A control connection and its handshake, as the two sides would send it."""
    s = Handshake.supervisor(key, insecure_plaintext=plaintext)
    a = Handshake.agent(agent_key or key)
    wire.tcp("s", flags="S")
    wire.tcp("a", flags="SA")
    hello = s.initial()
    wire.tcp("s", hello, segment=segment, shuffle=rng)
    agent_hello = a.receive(hello)
    wire.tcp("a", agent_hello, segment=segment, shuffle=rng)
    try:
        proof = s.receive(agent_hello)
    except TunnelKeyMismatch as exc:
        wire.tcp("s", exc.reply)
        return None, None
    wire.tcp("s", proof)
    ok = a.receive(proof)
    wire.tcp("a", ok)
    assert s.receive(ok) == b"" and s.done
    wire.tcp("s", s.keys.control().seal(b"spawn ..."))
    return s.keys.datagrams(), a.keys.datagrams()


def inner_packets(n: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 2:
            p = IP(src="10.0.0.2", dst="10.0.0.9") / TCP(sport=5000 + i, dport=80, flags="PA") / Raw(rng.randbytes(i * 37))
        else:
            p = IP(src="10.0.0.9", dst="10.0.0.2") / ICMP(id=i) / Raw(rng.randbytes(i))
        out.append(bytes(p))
    return out


@pytest.fixture
def key_file(tmp_path):
    return write_key_file(tmp_path / "tunnel.key")


def key_of(path) -> bytes:
    return parse_key(open(path, "rb").read(), str(path))


def write(tmp_path, wire: Wire):
    path = tmp_path / "tunnel.pcap"
    wrpcap(str(path), wire.frames, linktype=101)  # raw IP: no link layer to resolve
    return path


@pytest.mark.parametrize("plaintext", [False, True], ids=["sealed", "plaintext"])
def test_decode_gives_the_inner_packets_both_ways(tmp_path, key_file, plaintext):
    key = key_of(key_file)
    wire = Wire()
    to_agent, to_supervisor = connect(wire, key, plaintext=plaintext, segment=7, rng=random.Random(3))
    packets = inner_packets(12)
    expected = []
    for i, packet in enumerate(packets):
        who = "s" if i % 3 else "a"
        datagram = (to_agent if who == "s" else to_supervisor).seal(packet)
        wire.udp(who, datagram)
        expected.append(packet)
        if i == 4:
            wire.udp(who, datagram)  # seen twice (captured on two interfaces)
    wire.udp("s", b"garbage" * 10)
    forged = bytearray(to_agent.seal(packets[0]))
    forged[-1] ^= 1
    wire.udp("s", bytes(forged))
    output = tmp_path / "inner.pcap"
    result = decode_tunnel_capture(write(tmp_path, wire), key, output)
    assert [bytes(p) for p in rdpcap(str(output))] == expected
    assert result.packets == len(expected)
    assert result.notes == {"sessions": 1, "control messages to agent": 1} | (
        {"plaintext sessions": 1} if plaintext else {}
    )
    assert result.dropped == {"replayed": 1, "malformed": 1, "auth": 1}
    assert not (tmp_path / "inner.pcap.part").exists()


def test_several_sessions_and_a_wrong_key_one(tmp_path, key_file):
    key = key_of(key_file)
    wire = Wire()
    first = connect(wire, key)
    wire.ends["s"] = ("192.0.2.1", 40001)
    second = connect(wire, key)
    wire.ends["s"] = ("192.0.2.1", 40002)
    assert connect(wire, key, agent_key=bytes(32)) == (None, None)
    packets = inner_packets(6, seed=1)
    for i, packet in enumerate(packets):
        sender = (first, second)[i % 2][i % 3 == 0]
        wire.udp("s" if i % 3 else "a", sender.seal(packet))
    result = decode_tunnel_capture(write(tmp_path, wire), key, tmp_path / "out.pcap")
    assert [bytes(p) for p in rdpcap(str(tmp_path / "out.pcap"))] == packets
    assert result.notes == {"sessions": 2, "wrong key": 1, "control messages to agent": 2}


def test_datagrams_without_their_handshake_are_counted(tmp_path, key_file):
    key = key_of(key_file)
    wire, elsewhere = Wire(), Wire()
    to_agent, _ = connect(wire, key)
    lost, _ = connect(elsewhere, key)  # a session whose control connection the capture missed
    wire.udp("s", to_agent.seal(inner_packets(1)[0]))
    wire.udp("s", lost.seal(inner_packets(1)[0]))
    result = decode_tunnel_capture(write(tmp_path, wire), key, tmp_path / "out.pcap")
    assert result.packets == 1 and result.dropped == {"no session": 1}


def test_wrong_key_is_one_clear_error_and_no_output(tmp_path, key_file):
    wire = Wire()
    to_agent, _ = connect(wire, key_of(key_file))
    wire.udp("s", to_agent.seal(inner_packets(1)[0]))
    with pytest.raises(TunnelKeyMismatch, match="another key"):
        decode_tunnel_capture(write(tmp_path, wire), bytes(32), tmp_path / "out.pcap", control_log=tmp_path / "c.log")
    assert list(tmp_path.glob("out.pcap*")) == [] and not (tmp_path / "c.log").exists()


def test_capture_without_handshake_says_what_to_capture(tmp_path, key_file):
    wire = Wire()
    wire.udp("s", b"x" * 60)
    with pytest.raises(CaptureError, match="start the capture before"):
        decode_tunnel_capture(write(tmp_path, wire), key_of(key_file), tmp_path / "out.pcap")


def test_cli_decodes_and_reports(tmp_path, key_file, capsys):
    key = key_of(key_file)
    wire = Wire(agent=("192.0.2.2", 6000))
    to_agent, _ = connect(wire, key)
    for packet in inner_packets(3):
        wire.udp("s", to_agent.seal(packet))
    capture = write(tmp_path, wire)
    out = tmp_path / "inner.pcap"
    code = main(["tunnel-decode", str(capture), "--key-file", str(key_file), "--port", "6000", "-o", str(out)])
    assert code == 0
    assert f"wrote 3 packets to {out}" in capsys.readouterr().err
    code = main(["tunnel-decode", str(capture), "--key-file", str(key_file), "-o", str(tmp_path / "x.pcap")])
    assert code == 1 and "no tunnel handshake on port 50000" in capsys.readouterr().err
    if shutil.which("tshark"):
        shown = subprocess.run(["tshark", "-r", str(out)], capture_output=True, text=True, timeout=60).stdout
        assert shown.count("10.0.0.9 → 10.0.0.2") == 2 and "ICMP" in shown


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_reads_the_plaintext_mode_as_geneve(tmp_path, key_file):
    """The documented way to look at --insecure-plaintext traffic without netplay."""
    wire = Wire()
    to_agent, to_supervisor = connect(wire, key_of(key_file), plaintext=True)
    wire.udp("s", to_agent.seal(inner_packets(2)[1]))
    wire.udp("a", to_supervisor.seal(inner_packets(1)[0]))
    capture = write(tmp_path, wire)
    shown = subprocess.run(
        ["tshark", "-r", str(capture), "-d", "udp.port==50000,geneve", "-Y", "geneve", "-T", "fields",
         "-e", "geneve.vni", "-e", "ip.src", "-e", "tcp.dstport", "-e", "icmp.type"],
        capture_output=True, text=True, timeout=60,
    ).stdout.splitlines()
    assert shown == ["0x4e5054\t192.0.2.1,10.0.0.2\t80\t", "0x4e5054\t192.0.2.2,10.0.0.9\t\t8"]


def test_control_messages_are_logged_in_order_both_ways(tmp_path, key_file):
    key = key_of(key_file)
    s = Handshake.supervisor(key)
    a = Handshake.agent(key)
    wire = Wire()
    wire.tcp("s", flags="S")
    wire.tcp("a", flags="SA")
    hello = s.initial()
    wire.tcp("s", hello)
    agent_hello = a.receive(hello)
    wire.tcp("a", agent_hello)
    proof = s.receive(agent_hello)
    wire.tcp("s", proof)
    ok = a.receive(proof)
    first = a.keys.control().seal(b'{"op":"ready"}\n')  # in the same segment as OK
    wire.tcp("a", ok + first)
    s.receive(ok + first)
    big = s.keys.control().seal(b'{"op":"spawn","argv":["sh"]}\n' + bytes(5000))
    wire.tcp("s", big, segment=536, shuffle=random.Random(2))  # split and out of order
    wire.tcp("a", a.keys.control().seal(b"\xff\x00 not text"))
    log = tmp_path / "control.log"
    result = decode_tunnel_capture(write(tmp_path, wire), key, tmp_path / "out.pcap", control_log=log)
    lines = log.read_text().splitlines()
    assert [line.split(None, 3)[1:] for line in lines] == [
        ["to", "supervisor", "15 {\"op\":\"ready\"}"],
        ["to", "agent", '5029 {"op":"spawn","argv":["sh"]} (+5000 bytes)'],
        ["to", "supervisor", "11 \\xff\\x00 not text"],
    ]
    assert result.notes == {"sessions": 1, "control messages to agent": 1, "control messages to supervisor": 2}


def test_a_forged_control_frame_stops_that_direction_only(tmp_path, key_file):
    key = key_of(key_file)
    wire = Wire()
    to_agent, _ = connect(wire, key)
    wire.tcp("s", b"\x00\x00\x00\x11" + bytes(17))  # a frame no key made
    wire.udp("s", to_agent.seal(inner_packets(1)[0]))
    result = decode_tunnel_capture(write(tmp_path, wire), key, tmp_path / "out.pcap")
    assert result.notes["control streams that fail authentication"] == 1
    assert result.notes["control messages to agent"] == 1  # the one before it
    assert result.packets == 1


def test_decode_over_an_ipv6_underlay(tmp_path, key_file):
    key = key_of(key_file)
    wire = Wire(supervisor=("2001:db8::1", 40000), agent=("2001:db8::2", 50000))
    to_agent, to_supervisor = connect(wire, key)
    packets = inner_packets(4, seed=9)
    for i, packet in enumerate(packets):
        wire.udp("s" if i % 2 else "a", (to_agent if i % 2 else to_supervisor).seal(packet))
    result = decode_tunnel_capture(write(tmp_path, wire), key, tmp_path / "out.pcap")
    assert [data for data, _ in RawPcapReader(str(tmp_path / "out.pcap"))] == packets
    assert result.notes["sessions"] == 1 and result.dropped == {}


def test_a_datagram_cut_by_the_snap_length_is_counted_as_such(tmp_path, key_file):
    key = key_of(key_file)
    wire = Wire()
    to_agent, _ = connect(wire, key)
    wire.udp("s", to_agent.seal(inner_packets(3)[2]))
    wire.udp("s", to_agent.seal(inner_packets(2)[1]))
    path = write(tmp_path, wire)
    frames = list(rdpcap(str(path)))
    cut = tmp_path / "cut.pcap"
    wrpcap(str(cut), frames[:-2] + [frames[-2].__class__(bytes(frames[-2])[:60])] + frames[-1:], linktype=101)
    with open(cut, "r+b") as handle:  # keep the record's original length: a snapped record
        data = bytearray(handle.read())
        record = len(data) - len(bytes(frames[-1])) - 16 - 60 - 16
        original = len(bytes(frames[-2]))
        data[record + 12 : record + 16] = original.to_bytes(4, "little")
        handle.seek(0)
        handle.write(data)
    result = decode_tunnel_capture(cut, key, tmp_path / "out.pcap")
    assert result.packets == 1 and result.dropped == {"cut short in the capture": 1}


@pytest.mark.parametrize("plaintext", [False, True], ids=["sealed", "plaintext"])
def test_a_run_of_datagrams_captured_as_one_udp_packet_decodes_to_each(tmp_path, key_file, plaintext):
    """A capture on the sending machine may show a run sent with UDP segmentation offload uncut."""
    key = key_of(key_file)
    wire = Wire()
    to_agent, _ = connect(wire, key, plaintext=plaintext)
    rng = random.Random(5)
    full = [bytes(IP(src="10.0.0.9", dst="10.0.0.2") / TCP(sport=80, dport=5000) / Raw(rng.randbytes(1000)))
            for _ in range(5)]
    last = bytes(IP(src="10.0.0.9", dst="10.0.0.2") / TCP(sport=80, dport=5000) / Raw(rng.randbytes(10)))
    lone = inner_packets(3)[2]
    wire.udp("s", b"".join(to_agent.seal(p) for p in [*full, last]))
    wire.udp("s", to_agent.seal(lone))
    output = tmp_path / "inner.pcap"
    result = decode_tunnel_capture(write(tmp_path, wire), key, output)
    assert [bytes(p) for p in rdpcap(str(output))] == [*full, last, lone]
    assert result.packets == 7 and not result.dropped
