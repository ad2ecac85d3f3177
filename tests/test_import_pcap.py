"""``netplay import``: pcap and pcapng files written with scapy, imported into cassettes."""

from __future__ import annotations

import pytest

from pytest_netplayground.cassette import Cassette
from pytest_netplayground.cassette_writer import CassetteWriter
from pytest_netplayground.cli import main
from pytest_netplayground.core.events import (
    Closed,
    ConnectionOpened,
    Data,
    Datagram,
    Direction,
    HalfClosed,
    Header,
    HostInfo,
    Outcome,
    Reset,
    UdpFlow,
)
from pytest_netplayground.core.turns import split_turns
from pytest_netplayground.errors import CaptureError
from pytest_netplayground.export_pcap import export_pcap
from pytest_netplayground.import_pcap import import_capture
from tests.support.captures import (
    CLIENT6,
    REQUEST,
    RESPONSE,
    SERVER,
    SERVER6,
    conversation,
    frames,
    per_direction,
    udp_packet,
    write_pcap,
)

pytest.importorskip("scapy")


def conversations(path) -> dict:
    """{conn: (client, server, [(direction, turn bytes)])} of a cassette."""
    out = {}
    events = list(Cassette(path).events())
    for event in events:
        if isinstance(event, ConnectionOpened):
            turns = split_turns(e for e in events if getattr(e, "conn", None) == event.conn)
            out[event.conn] = (str(event.client), str(event.server), [(t.direction.value, t.data) for t in turns])
    return out


def http_exchange(**kwargs):
    return conversation([("c2s", REQUEST), ("s2c", RESPONSE)], **kwargs)


def messy(segments):
    """The same segments reordered, with copies: what a capture on a lossy path shows."""
    data = [i for i, s in enumerate(segments) if s.payload and s.src[1] == 80]
    a, b, c = data[:3]
    return segments[:a] + [segments[b], segments[c], segments[a], segments[b], segments[a]] + segments[c + 1 :]


@pytest.mark.parametrize("link", ["ether", "raw", "sll", "sll2", "loop"])
def test_each_link_type_imports_the_exchange_byte_for_byte(tmp_path, link):
    capture, cassette = tmp_path / "c.pcap", tmp_path / "c.cassette"
    write_pcap(capture, frames(messy(http_exchange()), link), link)
    result = import_capture(capture, cassette)
    assert conversations(cassette) == {
        0: ("10.0.0.2:40000", "10.0.0.1:80", [("c2s", REQUEST), ("s2c", RESPONSE)])
    }
    [summary] = result.flows.summaries
    assert summary.retransmitted == 2 and summary.placed == 2
    assert not cassette.with_name(cassette.name + ".partial").exists()


def test_pcapng_and_ipv6_import_too(tmp_path):
    capture, cassette = tmp_path / "c.pcapng", tmp_path / "c.cassette"
    write_pcap(capture, frames(messy(http_exchange(client=CLIENT6, server=SERVER6))), ng=True)
    import_capture(capture, cassette, subnet6="fd00:1::/64")
    header = Cassette(cassette).header
    assert [(h.address, h.address6) for h in header.hosts] == [("10.0.0.1", "fd00:1::1"), ("10.0.0.2", "fd00:1::2")]
    assert conversations(cassette) == {
        0: ("[fd00:1::2]:40000", "[fd00:1::1]:80", [("c2s", REQUEST), ("s2c", RESPONSE)])
    }


def interface_statistics_block() -> bytes:
    """A pcapng Interface Statistics Block (type 5): what tshark and dumpcap write after the last packet."""
    import struct

    return struct.pack("<IIIII", 5, 24, 0, 0, 0) + struct.pack("<I", 24)


def test_a_pcapng_ending_in_a_statistics_block_imports_whole_and_a_block_cut_short_is_reported(tmp_path):
    capture, cassette = tmp_path / "c.pcapng", tmp_path / "c.cassette"
    write_pcap(capture, frames(http_exchange()), ng=True)
    whole = capture.read_bytes()
    capture.write_bytes(whole + interface_statistics_block())
    result = import_capture(capture, cassette)
    assert result.truncated_at is None
    assert conversations(cassette)[0][2] == [("c2s", REQUEST), ("s2c", RESPONSE)]
    capture.write_bytes(whole + interface_statistics_block()[:-6])
    with pytest.raises(CaptureError, match=f"cut short or corrupt at byte {len(whole)}"):
        import_capture(capture, cassette)


def test_a_connection_joined_mid_way_a_gap_and_a_reset_are_imported_and_reported(tmp_path, capsys):
    mid_way = conversation([("c2s", b"A" * 120), ("s2c", b"B" * 80)], handshake=False, client=("192.0.2.5", 41000))
    mid_way = mid_way[1:]  # the capture starts after the client's first segment
    gapped = http_exchange(client=("192.0.2.5", 42000), t0=mid_way[-1].t + 1)
    lost = [i for i, s in enumerate(gapped) if s.payload and s.src == SERVER][1]
    gapped = gapped[:lost] + gapped[lost + 1 :]
    reset = conversation([("c2s", b"hi"), ("s2c", b"ho")], end="rst", client=("192.0.2.5", 43000), t0=gapped[-1].t + 1)
    capture, cassette = tmp_path / "c.pcap", tmp_path / "c.cassette"
    write_pcap(capture, frames(mid_way + gapped + reset))
    assert main(["import", str(capture), "-o", str(cassette)]) == 0
    found = conversations(cassette)
    assert found[0][2] == [("c2s", b"A" * 70), ("s2c", b"B" * 80)]
    assert found[1][2] == [("c2s", REQUEST), ("s2c", RESPONSE[:50])]
    assert found[2][2] == [("c2s", b"hi"), ("s2c", b"ho")]
    events = list(Cassette(cassette).events())
    assert [type(e) for e in events if getattr(e, "conn", None) == 2][-2:] == [Reset, Closed]
    out = capsys.readouterr().out
    assert "imported 3 TCP connections" in out
    assert "connections without a handshake (joined mid-way): 1" in out
    assert "gap of 50 bytes at s2c offset 50" in out
    assert "conn 2: 192.0.2.5:43000 -> 192.0.2.7:80: 2 bytes c2s, 2 bytes s2c; reset" in out
    assert "192.0.2.7 -> 10.0.0.1" in out and "192.0.2.5 -> 10.0.0.2" in out


def test_the_filter_and_the_map_choose_what_is_imported_and_where(tmp_path, capsys):
    web = http_exchange()
    other = conversation([("c2s", b"ping"), ("s2c", b"pong")], server=("198.51.100.9", 6379), t0=web[-1].t + 1)
    timed = frames(web + other, "raw") + [udp_packet(web[-1].t + 2, ("192.0.2.5", 5353), ("198.51.100.1", 53), b"q")]
    capture, cassette = tmp_path / "c.pcap", tmp_path / "c.cassette"
    write_pcap(capture, timed, "raw")
    code = main(
        ["import", str(capture), "-o", str(cassette), "--filter", "tcp port 80", "--map", "192.0.2.7=10.0.0.5"]
    )
    assert code == 0
    assert conversations(cassette) == {0: ("10.0.0.1:40000", "10.0.0.5:80", [("c2s", REQUEST), ("s2c", RESPONSE)])}
    assert [h.address for h in Cassette(cassette).header.hosts] == [f"10.0.0.{i}" for i in range(1, 6)]
    assert "192.0.2.7 -> 10.0.0.5" in capsys.readouterr().out

    assert main(["import", str(capture), "-o", str(cassette), "--filter", "udp or port 6379"]) == 0
    events = list(Cassette(cassette).events())
    assert per_direction(events) == {"c2s": b"ping", "s2c": b"pong"}
    flows = [e for e in Cassette(cassette).records() if isinstance(e, (UdpFlow, Datagram))]
    assert [type(e) for e in flows] == [UdpFlow, Datagram]
    assert str(flows[0].server) == "10.0.0.2:53"  # servers first: the redis server 10.0.0.1, then DNS


def test_a_bad_filter_fails_before_anything_is_written(tmp_path, capsys):
    capture, cassette = tmp_path / "c.pcap", tmp_path / "c.cassette"
    write_pcap(capture, frames(http_exchange()))
    assert main(["import", str(capture), "-o", str(cassette), "--filter", "tcp prot 80"]) == 1
    assert "'prot'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [capture]


def test_a_missing_file_is_an_error_naming_it(tmp_path, capsys):
    assert main(["import", str(tmp_path / "nope.pcap"), "-o", str(tmp_path / "c.cassette")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'nope.pcap'}: no such file" in err
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_no_capture_is_an_error_naming_it(tmp_path, capsys):
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture at all\n" * 10)
    assert main(["import", str(junk), "-o", str(tmp_path / "c.cassette")]) == 1
    err = capsys.readouterr().err
    assert str(junk) in err and "at byte 0" in err and "not a pcap or pcapng capture" in err
    assert list(tmp_path.iterdir()) == [junk]
    with pytest.raises(CaptureError, match="not a pcap or pcapng capture"):
        import_capture(junk, tmp_path / "c.cassette")


@pytest.mark.parametrize("ng", [False, True], ids=["pcap", "pcapng"])
def test_a_capture_cut_mid_record_is_refused_with_its_offset_or_imported_up_to_the_cut(tmp_path, capsys, ng):
    capture, cassette = tmp_path / "c.pcap", tmp_path / "c.cassette"
    good = http_exchange()
    write_pcap(capture, frames(good), ng=ng)
    whole = capture.read_bytes()
    write_pcap(capture, frames(good[:-1]), ng=ng)
    cut_at = len(capture.read_bytes())  # where the last record starts
    capture.write_bytes(whole[: cut_at + 30])  # the last record cut 30 bytes in
    assert main(["import", str(capture), "-o", str(cassette)]) == 1
    err = capsys.readouterr().err
    assert f"capture {capture} is cut short or corrupt at byte {cut_at}" in err
    assert list(tmp_path.iterdir()) == [capture]

    assert main(["import", str(capture), "-o", str(cassette), "--truncated"]) == 0
    assert f"cut short at byte {cut_at}" in capsys.readouterr().out
    assert conversations(cassette)[0][2] == [("c2s", REQUEST), ("s2c", RESPONSE)]


def test_an_exported_cassette_imports_back_to_the_same_conversations(tmp_path):
    original = tmp_path / "original.cassette"
    hosts = (HostInfo("10.0.0.1", "server", "", "fd00:1::1"), HostInfo("10.0.0.2", "client", "", "fd00:1::2"))
    big = bytes(range(256)) * 400  # over 100 KiB: split into several segments by the export
    events = [
        ConnectionOpened(0.1, 0, ("10.0.0.2", 40001), ("10.0.0.1", 80)),
        Data(0.2, 0, Direction.C2S, REQUEST),
        Data(0.3, 0, Direction.S2C, big),
        Data(0.4, 0, Direction.C2S, b"more"),
        HalfClosed(0.5, 0, Direction.C2S),
        Data(0.6, 0, Direction.S2C, b"bye"),
        HalfClosed(0.7, 0, Direction.S2C),
        Closed(0.7, 0),
        ConnectionOpened(0.8, 1, ("fd00:1::2", 40002), ("fd00:1::1", 6379)),
        Data(0.9, 1, Direction.C2S, b"PING\r\n"),
        Data(1.0, 1, Direction.S2C, b"+PONG\r\n"),
        Reset(1.1, 1, Direction.C2S),
        Closed(1.1, 1),
        ConnectionOpened(1.2, 2, ("10.0.0.2", 40003), ("10.0.0.1", 81), Outcome.REFUSED),
    ]
    with CassetteWriter(original, Header("10.0.0.0/24", hosts, 1000.0, subnet6="fd00:1::/64")) as writer:
        for event in events:
            writer.write(event)
        writer.commit(1.3)
    capture, imported = tmp_path / "export.pcap", tmp_path / "imported.cassette"
    export_pcap(original, capture)
    result = import_capture(capture, imported, subnet6="fd00:1::/64")
    assert conversations(imported) == conversations(original)
    outcomes = [e.outcome for e in Cassette(imported).events() if isinstance(e, ConnectionOpened)]
    assert outcomes == [Outcome.ESTABLISHED, Outcome.ESTABLISHED, Outcome.REFUSED]
    assert [s.ending for s in result.flows.summaries] == ["closed", "reset", "refused"]
    assert set(result.addresses.lines()) == {f"{a} -> {a}" for a in ("10.0.0.1", "10.0.0.2", "fd00:1::1", "fd00:1::2")}
