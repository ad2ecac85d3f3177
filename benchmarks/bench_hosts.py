"""What one host costs: ``add_host`` and the first process spawned in it.

Usage (as root, a few seconds)::

    python benchmarks/bench_hosts.py [--hosts N] [--rounds R]

Each round starts a live sandbox, then times, per host, ``sb.add_host(name=...)`` (namespaces,
TUN, addresses, names) and ``host.run(["true"])`` (one spawn, run and exit): the wall time and
the supervisor's own CPU time (``/proc/PID/schedstat``, which other load on the machine hardly
changes). The first host of each round, which also pays what a sandbox sets up once, is
reported apart. It prints medians and p90s over all rounds, in ms. No traffic is sent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pytest_netplayground import Sandbox  # noqa: E402


def _summary(values: list[float]) -> str:
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
    return f"median {statistics.median(values):6.2f} ms  p90 {p90:6.2f} ms  (n={len(values)})"


def _cpu_ms(pid: int) -> float:
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rows: dict[str, list[float]] = {}

    def note(key: str, value: float) -> None:
        rows.setdefault(key, []).append(value)

    for _ in range(args.rounds):
        with Sandbox() as sb:
            sb.start()
            pid = sb.supervisor_pid
            for i in range(args.hosts):
                which = "first host" if i == 0 else "next hosts"
                c0, t0 = _cpu_ms(pid), time.perf_counter()
                host = sb.add_host(name=f"node{i}")
                c1, t1 = _cpu_ms(pid), time.perf_counter()
                host.run(["true"], timeout=10)
                c2, t2 = _cpu_ms(pid), time.perf_counter()
                note(f"add_host, {which}, wall", (t1 - t0) * 1000)
                note(f"add_host, {which}, supervisor CPU", c1 - c0)
                note("run(true), wall", (t2 - t1) * 1000)
                note("run(true), supervisor CPU", c2 - c1)
    for key, values in rows.items():
        print(f"{key:<38} {_summary(values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
