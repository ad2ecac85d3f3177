"""What faults cost the router's per-packet path, measured against the same path without them.

Usage (the live part as root; ``--quick`` for a smoke run of a few seconds)::

    python benchmarks/bench_faults.py [--quick] [--no-live]

Two parts, each a ratio against a baseline measured in the same run:

* per packet, in-process: the host-to-proxy routing of a 1 KiB TCP segment
  (``Router.from_host``) alone, then preceded by the fault check as the
  supervisor makes it, with no fault set (the inactive table: one attribute
  read), then with a fault set on another link (the packet is judged and let
  through), then with 1% loss on its own link;
* per read, in-process: a proxied connection's read handed to its tap, then
  through the toxics' wrapper with no toxic set (as live and recording use
  it, and as replay does, through its pipe facade);
* live (root): a UDP request/answer round trip (p50 of N) and a Python bulk
  TCP transfer between two hosts, with no fault set, then with a fault set on
  a link between two other hosts (so every packet pays the judging but none
  is delayed).

And how faithful the faults are (root; ``--no-accuracy`` skips it), each
against what it should give: ping and UDP round trips through a 50 ms link
against ``2 x 50 ms + the base round trip`` measured in the same run; a bulk
TCP transfer (iperf3 if installed, and Python) under a 10 Mbit/s cap as a
share of the cap; the share of 10,000 UDP datagrams lost at 10% loss, with
its binomial band (5 sigma).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import timeit

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pytest_netplayground.core.addressing import AddressPlan  # noqa: E402
from pytest_netplayground.core.faults import LinkFaults  # noqa: E402
from pytest_netplayground.core.router import Router  # noqa: E402
from pytest_netplayground.runtime.faults import FaultStage  # noqa: E402
from pytest_netplayground.runtime.loop import Loop  # noqa: E402


def _segment() -> bytearray:
    import struct

    payload = b"x" * 1024
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40 + len(payload), 1, 0x4000, 64, 6, 0,
                     bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1]))
    tcp = struct.pack("!HHIIBBHHH", 40000, 9000, 1, 1, 5 << 4, 0x18, 65535, 0, 0)
    return bytearray(ip + tcp + payload)


def per_packet(number: int) -> dict[str, float]:
    router = Router(AddressPlan("10.0.0.0/24"))
    for i in range(4):
        router.add_host(i, f"10.0.0.{i + 1}")
    stage = FaultStage(Loop(), router, seed=1)
    for i in range(4):
        stage.host_added(i, f"h{i + 1}")
    template = _segment()
    n = len(template)
    buf = bytearray(65536)
    table, intercept, route = stage.table, stage.intercept, router.from_host

    def plain():
        buf[:n] = template
        route(buf, n)

    def checked():
        buf[:n] = template
        if table.active and intercept(1, buf, n):
            return
        route(buf, n)

    results = {}
    results["router alone"] = min(timeit.repeat(plain, number=number, repeat=5)) / number
    results["with the check, no fault"] = min(timeit.repeat(checked, number=number, repeat=5)) / number
    stage.table.set(2, 3, LinkFaults(latency=0.01))
    results["fault on another link"] = min(timeit.repeat(checked, number=number, repeat=5)) / number
    stage.table.set(1, 0, LinkFaults(loss=0.01))
    results["1% loss on this link"] = min(timeit.repeat(checked, number=number, repeat=5)) / number
    return results


def per_read(number: int) -> dict[str, float]:
    import random

    from pytest_netplayground.core.events import Direction
    from pytest_netplayground.core.toxics import Toxics
    from pytest_netplayground.runtime.pipes import Tap
    from pytest_netplayground.runtime.toxic_tap import ToxicTap

    class FakePipe:
        finished = False

        def write(self, direction, data):
            pass

    pipe, inner, data, c2s = FakePipe(), Tap(), memoryview(b"x" * 1024), Direction.C2S
    results = {}
    for label, tap in (
        ("tap alone", inner),
        ("toxics wrapper, live/record", ToxicTap(None, inner, Toxics(), Toxics(), random.Random(0), on_input=True)),
        ("toxics wrapper, replay", ToxicTap(None, inner, Toxics(), Toxics(), random.Random(0), on_input=False)),
    ):
        results[label] = min(timeit.repeat(lambda t=tap: t.data(pipe, c2s, data, 0.0), number=number, repeat=5)) / number
    return results


def live(round_trips: int, bulk: int) -> dict[str, dict[str, float]]:
    from pytest_netplayground import Sandbox

    out = {}
    for label in ("no fault", "fault on another link"):
        with Sandbox() as sb:
            a, b, c, d = (sb.add_host() for _ in range(4))
            if label != "no fault":
                sb.link(c, d).set(latency=0.01)
            ua, ub = a.udp_socket(("10.0.0.1", 5000)), b.udp_socket(("10.0.0.2", 5000))
            ua.settimeout(5)
            ub.settimeout(5)
            rtts = []
            for _ in range(round_trips):
                start = time.perf_counter()
                ub.sendto(b"x" * 64, ("10.0.0.1", 5000))
                data, peer = ua.recvfrom(100)
                ua.sendto(data, peer)
                ub.recvfrom(100)
                rtts.append(time.perf_counter() - start)
            listener = a.listen(9000)
            client = b.connect(("10.0.0.1", 9000))
            server, _ = listener.accept()
            chunk = b"y" * 262144
            sender = threading.Thread(
                target=lambda c=client, k=chunk: (
                    [c.sendall(k) for _ in range(bulk // len(k))],
                    c.shutdown(socket.SHUT_WR),
                )
            )
            start = time.perf_counter()
            sender.start()
            total = 0
            while got := server.recv(1 << 20):
                total += len(got)
            elapsed = time.perf_counter() - start
            sender.join()
            out[label] = {"rtt_p50_us": statistics.median(rtts) * 1e6, "bulk_MBps": total / elapsed / 1e6}
    return out


def _udp_rtts(ua, ub, count: int) -> list[float]:
    rtts = []
    for _ in range(count):
        start = time.perf_counter()
        ub.sendto(b"x" * 64, ("10.0.0.1", 5000))
        data, peer = ua.recvfrom(100)
        ua.sendto(data, peer)
        ub.recvfrom(100)
        rtts.append(time.perf_counter() - start)
    return rtts


def _ping_ms(host, count: int) -> float | None:
    """The median of ``count`` pings from ``host`` to 10.0.0.1, in ms (None without ping)."""
    if shutil.which("ping") is None:
        return None
    out = host.run(["ping", "-c", str(count), "-i", "0.05", "-W", "5", "10.0.0.1"], timeout=60).stdout.decode()
    times = [float(word.split("=")[1]) for word in out.split() if word.startswith("time=")]
    return statistics.median(times) if times else None


def _python_bulk(a, b, size: int) -> float:
    """Bytes per second of a Python bulk TCP transfer from b to a."""
    listener = a.listen(9100)
    client = b.connect(("10.0.0.1", 9100), timeout=10)
    server, _ = listener.accept()
    sender = threading.Thread(target=lambda: (client.sendall(b"z" * size), client.shutdown(socket.SHUT_WR)))
    start = time.perf_counter()
    sender.start()
    server.settimeout(120)
    total = 0
    while got := server.recv(1 << 20):
        total += len(got)
    elapsed = time.perf_counter() - start
    sender.join()
    for sock in (client, server, listener):
        sock.close()
    return total / elapsed


def _iperf(a, b, seconds: int) -> float | None:
    """Bits per second iperf3 received from b to a (None without iperf3)."""
    if shutil.which("iperf3") is None:
        return None
    server = a.spawn(["iperf3", "-s", "-1", "-p", "5201"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        a.wait_for_port(5201)
        result = b.run(["iperf3", "-c", "10.0.0.1", "-p", "5201", "-t", str(seconds), "-J"], timeout=seconds + 60)
        data = json.loads(result.stdout)
        return float(data["end"]["sum_received"]["bits_per_second"])
    finally:
        server.kill()
        server.wait(10)


def _udp_loss(ua, ub, count: int) -> int:
    """How many of ``count`` numbered datagrams from b reach a, sent at a modest pace."""
    got = set()

    def receive() -> None:
        ua.settimeout(1.0)
        while True:
            try:
                got.add(int.from_bytes(ua.recv(100), "big"))
            except socket.timeout:
                return

    receiver = threading.Thread(target=receive)
    receiver.start()
    for i in range(count):
        ub.sendto(i.to_bytes(4, "big"), ("10.0.0.1", 5000))
        if i % 20 == 19:
            time.sleep(0.001)
    receiver.join(60)
    return len(got)


def accuracy(quick: bool) -> list[str]:
    """How close each fault comes to what it is set to; lines to print."""
    from pytest_netplayground import Sandbox

    latency, cap, loss = 0.05, 1_250_000, 0.1
    lines = []
    with Sandbox(seed=11) as sb:
        a, b = sb.add_host(), sb.add_host()
        ua, ub = a.udp_socket(("10.0.0.1", 5000)), b.udp_socket(("10.0.0.2", 5000))
        ua.settimeout(5)
        ub.settimeout(5)
        base = statistics.median(_udp_rtts(ua, ub, 200 if quick else 1000))
        base_ping = _ping_ms(b, 20 if quick else 100)
        sb.link(a, b).set(latency=latency)
        rtt = statistics.median(_udp_rtts(ua, ub, 20 if quick else 100))
        ping = _ping_ms(b, 10 if quick else 50)
        want = 2 * latency + base
        lines.append(
            f"  UDP RTT through 50 ms each way: {rtt * 1e3:.2f} ms, base {base * 1e3:.3f} ms; "
            f"x{rtt / want:.4f} of 2x50 ms + base ({(rtt - want) * 1e3:+.2f} ms)"
        )
        if ping is not None and base_ping is not None:
            want_ms = 2 * latency * 1e3 + base_ping
            lines.append(
                f"  ping RTT through 50 ms each way: {ping:.2f} ms, base {base_ping:.3f} ms; "
                f"x{ping / want_ms:.4f} of 2x50 ms + base ({ping - want_ms:+.2f} ms)"
            )
        sb.link(a, b).set(rate=cap)
        bulk = _python_bulk(a, b, cap * (2 if quick else 10))
        lines.append(f"  Python bulk TCP under a 10 Mbit/s cap: {bulk * 8 / 1e6:.2f} Mbit/s, x{bulk / cap:.3f} of the cap")
        bits = _iperf(a, b, 3 if quick else 10)
        if bits is not None:
            lines.append(f"  iperf3 under a 10 Mbit/s cap: {bits / 1e6:.2f} Mbit/s, x{bits / (cap * 8):.3f} of the cap")
        sb.link(a, b).set(loss=loss, direction="b->a")
        n = 2000 if quick else 10_000
        received = _udp_loss(ua, ub, n)
        share = (n - received) / n
        sigma = math.sqrt(loss * (1 - loss) / n)
        lines.append(
            f"  UDP loss at 10% over {n} datagrams: {share:.4f} lost ({n - received}), "
            f"band 5 sigma {loss - 5 * sigma:.4f}..{loss + 5 * sigma:.4f}; "
            f"{(share - loss) / sigma:+.2f} sigma from 10%"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-live", action="store_true", help="the in-process part only (no root needed)")
    parser.add_argument("--no-accuracy", action="store_true", help="skip how faithful the faults are")
    args = parser.parse_args()
    costs = per_packet(20_000 if args.quick else 200_000)
    base = costs["router alone"]
    print("per packet (1 KiB TCP segment, host to proxy):")
    for label, seconds in costs.items():
        print(f"  {label:28s} {seconds * 1e9:8.0f} ns   x{seconds / base:.3f}")
    reads = per_read(20_000 if args.quick else 200_000)
    print("per read handed to a connection's tap (no toxic set):")
    for label, seconds in reads.items():
        print(f"  {label:28s} {seconds * 1e9:8.0f} ns   +{(seconds - reads['tap alone']) * 1e9:.0f} ns")
    if args.no_live or os.geteuid() != 0:
        return
    numbers = live(500 if args.quick else 5000, (100 if args.quick else 1000) * 1 << 20)
    base_live = numbers["no fault"]
    print("live, two hosts:")
    for label, values in numbers.items():
        print(
            f"  {label:28s} RTT p50 {values['rtt_p50_us']:7.1f} us (x{values['rtt_p50_us'] / base_live['rtt_p50_us']:.2f})"
            f"   bulk {values['bulk_MBps']:8.1f} MB/s (x{values['bulk_MBps'] / base_live['bulk_MBps']:.2f})"
        )
    if not args.no_accuracy:
        print("accuracy, two hosts:")
        for line in accuracy(args.quick):
            print(line)


if __name__ == "__main__":
    main()
