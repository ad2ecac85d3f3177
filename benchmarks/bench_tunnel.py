"""What sealing and opening a tunnel datagram costs, per packet, beside doing nothing but copying.

Usage (any user, a few seconds; ``--quick`` is a smoke run)::

    python benchmarks/bench_tunnel.py [--quick] [--size 1400] [--json FILE]

Every packet between a local and a remote host is sealed by one end and opened by the other,
so seal+open of one packet is the tunnel's CPU price per packet. One run measures, for packets
of SIZE bytes (in one process, one core, rounds alternating, the median kept):

* copy: the baseline, the framing without any cryptography: the header joined to the packet
  and the packet sliced back out (two copies, what any framing costs);
* sealed: ``DatagramChannel.seal`` then ``open`` (ChaCha20-Poly1305, replay window);
* plaintext: the same in ``--insecure-plaintext`` mode (authenticated, not encrypted);
* chacha only, aes-gcm only: the bare AEAD calls (encrypt then decrypt, no header checks,
  no replay window), to show what the cipher library costs and what the tunnel adds, and
  what AES-GCM would cost instead on this CPU;
* drop forged, drop session: ``open`` alone of a datagram it must drop, one with a bad tag
  (found by decrypting) and one naming another session (found in the header): what a flood
  of garbage costs the receiver;
* udp loopback: for scale, one ``sendto`` and one ``recv`` of the sealed datagram over a UDP
  socket pair on 127.0.0.1 (the system calls each end makes per packet anyway).

It prints packets/s and MB/s of packet payload for each, and each one's cost as a multiple of
the baseline's. Nothing is asserted: the exit status is 0 unless a measurement failed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305  # noqa: E402

from pytest_netplayground.core.tunnel_crypto import Handshake  # noqa: E402


def session(plaintext: bool):
    key = os.urandom(32)
    s, a = Handshake.supervisor(key, insecure_plaintext=plaintext), Handshake.agent(key)
    s.receive(a.receive(s.receive(a.receive(s.initial()))))
    return s.keys.datagrams(), a.keys.datagrams()


def run_copy(packet: bytes, count: int) -> None:
    prefix, pack = bytes(16), struct.Struct(">Q").pack
    for i in range(count):
        datagram = prefix + pack(i) + packet
        inner = datagram[24:]
    assert inner == packet


def make_run_tunnel(plaintext: bool):
    def run(packet: bytes, count: int) -> None:
        sender, receiver = session(plaintext)
        seal, open_ = sender.seal, receiver.open
        for _ in range(count):
            inner = open_(seal(packet))
        assert inner == packet and receiver.delivered == count

    return run


def make_run_raw(cipher):
    def run(packet: bytes, count: int) -> None:
        aead, header = cipher(os.urandom(32)), bytes(24)
        for i in range(count):
            nonce = header[:4] + struct.pack(">Q", i)
            inner = aead.decrypt(nonce, aead.encrypt(nonce, packet, header), header)
        assert inner == packet

    return run


def make_run_drop(kind: str):
    """Opening datagrams that must be dropped: a forged tag (costs a decryption) or another session's id."""

    def run(packet: bytes, count: int) -> None:
        sender, receiver = session(False)
        datagram = bytearray(sender.seal(packet))
        if kind == "forged":
            datagram[-1] ^= 1
        else:
            datagram[12] ^= 1
        datagram = bytes(datagram)
        open_ = receiver.open
        for _ in range(count):
            open_(datagram)
        assert receiver.delivered == 0 and sum(receiver.dropped.values()) == count

    return run


def run_udp(packet: bytes, count: int) -> None:
    sender, receiver = session(False)
    datagram = sender.seal(packet)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5)
        tx.connect(rx.getsockname())
        send, recv = tx.send, rx.recv
        for _ in range(count):
            send(datagram)
            recv(65536)
    finally:
        rx.close()
        tx.close()


CASES = {
    "copy": run_copy,
    "sealed": make_run_tunnel(False),
    "plaintext": make_run_tunnel(True),
    "chacha only": make_run_raw(ChaCha20Poly1305),
    "aes-gcm only": make_run_raw(AESGCM),
    "udp loopback": run_udp,
    "drop forged": make_run_drop("forged"),
    "drop session": make_run_drop("session"),
}


def measure(size: int, count: int, rounds: int) -> dict:
    packet = bytes([0x45]) + os.urandom(size - 1)
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(rounds):
        for name, run in CASES.items():
            start = time.perf_counter()
            run(packet, count)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["copy"])
    result = {"size": size, "count": count, "rounds": rounds, "cases": {}}
    for name, seconds in times.items():
        median = statistics.median(seconds)
        result["cases"][name] = {
            "packets_per_s": count / median,
            "payload_MB_per_s": count * size / median / 1e6,
            "us_per_packet": median / count * 1e6,
            "cost_vs_copy": median / base,
        }
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few packets, one round")
    parser.add_argument("--size", type=int, default=1400, help="IP packet size in bytes (default 1400)")
    parser.add_argument("--count", type=int, default=100_000, help="packets per case and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    count, rounds = (2000, 1) if args.quick else (args.count, args.rounds)
    result = measure(args.size, count, rounds)
    print(f"seal+open of {args.size}-byte packets, {count} per case, median of {rounds} rounds")
    print(f"{'case':<14}{'packets/s':>12}{'MB/s':>9}{'us/packet':>11}{'x copy':>9}")
    for name, row in result["cases"].items():
        print(
            f"{name:<14}{row['packets_per_s']:>12,.0f}{row['payload_MB_per_s']:>9,.0f}"
            f"{row['us_per_packet']:>11.2f}{row['cost_vs_copy']:>9.1f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
