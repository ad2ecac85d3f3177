"""``netplay drive --rate``: the highest connection rate that holds, beside a direct veth client.

Usage (as root, a minute or two; ``--quick`` is a smoke run)::

    python benchmarks/bench_drive.py [--quick] [--json FILE]

One run records a cassette of CONNECTIONS short request/response connections (a client and a
server, Python programs in this file, in a recording sandbox), then, for each rate, plays about
two seconds' worth of them against the same server in two setups:

* direct veth: the server in one namespace of a veth pair, a Python client in the other that
  opens connection *i* at *i/rate* seconds (asyncio), sends the request and reads the answer:
  the baseline, what one Python client manages without any sandbox;
* drive: ``netplay drive -f CASSETTE --rate RATE --sample SHARE SERVER``, the proxy playing the
  recorded clients against the server in the sandbox (``--sample`` picks the share of the
  recording that lasts about two seconds at that rate).

A rate *holds* when the openings achieved it within 5% (from the first opening to the last)
and every connection was answered (drive: every one identical). The figure is the highest rate
that holds in each setup, and the drive's as a ratio to the veth client's in the same run.
Nothing is asserted: the exit status is 0 unless a measurement failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))

from common import (  # noqa: E402
    REPO,
    machine_line,
    parse_json_output,
    prepare,
    print_table,
    read_ready,
    veth_pair,
    worker_argv,
    write_json,
)

PORT = 8080
SERVER = "10.0.0.1"
FULL = {"connections": 5000, "rates": [200, 400, 800, 1200, 1600, 2000, 2400], "seconds": 2.0}
QUICK = {"connections": 400, "rates": [100, 300], "seconds": 1.0}
HOLDS = 0.95
STARTUP_REFUSAL = "established (recorded: refused)"
NETPLAY = [sys.executable, "-m", "pytest_netplayground"]


# -- the programs ---------------------------------------------------------------------------------------


async def _serve() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            writer.write(b"ok " + line)
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "", PORT, backlog=4096)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def _record_client(host: str, count: int) -> None:
    """``count`` connections one after the other, each a request and its answer."""
    import socket

    for i in range(count):
        for _ in range(500):
            try:
                sock = socket.create_connection((host, PORT), timeout=10)
                break
            except ConnectionRefusedError:  # the server is still starting
                time.sleep(0.01)
        with sock:
            sock.sendall(b"request %d\n" % i)
            while sock.recv(4096):
                pass


async def _paced_client(host: str, count: int, rate: float) -> dict:
    opened: list[float] = []
    failures = 0

    async def one(i: int) -> None:
        nonlocal failures
        opened.append(time.monotonic())
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, PORT), 10)
            writer.write(b"request %d\n" % i)
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            if not answer.startswith(b"ok "):
                failures += 1
        except (OSError, asyncio.TimeoutError):
            failures += 1

    start = time.monotonic()
    tasks = []
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    opened.sort()
    achieved = (len(opened) - 1) / (opened[-1] - opened[0]) if len(opened) > 1 else None
    return {"connections": count, "failed": failures, "achieved_rate": achieved}


def worker(role: str, *args: str) -> None:
    if role == "server":
        asyncio.run(_serve())
    elif role == "record":
        _record_client(args[0], int(args[1]))
    elif role == "paced":
        print(json.dumps(asyncio.run(_paced_client(args[0], int(args[1]), float(args[2])))))


# -- the setups -----------------------------------------------------------------------------------------


def record(cassette: Path, count: int) -> None:
    server = shlex.join(worker_argv(HERE, "server"))
    client = shlex.join(worker_argv(HERE, "record", SERVER, count))
    result = subprocess.run(
        [*NETPLAY, "record", "-f", str(cassette), "--exit-code-from", "2", server, client],
        capture_output=True,
        cwd=REPO,
        timeout=600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"recording failed: {result.stderr.decode(errors='replace')[-2000:]}")


def run_veth(rate: int, count: int) -> dict:
    with veth_pair(f"netplay-bench-{os.getpid()}") as pair:
        server = pair.spawn(0, worker_argv(HERE, "server"), stdout=subprocess.PIPE)
        read_ready(server)
        pair.wait_for_port(server, PORT)
        result = pair.run(1, worker_argv(HERE, "paced", pair.server_address, count, rate), timeout=120)
        return parse_json_output("veth client", result)


def run_drive(cassette: Path, rate: int, share: float, workdir: Path) -> dict:
    report = workdir / f"drive-{rate}.json"
    server = shlex.join(worker_argv(HERE, "server"))
    argv = [*NETPLAY, "drive", "-f", str(cassette), "--rate", str(rate), "--json", str(report)]
    if share < 1:
        argv += ["--sample", f"{share:.6f}"]
    result = subprocess.run([*argv, server], capture_output=True, cwd=REPO, timeout=300)
    if not report.exists():
        raise RuntimeError(
            f"netplay drive wrote no report (exit {result.returncode}): {result.stderr[-2000:]!r}"
        )
    data = json.loads(report.read_text())
    summary = data["summary"]
    reasons: dict[str, int] = {}
    for connection in data["connections"]:
        if connection["verdict"] != "identical":
            reason = connection["failure"] or connection["verdict"]
            reasons[reason] = reasons.get(reason, 0) + 1
    # The recording client's first tries may be refused while the server starts; driven,
    # the server accepts them: the recording's doing, not the drive's, so not counted.
    startup = reasons.pop(STARTUP_REFUSAL, 0)
    return {
        "connections": summary["connections"] - startup,
        "failed": summary["connections"] - startup - summary["identical"],
        "achieved_rate": summary["achieved_rate"],
        "reasons": reasons,
    }


def holds(result: dict, rate: int) -> bool:
    achieved = result["achieved_rate"]
    return result["failed"] == 0 and achieved is not None and achieved >= HOLDS * rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--json", metavar="FILE", help="write every figure to FILE")
    args = parser.parse_args(argv)
    params = QUICK if args.quick else FULL
    load = prepare(parser, "netplay drive --rate against a direct veth client")
    print(machine_line())
    results: dict[int, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="netplay-bench-drive-") as tmp:
        workdir = Path(tmp)
        cassette = workdir / "requests.traffic"
        started = time.monotonic()
        record(cassette, params["connections"])
        print(f"recorded {params['connections']} connections in {time.monotonic() - started:.1f} s")
        for rate in params["rates"]:
            count = max(2, min(params["connections"], int(rate * params["seconds"])))
            share = count / params["connections"]
            results[rate] = {
                "veth": run_veth(rate, count),
                "drive": run_drive(cassette, rate, share, workdir),
            }
    rows = []
    for rate, by_setup in results.items():
        for setup, result in by_setup.items():
            achieved = result["achieved_rate"]
            rows.append(
                [
                    f"{rate}/s",
                    setup,
                    str(result["connections"]),
                    "-" if achieved is None else f"{achieved:.0f}/s",
                    str(result["failed"]),
                    "yes" if holds(result, rate) else "no",
                ]
            )
    print_table(["rate", "setup", "connections", "achieved", "failed", "holds"], rows, "lllrrl")
    for rate, by_setup in results.items():
        for reason, count in by_setup["drive"].get("reasons", {}).items():
            print(f"  drive at {rate}/s: {count} x {reason}")
    best = {
        setup: max((rate for rate, r in results.items() if holds(r[setup], rate)), default=0)
        for setup in ("veth", "drive")
    }
    ratio = best["drive"] / best["veth"] if best["veth"] else float("nan")
    print(f"highest rate that holds: veth client {best['veth']}/s, drive {best['drive']}/s ({ratio:.2f}x)")
    if args.json:
        write_json(args.json, args, params, load, {"results": results, "highest": best, "ratio": ratio})
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        worker(*sys.argv[2:])
    else:
        sys.exit(main())
