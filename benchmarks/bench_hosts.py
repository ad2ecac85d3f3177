"""What one host costs: ``add_host`` and the first process spawned in it.

Usage (as root, a few seconds)::

    python benchmarks/bench_hosts.py [--hosts N] [--rounds R]

Each round starts a live sandbox, then times, per host, ``sb.add_host(name=...)`` (namespaces,
TUN, addresses, and whatever a host's file system view needs) and ``host.run(["true"])`` (one
spawn, run and exit). It prints the median and p90 over all hosts of all rounds, in ms.
Nothing leaves the sandboxes; no traffic is sent.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    add, spawn = [], []
    for _ in range(args.rounds):
        with Sandbox() as sb:
            for i in range(args.hosts):
                t0 = time.perf_counter()
                host = sb.add_host(name=f"node{i}")
                t1 = time.perf_counter()
                host.run(["true"], timeout=10)
                t2 = time.perf_counter()
                add.append((t1 - t0) * 1000)
                spawn.append((t2 - t1) * 1000)
    print(f"add_host:        {_summary(add)}")
    print(f"first run(true): {_summary(spawn)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
