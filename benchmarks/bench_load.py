"""Many short connections at once: the sandbox's load limits, measured against a direct veth pair.

Usage (as root, takes about three minutes; ``--quick`` is a smoke run of half a minute)::

    python benchmarks/bench_load.py [--quick] [--rates 500,1000,1500] [--json FILE]

Every measurement uses the load test's own server and client (``tests/support/load_programs.py``),
five of each:

* a server answers each connection with the sha256 (in hex) of all it received, then closes;
* a client opens connections on a fixed schedule (open loop: it does not slow down when
  answers are late), each sending a payload of its own, half-closing, and reading the answer
  to its end (10 s limit for the connect and for the answer); it logs each connection, and
  this script checks the answers and takes the time from the connect to the end of the answer.

Client *i* talks to server *i*, at a fifth of the rate each, for 10 s (3 s with ``--quick``).
At each rate of the ladder (500, 1000 and 1500 new connections a second in all; 1000 with
``--quick``) the pair runs in four setups, one after the other:

* direct veth: two network namespaces joined by a veth pair (``common.VethPair``), the
  servers in one on ports 9000-9004, the clients in the other: the baseline;
* live: a live-mode sandbox of 10 hosts, each server and each client in a host of its own;
* record: the same in record mode, the cassette in a temporary directory;
* replay: that cassette replayed with the server hosts present but no server running, so the
  cassette stands in for every server; the replay's divergence count is reported.

For each it reports the connections a second achieved (answered connections over the span
from the first connect to the last answer; the span itself goes to the JSON), the p50 and p99 of connect-to-answer, and the
connections that failed or got a wrong answer. The ratio column is the sandbox's achieved rate
over the veth baseline's at that rate. The target (from the hardening issue): at 1000 a
second, record and replay lose nothing (no failed or wrong connection, no divergence), marked
MET or NOT MET. The exit status is 0 whether or not the target is met, 1 if a measurement
failed. ``--json FILE`` writes every number.

These are measurements, not pass marks: the suite's load test (``tests/test_load.py``) runs
the same programs at 200 a second and asserts only what holds at any speed (no connection
or byte lost, memory flat, descriptors bounded); how fast is this script's business.

Needs: root, python3 with pyroute2 (a dependency of the package). Helpers come from
``common.py`` beside this file. Traffic goes only between the namespaces this script makes;
they and the temporary directory are removed at the end, on Ctrl-C and SIGTERM too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# When this file is run as a script its directory is first on sys.path.
from common import REPO, machine_line, prepare, quantile, veth_pair, write_json
from common import print_table as print_rows

sys.path.insert(0, str(REPO / "tests" / "support"))
import load_programs  # noqa: E402  (the load test's own programs)

BASE_PORT = 9000
PAIRS = 5
FULL = {"rates": [500, 1000, 1500], "seconds": 10.0}
QUICK = {"rates": [1000], "seconds": 3.0}
SETUPS = ("veth", "live", "record", "replay")
TARGET_RATE = 1000


# -- running the pair in each setup -------------------------------------------------------------------


def summarize(logs: list[Path], expected: int) -> dict:
    lines = load_programs.read_logs(logs)
    answered = [line for line in lines if line[2] is None]
    ok = [line for line in answered if line[1] == load_programs.answer_to(line[0])]
    latencies = [ended - started for *_, started, ended in ok]
    span = max((line[4] for line in lines), default=0.0) - min((line[3] for line in lines), default=0.0)
    return {
        "answered": len(ok),
        "failed": len(lines) - len(answered) + (expected - len(lines)),
        "wrong": len(answered) - len(ok),
        "span_s": span,
        "rate": len(ok) / span if span > 0 else 0.0,
        "p50_ms": quantile(latencies, 50) * 1000 if latencies else float("nan"),
        "p99_ms": quantile(latencies, 99) * 1000 if latencies else float("nan"),
    }


def run_veth(rate: int, seconds: float, workdir: Path, prefix: str) -> dict:
    logs = [workdir / f"veth-{rate}-{i}.json" for i in range(PAIRS)]
    with veth_pair(prefix) as pair:
        servers = [pair.spawn(0, load_programs.server_argv(BASE_PORT + i)) for i in range(PAIRS)]
        for i, server in enumerate(servers):
            pair.wait_for_port(server, BASE_PORT + i, timeout=10)
        clients = [
            pair.spawn(
                1,
                load_programs.client_argv(
                    pair.server_address, BASE_PORT + i, rate / PAIRS, seconds, logs[i], f"c{i}"
                ),
            )
            for i in range(PAIRS)
        ]
        for client in clients:
            client.wait(timeout=seconds + 60)
    return summarize(logs, round(rate * seconds))


def run_sandbox(mode: str, rate: int, seconds: float, workdir: Path, cassette: Path) -> dict:
    from pytest_netplayground import Sandbox
    from pytest_netplayground.runtime.sandbox import DEVNULL

    logs = [workdir / f"{mode}-{rate}-{i}.json" for i in range(PAIRS)]
    options = {} if mode == "live" else {"cassette": cassette}
    with Sandbox(mode=mode, **options) as sb:
        servers = [sb.add_host(f"server{i}") for i in range(PAIRS)]
        clients = [sb.add_host(f"client{i}") for i in range(PAIRS)]
        if mode != "replay":
            for i, server in enumerate(servers):
                server.spawn(load_programs.server_argv(BASE_PORT + i), stdout=DEVNULL, stderr=DEVNULL)
            for i, server in enumerate(servers):
                server.wait_for_port(BASE_PORT + i, timeout=10)
        processes = [
            client.spawn(
                load_programs.client_argv(
                    server.address, BASE_PORT + i, rate / PAIRS, seconds, logs[i], f"c{i}"
                ),
                stdout=DEVNULL,
                stderr=DEVNULL,
            )
            for i, (client, server) in enumerate(zip(clients, servers))
        ]
        for process in processes:
            process.wait(timeout=seconds + 60)
    result = summarize(logs, round(rate * seconds))
    if mode == "replay":
        result["divergences"] = len(sb.divergences)
    return result


# -- report ---------------------------------------------------------------------------------------------


def build_rows(results: dict[int, dict[str, dict]]) -> list[list[str]]:
    rows = []
    for rate, by_setup in results.items():
        baseline = by_setup["veth"]["rate"]
        for setup in SETUPS:
            r = by_setup[setup]
            ratio = "" if setup == "veth" or not baseline else f"{r['rate'] / baseline:.2f}x"
            lost = f"{r['failed']} failed, {r['wrong']} wrong"
            if "divergences" in r:
                lost += f", {r['divergences']} divergences"
            rows.append(
                [
                    f"{rate}/s",
                    setup,
                    f"{r['rate']:.0f}/s",
                    ratio,
                    f"{r['p50_ms']:.1f}",
                    f"{r['p99_ms']:.1f}",
                    lost,
                ]
            )
    return rows


def print_table(rows: list[list[str]]) -> None:
    print_rows(["offered", "setup", "achieved", "vs veth", "p50 ms", "p99 ms", "lost"], rows, "llrrrrl")


def target_met(results: dict[int, dict[str, dict]]) -> bool | None:
    at = results.get(TARGET_RATE)
    if at is None:
        return None
    return all(
        at[setup]["failed"] == 0 and at[setup]["wrong"] == 0 and not at[setup].get("divergences")
        for setup in ("record", "replay")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one rate for 3 s, for a smoke run")
    parser.add_argument("--rates", help="comma-separated connections per second, e.g. 500,1000,1500")
    parser.add_argument("--json", metavar="FILE", help="write the numbers to FILE")
    args = parser.parse_args(argv)
    params = dict(QUICK if args.quick else FULL)
    if args.rates:
        try:
            params["rates"] = [int(r) for r in args.rates.split(",")]
        except ValueError:
            parser.error(f"--rates takes whole numbers separated by commas, got {args.rates!r}")
    load = prepare(parser, f"bench_load ({'quick' if args.quick else 'full'}): {params}")
    started = time.monotonic()
    results: dict[int, dict[str, dict]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="netplay-bench-load-") as tmp:
            workdir = Path(tmp)
            for rate in params["rates"]:
                print(f"{rate} connections/s for {params['seconds']:g} s", flush=True)
                cassette = workdir / f"load-{rate}.netplay"
                by_setup = results[rate] = {}
                by_setup["veth"] = run_veth(rate, params["seconds"], workdir, f"netplay-bench-{os.getpid()}")
                for mode in ("live", "record", "replay"):
                    by_setup[mode] = run_sandbox(mode, rate, params["seconds"], workdir, cassette)
    except KeyboardInterrupt:
        print("interrupted; namespaces removed", file=sys.stderr)
        return 130
    except (RuntimeError, ValueError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"measurement failed: {exc}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    print()
    print_table(build_rows(results))
    met = target_met(results)
    if met is not None:
        print(
            f"\ntarget: at {TARGET_RATE}/s over 10 hosts, record and replay lose nothing: "
            f"{'MET' if met else 'NOT MET'}"
        )
    print(f"({elapsed:.0f} s; {machine_line()})")
    if args.json:
        write_json(args.json, args, params, load, {"results": results, "target_met": met})
    return 0


if __name__ == "__main__":
    sys.exit(main())
