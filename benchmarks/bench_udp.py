"""UDP datagrams through the sandbox at a high rate: how many arrive, beside a direct veth pair.

Usage (as root, about a minute; ``--quick`` is a smoke run of a few seconds)::

    python benchmarks/bench_udp.py [--quick] [--json FILE]

One run measures the same sender and receiver (Python programs in this file) in three setups:

* direct veth: two network namespaces (``netplay-bench-<pid>-a`` and ``-b``, made with pyroute2,
  10.99.0.1 and 10.99.0.2) joined by a veth pair: the kernel's own limit, the baseline;
* live: a live-mode :class:`pytest_netplayground.Sandbox` with a server host and a client host,
  every datagram going through the router;
* record: the same in record mode, every datagram also written to a cassette.

The sender sends COUNT datagrams of SIZE bytes from a connected socket, either as fast as it
can (``flood``) or paced at a fixed rate, then an end marker a few times; the receiver (a 4 MiB
receive buffer) counts datagrams until the first end marker or 2 s of silence. For each setup
and rate it reports what the sender managed per second and the share received; the loss
figure is given as the received share divided by the baseline's, measured in the same run
(rounds alternate between setups; the median of the rounds is kept). Nothing is asserted: the
exit status is 0 unless a measurement failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))

from common import (  # noqa: E402
    machine_line,
    parse_json_output,
    prepare,
    print_table,
    read_ready,
    stop,
    veth_pair,
    worker_argv,
    write_json,
)

PORT = 6001
FULL = {"count": 100_000, "size": 64, "rates": [0, 50_000, 20_000], "rounds": 3}
QUICK = {"count": 10_000, "size": 64, "rates": [0, 20_000], "rounds": 1}
SETUPS = ("veth", "live", "record")


# -- the programs, run inside the namespaces ---------------------------------------------------------


def worker_receiver(port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("", port))
    print("ready", flush=True)
    s.settimeout(30)
    received = 0
    try:
        while s.recv(65536) != b"end":
            received += 1
            s.settimeout(2)
    except TimeoutError:
        pass
    print(json.dumps({"received": received}), flush=True)


def worker_sender(host: str, port: int, count: int, size: int, rate: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((host, port))
    payload = b"x" * size
    sent = 0
    began = time.perf_counter()
    step = max(1, rate // 1000) if rate else count  # datagrams per millisecond slice
    while sent < count:
        for _ in range(min(step, count - sent)):
            try:
                s.send(payload)
                sent += 1
            except OSError:
                pass  # refused by an ICMP error from before: the datagram still left
        if rate:
            wait = began + sent / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
    seconds = time.perf_counter() - began
    for _ in range(5):
        time.sleep(0.05)
        try:
            s.send(b"end")
        except OSError:
            break  # the receiver is done and gone
    print(json.dumps({"sent": sent, "seconds": seconds}), flush=True)


def worker_main(argv: list[str]) -> None:
    role, args = argv[0], [int(a) if a.isdigit() else a for a in argv[1:]]
    if role == "receiver":
        worker_receiver(*args)
    elif role == "sender":
        worker_sender(*args)
    else:
        raise SystemExit(f"unknown worker role {role!r}")


# -- the setups ------------------------------------------------------------------------------------


def _result(sender: dict, receiver: dict) -> dict:
    return {
        **sender,
        "received": receiver["received"],
        "received_share": receiver["received"] / sender["sent"],
        "sent_per_s": sender["sent"] / sender["seconds"],
    }


def run_veth(pair, count: int, size: int, rate: int) -> dict:
    receiver = pair.spawn(0, worker_argv(HERE, "receiver", PORT), stdout=subprocess.PIPE)
    try:
        read_ready(receiver)
        sender = pair.run(1, worker_argv(HERE, "sender", pair.server_address, PORT, count, size, rate), 300)
        out, _ = receiver.communicate(timeout=60)
    finally:
        stop(receiver)
    return _result(parse_json_output("sender", sender), json.loads(out))


def run_sandbox(mode: str, workdir: Path, count: int, size: int, rate: int) -> dict:
    from pytest_netplayground import Sandbox
    from pytest_netplayground.runtime.sandbox import PIPE

    cassette = workdir / "udp.jsonl" if mode == "record" else None
    with Sandbox(mode=mode, cassette=cassette) as sb:
        server, client = sb.add_host(name="server"), sb.add_host(name="client")
        receiver = server.spawn(worker_argv(HERE, "receiver", PORT), stdout=PIPE)
        try:
            read_ready(receiver)
            sender = client.run(worker_argv(HERE, "sender", server.address, PORT, count, size, rate), timeout=300)
            out, _ = receiver.communicate(timeout=60)
        finally:
            stop(receiver)
    result = _result(parse_json_output("sender", sender), json.loads(out))
    if cassette is not None:
        result["cassette_mb"] = cassette.stat().st_size / 2**20
        cassette.unlink()
    return result


def measure(params: dict, workdir: Path) -> dict:
    """{rate: {setup: [round results]}}, the setups taking turns within each round."""
    results: dict = {rate: {setup: [] for setup in SETUPS} for rate in params["rates"]}
    with veth_pair(f"netplay-bench-{os.getpid()}") as pair:
        for round_ in range(params["rounds"]):
            for rate in params["rates"]:
                for setup in SETUPS:
                    if setup == "veth":
                        result = run_veth(pair, params["count"], params["size"], rate)
                    else:
                        result = run_sandbox(setup, workdir, params["count"], params["size"], rate)
                    results[rate][setup].append(result)
                    print(
                        f"  round {round_ + 1}, {_rate_name(rate)}, {setup}: sent {result['sent_per_s']:,.0f}/s, "
                        f"received {100 * result['received_share']:.2f}%",
                        flush=True,
                    )
    return results


def _rate_name(rate: int) -> str:
    return "flood" if rate == 0 else f"{rate:,}/s"


def summarize(results: dict) -> tuple[list[list[str]], dict]:
    rows, numbers = [], {}
    for rate, setups in results.items():
        medians = {
            setup: {key: statistics.median(r[key] for r in rounds) for key in ("sent_per_s", "received_share")}
            for setup, rounds in setups.items()
        }
        base = medians["veth"]["received_share"]
        for setup, median in medians.items():
            ratio = median["received_share"] / base if base else float("nan")
            median["received_vs_veth"] = ratio
            rows.append(
                [
                    _rate_name(rate),
                    setup,
                    f"{median['sent_per_s']:,.0f}",
                    f"{100 * median['received_share']:.2f}%",
                    f"{100 * (1 - median['received_share']):.2f}%",
                    f"{ratio:.3f}x",
                ]
            )
        numbers[_rate_name(rate)] = {"medians": medians, "rounds": setups}
    return rows, numbers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer datagrams and rates, one round")
    parser.add_argument("--json", metavar="FILE", help="write the numbers to FILE")
    args = parser.parse_args(argv)
    params = QUICK if args.quick else FULL
    load = prepare(
        parser,
        f"bench_udp ({'quick' if args.quick else 'full'}): {params['count']} datagrams of {params['size']} bytes, "
        f"rates {', '.join(_rate_name(r) for r in params['rates'])}, {params['rounds']} round(s)",
    )
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="netplay-bench-udp-"))
    try:
        results = measure(params, workdir)
    except KeyboardInterrupt:
        print("interrupted; sandboxes closed", file=sys.stderr)
        return 130
    except (RuntimeError, ValueError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"measurement failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows, numbers = summarize(results)
    print()
    print_table(["rate", "setup", "sent/s", "received", "lost", "received vs veth"], rows, "llrrrr")
    print(f"\n({time.monotonic() - started:.0f} s; {machine_line()})")
    if args.json:
        write_json(args.json, args, params, load, numbers)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        worker_main(sys.argv[2:])
    else:
        sys.exit(main())
