"""Remote hosts: throughput and round trip between a local and a remote host, against a direct
veth between the two "machines", in one run.

Usage (root; iperf3 for throughput if installed, else a Python bulk transfer)::

    python benchmarks/bench_remote.py [--quick] [--mtu 1500] [--json]

Two network namespaces joined by a veth pair play the two machines (made and
removed here; the root namespace is never touched). Three paths are measured
with the same client and server programs:

* ``veth``: the client in machine A, the server in machine B, straight over the veth;
* ``sandbox``: a client and a server host of one sandbox in machine A (the router and
  the proxy, no tunnel), for reference;
* ``remote``: the client host in machine A, the server host on machine B's agent, so
  every packet crosses the router, the proxy and the sealed UDP tunnel.

Round trip: 64-byte TCP request/answer, p50 and p99 of N. Throughput: one TCP stream
client to server for a few seconds. Ratios are against ``veth``.
"""

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
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
A_ADDR, B_ADDR, PORT = "192.0.2.1", "192.0.2.2", 50000


def _worker(role: str, *args: str) -> None:
    """The programs measured: ``pong PORT`` (echo server), ``ping HOST PORT N`` (prints us per round trip),
    ``sink PORT`` and ``blast HOST PORT SECONDS`` (prints bytes/s)."""
    if role in ("pong", "sink"):
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("", int(args[0])))
        listener.listen()
        print("ready", flush=True)
        while True:
            conn, _ = listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                data = conn.recv(1 << 20)
                if not data:
                    break
                if role == "pong":
                    conn.sendall(data)
            conn.close()
    sock = _connect(args[0], int(args[1]))
    if role == "ping":
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for _ in range(int(args[2])):
            start = time.perf_counter()
            sock.sendall(b"x" * 64)
            got = 0
            while got < 64:
                got += len(sock.recv(64 - got))
            times.append((time.perf_counter() - start) * 1e6)
        print(json.dumps(times))
    else:
        chunk = b"x" * (1 << 18)
        end = time.monotonic() + float(args[2])
        sent = 0
        start = time.monotonic()
        while time.monotonic() < end:
            sent += sock.send(chunk)
        print(json.dumps(sent / (time.monotonic() - start)))
    sock.close()


def _connect(host: str, port: int) -> socket.socket:
    deadline = time.monotonic() + 10
    while True:
        try:
            return socket.create_connection((host, port), timeout=10)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def worker(*args: object) -> str:
    return f"exec {sys.executable} {os.path.join(HERE, 'bench_remote.py')} _worker " + " ".join(map(str, args))


def netns_exec(ns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def iperf(client_cmd: list[str], server: str, seconds: float) -> float:
    argv = [*client_cmd, "iperf3", "-c", server, "-t", str(seconds), "-J"]
    result = subprocess.run(argv, capture_output=True, timeout=seconds + 30)
    return json.loads(result.stdout)["end"]["sum_received"]["bits_per_second"] / 8


def measure_veth(a: str, b: str, rounds: int, seconds: float, use_iperf: bool) -> dict:
    servers = [subprocess.Popen(netns_exec(b, "sh", "-c", worker("pong", 9001)), stdout=subprocess.PIPE)]
    try:
        servers[0].stdout.readline()
        if use_iperf:
            servers.append(subprocess.Popen(netns_exec(b, "iperf3", "-s", "-1"), stdout=subprocess.DEVNULL))
            time.sleep(0.3)
            rate = iperf(netns_exec(a), B_ADDR, seconds)
        else:
            servers.append(subprocess.Popen(netns_exec(b, "sh", "-c", worker("sink", 9002)), stdout=subprocess.PIPE))
            servers[1].stdout.readline()
            blast = netns_exec(a, "sh", "-c", worker("blast", B_ADDR, 9002, seconds))
            rate = json.loads(subprocess.run(blast, capture_output=True).stdout)
        ping = netns_exec(a, "sh", "-c", worker("ping", B_ADDR, 9001, rounds))
        times = json.loads(subprocess.run(ping, capture_output=True).stdout)
    finally:
        for server in servers:
            server.kill()
            server.wait()
    return {"bytes_per_s": rate, "rtt_us": times}


def measure_sandbox(
    a: str, key: str | None, rounds: int, seconds: float, use_iperf: bool, tunnel_mtu: int | None = None
) -> dict:
    """The client on host 1 (machine A), the server on host 2: on agent b if ``key``, else in A too."""
    remote = ["--agent", f"b={B_ADDR}:{PORT}", "--key-file", key, "--on", "2=b"] if key else []
    if key and tunnel_mtu:
        remote += ["--tunnel-mtu", str(tunnel_mtu)]
    blast = f"iperf3 -c 10.0.0.2 -t {seconds} -J" if use_iperf else worker("blast", "10.0.0.2", 9002, seconds)
    throughput = f"sleep 1; {blast}"
    server = (
        f"({worker('pong', 9001)}) & exec iperf3 -s -1"
        if use_iperf
        else f"({worker('pong', 9001)}) & {worker('sink', 9002)}"
    )
    client = f"{throughput}; echo RTT $({worker('ping', '10.0.0.2', 9001, rounds)})"
    argv = [sys.executable, "-m", "pytest_netplayground", "run", *remote, "--exit-code-from", "1", client, server]
    result = subprocess.run(
        netns_exec(a, *argv), capture_output=True, text=True, timeout=seconds + 120, cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    lines = [line.split(" | ", 1)[1] for line in result.stdout.splitlines() if line.startswith("10.0.0.1 | ")]
    if result.returncode != 0:
        raise RuntimeError(f"netplay run failed: {result.stderr[-2000:]}")
    rtt = json.loads(next(line for line in lines if line.startswith("RTT "))[4:])
    body = "\n".join(line for line in lines if not line.startswith("RTT "))
    rate = json.loads(body)["end"]["sum_received"]["bits_per_second"] / 8 if use_iperf else json.loads(body)
    return {"bytes_per_s": rate, "rtt_us": rtt}


def summary(runs: dict) -> dict:
    base = runs["veth"]
    out = {}
    for name, run in runs.items():
        p50 = statistics.median(run["rtt_us"])
        p99 = statistics.quantiles(run["rtt_us"], n=100)[98]
        out[name] = {
            "gbit_per_s": run["bytes_per_s"] * 8 / 1e9,
            "rtt_p50_us": p50,
            "rtt_p99_us": p99,
            "throughput_vs_veth": run["bytes_per_s"] / base["bytes_per_s"],
            "rtt_p50_vs_veth": p50 / statistics.median(base["rtt_us"]),
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 s transfers, 300 round trips")
    parser.add_argument("--mtu", type=int, default=1500, help="MTU of the veth between the machines (default 1500)")
    parser.add_argument(
        "--tunnel-mtu", type=int, help="also measure remote hosts with this --tunnel-mtu (e.g. 65535)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_remote.py needs root (network namespaces)")
    seconds, rounds = (1.0, 300) if args.quick else (5.0, 3000)
    use_iperf = shutil.which("iperf3") is not None
    tag = str(os.getpid())
    a, b = f"benchA{tag}", f"benchB{tag}"
    workdir = tempfile.mkdtemp(prefix="bench-remote-")
    key = os.path.join(workdir, "tunnel.key")
    agent = None
    try:
        ip("netns", "add", a)
        ip("netns", "add", b)
        mtu = str(args.mtu)
        ip("-n", a, "link", "add", "va", "mtu", mtu, "type", "veth", "peer", "name", "vb", "mtu", mtu, "netns", b)
        ip("-n", a, "addr", "add", f"{A_ADDR}/24", "dev", "va")
        ip("-n", b, "addr", "add", f"{B_ADDR}/24", "dev", "vb")
        for ns, dev in ((a, "va"), (b, "vb")):
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        env = {**os.environ, "PYTHONPATH": REPO}
        subprocess.run(
            [sys.executable, "-m", "pytest_netplayground", "agent", "--make-key", key],
            check=True, env=env, cwd=REPO, capture_output=True,
        )
        log = open(os.path.join(workdir, "agent.log"), "wb")
        agent = subprocess.Popen(
            netns_exec(
                b, sys.executable, "-m", "pytest_netplayground", "agent",
                "--listen", f"{B_ADDR}:{PORT}", "--key-file", key,
            ),
            stdout=log, stderr=log, env=env, cwd=REPO,
        )
        time.sleep(1.5)
        runs = {}
        for name, measure in (
            ("veth", lambda: measure_veth(a, b, rounds, seconds, use_iperf)),
            ("sandbox", lambda: measure_sandbox(a, None, rounds, seconds, use_iperf)),
            ("remote", lambda: measure_sandbox(a, key, rounds, seconds, use_iperf)),
            *(
                [("remote-big", lambda: measure_sandbox(a, key, rounds, seconds, use_iperf, args.tunnel_mtu))]
                if args.tunnel_mtu
                else []
            ),
        ):
            sys.stderr.write(f"measuring {name}\n")
            runs[name] = measure()
    finally:
        if agent is not None:
            agent.send_signal(signal.SIGTERM)
            agent.wait(20)
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
    figures = summary(runs)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        tool = "iperf3" if use_iperf else "Python"
        print(
            f"veth MTU {args.mtu}; throughput: one TCP stream ({tool}), {seconds:.0f} s; "
            f"round trip: 64 B TCP, {rounds} times"
        )
        print(f"{'path':<10}{'Gbit/s':>9}{'x veth':>9}{'RTT p50 us':>12}{'x veth':>9}{'RTT p99 us':>12}")
        for name, f in figures.items():
            print(
                f"{name:<10}{f['gbit_per_s']:>9.3f}{f['throughput_vs_veth']:>9.3f}"
                f"{f['rtt_p50_us']:>12.0f}{f['rtt_p50_vs_veth']:>9.2f}{f['rtt_p99_us']:>12.0f}"
            )
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_worker":
        _worker(*sys.argv[2:])
    else:
        sys.exit(main())
