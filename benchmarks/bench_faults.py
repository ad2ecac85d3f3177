"""What faults cost the router's per-packet path, measured against the same path without them.

Usage (the live part as root; ``--quick`` for a smoke run of a few seconds)::

    python benchmarks/bench_faults.py [--quick] [--no-live]

Two parts, each a ratio against a baseline measured in the same run:

* per packet, in-process: the host-to-proxy routing of a 1 KiB TCP segment
  (``Router.from_host``) alone, then preceded by the fault check as the
  supervisor makes it, with no fault set (the inactive table: one attribute
  read), then with a fault set on another link (the packet is judged and let
  through), then with 1% loss on its own link;
* live (root): a UDP request/answer round trip (p50 of N) and a Python bulk
  TCP transfer between two hosts, with no fault set, then with a fault set on
  a link between two other hosts (so every packet pays the judging but none
  is delayed).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-live", action="store_true", help="the in-process part only (no root needed)")
    args = parser.parse_args()
    costs = per_packet(20_000 if args.quick else 200_000)
    base = costs["router alone"]
    print("per packet (1 KiB TCP segment, host to proxy):")
    for label, seconds in costs.items():
        print(f"  {label:28s} {seconds * 1e9:8.0f} ns   x{seconds / base:.3f}")
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


if __name__ == "__main__":
    main()
