"""Live-mode cost of the sandbox, measured against a direct veth pair.

Usage (as root, takes one to two minutes; ``--quick`` is a smoke run of a few seconds)::

    python benchmarks/bench_live.py [--quick] [--json FILE] [--profile FILE [--native]]

One run measures the same client/server programs in two setups:

* direct veth: two network namespaces (``netplay-bench-<pid>-a`` and ``-b``, made with
  pyroute2, addresses 10.99.0.1 and 10.99.0.2) joined by a veth pair: the kernel's own limit;
* sandbox: a live-mode :class:`pytest_netplayground.Sandbox` with a server host (10.0.0.1)
  and a client host (10.0.0.2), every TCP connection going through the router and proxy.

Both setups stay up while the traffic metrics are measured in turns (veth, sandbox, veth, ...),
3 rounds (1 with ``--quick``), and the median of the rounds is kept, so that other load on the
machine weighs on both alike. Metrics, for both setups:

* bulk TCP throughput over one connection: ``iperf3 -n 2G -J`` (200M with ``--quick``), the
  receiver's bits per second;
* 64-byte request/response round-trip time, p50 and p99: a Python ping-pong pair in this file
  (20000 round trips after 1000 of warm-up; 1000 after 200 with ``--quick``);
* new connections per second: a Python client in this file that, for 3 s (1 s with ``--quick``),
  connects, waits for the server to close (so each counted connection was accepted), and closes;
  the server accepts and closes at once;
* setup plus teardown, in ms, median and p90 of 20 runs (5 with ``--quick``) after one warm-up
  run that is not counted, pyroute2 already imported: ``with Sandbox() as sb: sb.add_host();
  sb.add_host()`` for the sandbox, two namespaces plus a configured veth pair for the baseline.

It prints a table with the ratio sandbox/veth for each metric and the targets (throughput
>= 0.5x, RTT p50 <= 2x, connections/s >= 0.5x, 2-host setup+teardown <= 50 ms median), each
marked MET or NOT MET. The exit status is 0 whether or not the targets are met (1 if a
measurement failed). ``--json FILE`` writes every number. ``--profile FILE`` then runs the
sandbox throughput case once more under py-spy, sampling the supervisor, writes py-spy's raw
(collapsed stacks) output to FILE and prints the functions with the most self time; with
``--native`` the C frames are sampled too, so time inside system calls (the kernel's work on a
TUN write, for instance) shows apart from time in the interpreter.

Needs: root, python3 with pyroute2 (a dependency of the package), iperf3 (Debian package
``iperf3``); for ``--profile`` only, py-spy (``pip install py-spy``). The package is imported
as installed (or from ``PYTHONPATH``), else from this checkout. Traffic goes only
between the namespaces this script makes. The veth namespaces are removed in a ``finally``,
on Ctrl-C and SIGTERM too.
"""

# Requirements for .ci/run if this benchmark is run there:
#   apt-get install iperf3          (already installed by .ci/run)
#   pip install py-spy              (only for --profile)

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

# When this file is run as a script its directory is first on sys.path.
from common import (
    machine_line,
    parse_json_output,
    prepare,
    quantile,
    read_ready,
    self_time,
    stop,
    veth_pair,
    write_json,
)
from common import print_table as print_rows
from common import verdict as common_verdict
from common import worker_argv as common_worker_argv

HERE = Path(__file__).resolve()

IPERF_PORT = 5201
RR_PORT = 5301
CONN_PORT = 5302
MESSAGE = 64

FULL = {
    "bytes": "2G",
    "round_trips": 20000,
    "rr_warmup": 1000,
    "conn_seconds": 3.0,
    "rounds": 3,
    "setup_runs": 20,
}
QUICK = {
    "bytes": "200M",
    "round_trips": 1000,
    "rr_warmup": 200,
    "conn_seconds": 1.0,
    "rounds": 1,
    "setup_runs": 5,
}

TARGETS = {
    "throughput": (">=", 0.5),
    "rtt_p50": ("<=", 2.0),
    "conn_per_s": (">=", 0.5),
    "setup_teardown_median_ms": ("<=", 50.0),
}


# -- the client/server programs, run as ``bench_live.py _worker ROLE ...`` in both setups ---------------


def _listen(port: int) -> socket.socket:
    # Dual stack: the same server answers IPv4 clients and, with --ipv6, IPv6 ones.
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    sock.listen(1024)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    return sock


def _recv_exactly(sock: socket.socket, view: memoryview) -> bool:
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if n == 0:
            return False
        got += n
    return True


def worker_rr_server(port: int) -> None:
    """Echo 64-byte messages on one connection until EOF."""
    with _listen(port) as listener:
        conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray(MESSAGE)
    view = memoryview(buf)
    with conn:
        while _recv_exactly(conn, view):
            conn.sendall(buf)


def worker_rr_client(host: str, port: int, count: int, warmup: int) -> None:
    """Send 64 bytes, wait for 64 back; time each round trip after the warm-up; print JSON."""
    sock = socket.create_connection((host, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payload = b"x" * MESSAGE
    buf = bytearray(MESSAGE)
    view = memoryview(buf)
    clock = time.perf_counter_ns
    samples = [0] * count
    with sock:
        for i in range(warmup + count):
            start = clock()
            sock.sendall(payload)
            if not _recv_exactly(sock, view):
                raise SystemExit("server closed the ping-pong connection early")
            if i >= warmup:
                samples[i - warmup] = clock() - start
    us = [s / 1000 for s in samples]
    q = statistics.quantiles(us, n=100, method="inclusive")
    print(
        json.dumps({"round_trips": count, "p50_us": q[49], "p99_us": q[98], "mean_us": statistics.fmean(us)})
    )


def worker_accept_server(port: int) -> None:
    """Accept and close at once, until killed."""
    with _listen(port) as listener:
        while True:
            conn, _ = listener.accept()
            conn.close()


def worker_connect_client(host: str, port: int, seconds: float) -> None:
    """Connect, wait for the server's close, close; in a loop for ``seconds``; print JSON."""

    def one() -> None:
        with socket.create_connection((host, port), timeout=10) as sock:
            while sock.recv(64):
                pass

    for _ in range(50):  # warm-up
        one()
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        one()
        count += 1
        now = time.perf_counter()
        if now >= deadline:
            break
    print(json.dumps({"connections": count, "seconds": now - start, "per_s": count / (now - start)}))


def worker_main(argv: list[str]) -> None:
    role, args = argv[0], argv[1:]
    if role == "rr-server":
        worker_rr_server(int(args[0]))
    elif role == "rr-client":
        worker_rr_client(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif role == "accept-server":
        worker_accept_server(int(args[0]))
    elif role == "connect-client":
        worker_connect_client(args[0], int(args[1]), float(args[2]))
    else:
        raise SystemExit(f"unknown worker role {role!r}")



def worker_argv(role: str, *args: object) -> list[str]:
    return common_worker_argv(HERE, role, *args)


# -- helpers ------------------------------------------------------------------------------------------


def iperf_bits_per_second(result: subprocess.CompletedProcess) -> float:
    data = parse_json_output("iperf3 client", result)
    if "error" in data:
        raise RuntimeError(f"iperf3: {data['error']}")
    return float(data["end"]["sum_received"]["bits_per_second"])



class SandboxSetup:
    """The same interface over a live-mode sandbox: host 0 serves on 10.0.0.1 (or its IPv6
    address, with ``ipv6``), host 1 is the client."""

    def __init__(self, sandbox, ipv6: bool = False):
        self.sandbox = sandbox
        self.hosts = [sandbox.add_host(name="server"), sandbox.add_host(name="client")]
        self.server_address = self.hosts[0].address6 if ipv6 else self.hosts[0].address

    def spawn(self, side: int, argv: list[str], stdout=None):
        from pytest_netplayground.runtime.sandbox import DEVNULL

        return self.hosts[side].spawn(argv, stdout=stdout, stderr=DEVNULL)

    def run(self, side: int, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        return self.hosts[side].run(argv, timeout=timeout)

    def wait_for_port(self, process, port: int, timeout: float = 5.0) -> None:
        self.hosts[0].wait_for_port(port, timeout=timeout)


# -- the measurements ---------------------------------------------------------------------------------


def measure_throughput(setup, size: str) -> float:
    server = setup.spawn(0, ["iperf3", "-s", "-1", "-p", str(IPERF_PORT)], stdout=subprocess.DEVNULL)
    try:
        setup.wait_for_port(server, IPERF_PORT)
        argv = ["iperf3", "-c", setup.server_address, "-p", str(IPERF_PORT), "-n", size, "-J"]
        return iperf_bits_per_second(setup.run(1, argv, timeout=300))
    finally:
        stop(server)


def measure_rtt(setup, count: int, warmup: int) -> dict:
    server = setup.spawn(0, worker_argv("rr-server", RR_PORT), stdout=subprocess.PIPE)
    try:
        read_ready(server)
        argv = worker_argv("rr-client", setup.server_address, RR_PORT, count, warmup)
        return parse_json_output("ping-pong client", setup.run(1, argv, timeout=300))
    finally:
        stop(server)


def measure_connections(setup, seconds: float) -> dict:
    server = setup.spawn(0, worker_argv("accept-server", CONN_PORT), stdout=subprocess.PIPE)
    try:
        read_ready(server)
        argv = worker_argv("connect-client", setup.server_address, CONN_PORT, seconds)
        return parse_json_output("connect client", setup.run(1, argv, timeout=seconds + 120))
    finally:
        stop(server)


def measure_traffic(setup, params: dict) -> dict:
    bps = measure_throughput(setup, params["bytes"])
    rtt = measure_rtt(setup, params["round_trips"], params["rr_warmup"])
    conns = measure_connections(setup, params["conn_seconds"])
    return {
        "throughput_gbit_s": bps / 1e9,
        "rtt_p50_us": rtt["p50_us"],
        "rtt_p99_us": rtt["p99_us"],
        "rtt_mean_us": rtt["mean_us"],
        "conn_per_s": conns["per_s"],
    }


def measure_rounds(setups: dict, params: dict) -> dict[str, dict]:
    """Measure every setup in turn, ``rounds`` times; the median of the rounds for each metric.

    Taking turns spreads any other load on the machine over both setups alike.
    """
    rounds: dict[str, list[dict]] = {label: [] for label in setups}
    for r in range(params["rounds"]):
        for label, setup in setups.items():
            result = measure_traffic(setup, params)
            rounds[label].append(result)
            print(
                f"  round {r + 1}/{params['rounds']} {label:>7}: {result['throughput_gbit_s']:.2f} Gbit/s, "
                f"RTT p50 {result['rtt_p50_us']:.0f} us p99 {result['rtt_p99_us']:.0f} us, "
                f"{result['conn_per_s']:.0f} conn/s",
                flush=True,
            )
    summary = {}
    for label, results in rounds.items():
        summary[label] = {key: statistics.median(r[key] for r in results) for key in results[0]}
        summary[label]["rounds"] = results
    return summary


def timed_runs(make, runs: int) -> dict:
    """Run ``make`` once as warm-up, then ``runs`` times; median and p90 in ms."""
    make()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        make()
        times.append((time.perf_counter() - start) * 1000)
    return {"median_ms": statistics.median(times), "p90_ms": quantile(times, 90), "runs_ms": times}


def measure_sandbox_setup(runs: int) -> dict:
    from pytest_netplayground import Sandbox

    def make() -> None:
        with Sandbox() as sb:
            sb.add_host()
            sb.add_host()

    return timed_runs(make, runs)


def measure_veth_setup(prefix: str, runs: int) -> dict:
    counter = iter(range(1 << 30))

    def make() -> None:
        with veth_pair(f"{prefix}-s{next(counter)}"):
            pass

    return timed_runs(make, runs)


# -- profile ------------------------------------------------------------------------------------------


def profile_throughput(size: str, out: str, native: bool = False, top: int = 15) -> list[tuple[str, float]]:
    """Run the sandbox throughput case under py-spy (sampling the supervisor); top self-time functions."""
    from pytest_netplayground import Sandbox

    pyspy = shutil.which("py-spy")
    if pyspy is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    with Sandbox() as sb:
        setup = SandboxSetup(sb)
        server = setup.spawn(0, ["iperf3", "-s", "-1", "-p", str(IPERF_PORT)], stdout=subprocess.DEVNULL)
        setup.wait_for_port(server, IPERF_PORT)
        argv = [
            pyspy,
            "record",
            "--format",
            "raw",
            "--nolineno",
            *(["--native"] if native else []),
            "--rate",
            "250",
            "-o",
            out,
            "--pid",
            str(sb.supervisor_pid),
        ]
        spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            time.sleep(1.0)  # let py-spy attach
            client = ["iperf3", "-c", setup.server_address, "-p", str(IPERF_PORT), "-n", size, "-J"]
            bps = iperf_bits_per_second(setup.run(1, client, timeout=300))
        finally:
            spy.send_signal(signal.SIGINT)
            _, err = spy.communicate(timeout=30)
        stop(server)
    if spy.returncode not in (0, -signal.SIGINT) or not os.path.exists(out):
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {err.decode(errors='replace').strip()}")
    print(f"  profiled run: {bps / 1e9:.2f} Gbit/s (slowed by sampling)")
    return self_time(out, top)


# -- report -------------------------------------------------------------------------------------------


def verdict(name: str, value: float) -> tuple[str, bool]:
    op, limit = TARGETS[name]
    return common_verdict(op, limit, value, " ms" if name.endswith("_ms") else "x")


def build_report(veth: dict, sandbox: dict) -> tuple[list[list[str]], dict, dict]:
    ratios = {
        "throughput": sandbox["throughput_gbit_s"] / veth["throughput_gbit_s"],
        "rtt_p50": sandbox["rtt_p50_us"] / veth["rtt_p50_us"],
        "rtt_p99": sandbox["rtt_p99_us"] / veth["rtt_p99_us"],
        "conn_per_s": sandbox["conn_per_s"] / veth["conn_per_s"],
        "setup_teardown_median": sandbox["setup"]["median_ms"] / veth["setup"]["median_ms"],
    }
    targets = {}
    for name, value in (
        ("throughput", ratios["throughput"]),
        ("rtt_p50", ratios["rtt_p50"]),
        ("conn_per_s", ratios["conn_per_s"]),
        ("setup_teardown_median_ms", sandbox["setup"]["median_ms"]),
    ):
        text, met = verdict(name, value)
        targets[name] = {"target": text, "value": value, "met": met}

    def status(name: str | None) -> tuple[str, str]:
        if name is None:
            return "", ""
        return targets[name]["target"], "MET" if targets[name]["met"] else "NOT MET"

    rows = [
        [
            "bulk TCP throughput (Gbit/s)",
            f"{veth['throughput_gbit_s']:.2f}",
            f"{sandbox['throughput_gbit_s']:.2f}",
            f"{ratios['throughput']:.2f}x",
            *status("throughput"),
        ],
        [
            "64-byte RTT p50 (us)",
            f"{veth['rtt_p50_us']:.0f}",
            f"{sandbox['rtt_p50_us']:.0f}",
            f"{ratios['rtt_p50']:.2f}x",
            *status("rtt_p50"),
        ],
        [
            "64-byte RTT p99 (us)",
            f"{veth['rtt_p99_us']:.0f}",
            f"{sandbox['rtt_p99_us']:.0f}",
            f"{ratios['rtt_p99']:.2f}x",
            *status(None),
        ],
        [
            "new connections/s",
            f"{veth['conn_per_s']:.0f}",
            f"{sandbox['conn_per_s']:.0f}",
            f"{ratios['conn_per_s']:.2f}x",
            *status("conn_per_s"),
        ],
        [
            "2-host setup+teardown median (ms)",
            f"{veth['setup']['median_ms']:.1f}",
            f"{sandbox['setup']['median_ms']:.1f}",
            f"{ratios['setup_teardown_median']:.2f}x",
            *status("setup_teardown_median_ms"),
        ],
        [
            "2-host setup+teardown p90 (ms)",
            f"{veth['setup']['p90_ms']:.1f}",
            f"{sandbox['setup']['p90_ms']:.1f}",
            "",
            *status(None),
        ],
    ]
    return rows, ratios, targets


def print_table(rows: list[list[str]]) -> None:
    print_rows(["metric", "direct veth", "sandbox", "ratio", "target", "status"], rows, "lrrrll")


# -- main ---------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--json", metavar="FILE", help="write the numbers to FILE")
    parser.add_argument(
        "--native",
        action="store_true",
        help="with --profile: sample native frames too (splits the time spent in system calls out)",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="also profile the sandbox throughput case with py-spy (raw output to FILE)",
    )
    parser.add_argument(
        "--ipv6",
        action="store_true",
        help="also measure the sandbox with the client connecting over IPv6, as a ratio to IPv4",
    )
    args = parser.parse_args(argv)
    if shutil.which("iperf3") is None:
        parser.error("needs iperf3 (apt-get install iperf3)")
    params = QUICK if args.quick else FULL
    load = prepare(parser, f"bench_live ({'quick' if args.quick else 'full'}): {params}")
    from pytest_netplayground import Sandbox

    prefix = f"netplay-bench-{os.getpid()}"
    started = time.monotonic()
    try:
        print(
            f"traffic: iperf3 -n {params['bytes']}, {params['round_trips']} 64-byte round trips, "
            f"{params['conn_seconds']:g} s of new connections; {params['rounds']} round(s), median kept",
            flush=True,
        )
        with veth_pair(prefix) as pair, Sandbox() as sb, Sandbox() as sb6:
            setups = {"veth": pair, "sandbox": SandboxSetup(sb)}
            if args.ipv6:
                setups["ipv6"] = SandboxSetup(sb6, ipv6=True)
            summary = measure_rounds(setups, params)
        veth, sandbox, ipv6 = summary["veth"], summary["sandbox"], summary.get("ipv6")
        print(f"setup+teardown: {params['setup_runs']} runs each after one warm-up", flush=True)
        veth["setup"] = measure_veth_setup(prefix, params["setup_runs"])
        sandbox["setup"] = measure_sandbox_setup(params["setup_runs"])
    except KeyboardInterrupt:
        print("interrupted; namespaces removed", file=sys.stderr)
        return 130
    except (RuntimeError, ValueError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"measurement failed: {exc}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started

    rows, ratios, targets = build_report(veth, sandbox)
    print()
    print_table(rows)
    print(f"\n({elapsed:.0f} s; {machine_line()})")
    if ipv6 is not None:
        ratios["ipv6_over_ipv4"] = {
            "throughput": ipv6["throughput_gbit_s"] / sandbox["throughput_gbit_s"],
            "rtt_p50": ipv6["rtt_p50_us"] / sandbox["rtt_p50_us"],
            "conn_per_s": ipv6["conn_per_s"] / sandbox["conn_per_s"],
        }
        print("sandbox over IPv6 / over IPv4: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios["ipv6_over_ipv4"].items()))

    profile = None
    if args.profile:
        print(f"\nprofiling the sandbox throughput case with py-spy -> {args.profile}", flush=True)
        try:
            profile = profile_throughput(params["bytes"], args.profile, native=args.native)
        except (RuntimeError, ValueError, subprocess.TimeoutExpired, OSError) as exc:
            print(f"profile failed: {exc}", file=sys.stderr)
        else:
            print("supervisor, self time during bulk transfer (% of active samples):")
            for name, share in profile:
                print(f"  {share:5.1f}%  {name}")

    if args.json:
        numbers = {"veth": veth, "sandbox": sandbox, "ipv6": ipv6, "ratios": ratios, "targets": targets}
        write_json(args.json, args, params, load, {**numbers, "profile_self_time_percent": profile})
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        worker_main(sys.argv[2:])
    else:
        sys.exit(main())
