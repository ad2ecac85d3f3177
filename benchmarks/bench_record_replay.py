"""Record and replay cost of the sandbox, measured against live mode.

Usage (as root, takes two to three minutes; ``--quick`` is a smoke run of some seconds)::

    python benchmarks/bench_record_replay.py [--quick] [--json FILE] [--profile PREFIX [--native]]

Every measurement uses one deterministic pair of programs from this file, with a server host
(10.0.0.1) and a client host (10.0.0.2) in a :class:`pytest_netplayground.Sandbox`:

* the server accepts one connection, sends N bytes of a fixed binary pattern (byte ``i`` of the
  stream is ``i % 256``, so the cassette stores it as base64), shuts down its side and waits for
  the client to close;
* the client connects, reads to end of stream, checks that every read continues the pattern,
  and prints the byte count and its bytes per second, timed from the connect to the end of
  stream.

N is 1 GiB (100 MiB with ``--quick``). A round runs the pair in three setups, one after the
other, each in a new sandbox:

* live: live mode, the baseline of this script;
* record: record mode, the cassette written to a temporary directory (``tempfile``, so on
  the disk that holds ``/tmp``); its size is reported;
* replay-flood: replay of that round's cassette with ``pace="flood"``, the server host
  present but the server not running, so the cassette stands in for it; the client must get
  exactly N bytes, in the pattern, and the divergence report must be empty.

There are 3 rounds (1 with ``--quick``) and the median of the rounds is kept, so that other
load on the machine weighs on all three setups alike. Then the last round's cassette (an
N-byte transfer recorded once) is replayed once more in flood mode while a thread samples the
supervisor's ``VmRSS`` in ``/proc/<pid>/status`` every 20 ms; ``VmHWM`` is read at the end,
before the sandbox closes. The supervisor's ``VmHWM`` is also noted for every round.

It prints a table with the ratios record/live (target >= 0.8x) and replay-flood/live (target
>= 1.0x) and the supervisor's peak memory while replaying (target < 100 MB whatever the
cassette size; the larger of the sampled peak and ``VmHWM`` is judged), each marked MET or NOT
MET, and the replay check. The exit status is 0 whether or not the targets are met, 1 if a
measurement failed or the replayed bytes were wrong. ``--json FILE`` writes every number.
``--profile PREFIX`` then runs one more record and one more replay-flood transfer with py-spy
sampling the supervisor, writes py-spy's raw (collapsed stacks) output to
``PREFIX-record.txt`` and ``PREFIX-replay.txt`` and prints the functions with the most self
time in each; ``--native`` samples C frames too.

Needs: root, python3 with pyroute2 (a dependency of the package); for ``--profile`` only,
py-spy (``pip install py-spy``). Helpers come from ``common.py`` beside this file. Traffic
goes only between the hosts of the sandboxes this script makes; the temporary directory is
removed at the end, on Ctrl-C and SIGTERM too.
"""

# Requirements for .ci/run if this benchmark is run there:
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
import tempfile
import threading
import time
from pathlib import Path

# When this file is run as a script its directory is first on sys.path.
from common import machine_line, parse_json_output, prepare, read_ready, self_time, stop, write_json
from common import print_table as print_rows
from common import verdict as common_verdict
from common import worker_argv as common_worker_argv

HERE = Path(__file__).resolve()

PORT = 5401
BLOCK = bytes(range(256)) * 4096  # 1 MiB of the pattern; byte i of the stream is i % 256
MB = 1e6

FULL = {"bytes": 1 << 30, "rounds": 3}
QUICK = {"bytes": 100 << 20, "rounds": 1}

SETUPS = ("live", "record", "replay")
LABELS = {"live": "live", "record": "record", "replay": "replay-flood"}

TARGETS = {
    "record_over_live": (">=", 0.8, "x"),
    "replay_over_live": (">=", 1.0, "x"),
    "replay_peak_memory_mb": ("<", 100.0, " MB"),
}


# -- the client/server pair, run as ``bench_record_replay.py _worker ROLE ...`` ---------------------------


def worker_pattern_server(port: int, size: int) -> None:
    """Accept one connection, send ``size`` bytes of the pattern, shut down, wait for the close."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen(1)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    conn, _ = listener.accept()
    listener.close()
    view = memoryview(BLOCK)
    with conn:
        left = size
        while left:
            n = min(left, len(view))
            conn.sendall(view[:n])
            left -= n
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(65536):
            pass


def worker_drain_client(host: str, port: int) -> None:
    """Read to end of stream, checking the pattern at both ends of every read; print JSON."""
    sock = socket.create_connection((host, port), timeout=10)
    sock.settimeout(120)
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    total = 0
    pattern_ok = True
    clock = time.perf_counter
    start = clock()
    with sock:
        while True:
            n = sock.recv_into(view)
            if n == 0:
                break
            if buf[0] != total & 0xFF or buf[n - 1] != (total + n - 1) & 0xFF:
                pattern_ok = False
            total += n
        seconds = clock() - start
    result = {"bytes": total, "seconds": seconds, "bytes_per_s": total / seconds, "pattern_ok": pattern_ok}
    print(json.dumps(result))


def worker_main(argv: list[str]) -> None:
    role, args = argv[0], argv[1:]
    if role == "pattern-server":
        worker_pattern_server(int(args[0]), int(args[1]))
    elif role == "drain-client":
        worker_drain_client(args[0], int(args[1]))
    else:
        raise SystemExit(f"unknown worker role {role!r}")


def worker_argv(role: str, *args: object) -> list[str]:
    return common_worker_argv(HERE, role, *args)


# -- supervisor memory ------------------------------------------------------------------------------------


def proc_status_kb(pid: int, field: str) -> int | None:
    """A ``kB`` field (``VmRSS``, ``VmHWM``) of ``/proc/<pid>/status``; None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class RssSampler:
    """Samples a process's VmRSS every ``interval`` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.02):
        self.pid = pid
        self.interval = interval
        self.peak_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            kb = proc_status_kb(self.pid, "VmRSS")
            if kb is not None:
                self.peak_kb = max(self.peak_kb, kb)
                self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- one transfer in each setup ---------------------------------------------------------------------------


def run_client(client, server_address: str, expected: int) -> dict:
    result = client.run(worker_argv("drain-client", server_address, PORT), timeout=600)
    data = parse_json_output("drain client", result)
    data["bytes_ok"] = data["bytes"] == expected
    return data


def transfer(sb, size: int, spy: Spy | None = None) -> dict:
    """Run the pair in ``sb`` (the server only outside replay); the client's numbers plus VmHWM."""
    from pytest_netplayground.runtime.sandbox import PIPE

    server_host, client_host = sb.add_host(name="server"), sb.add_host(name="client")
    server = None
    if sb.mode != "replay":
        server = server_host.spawn(worker_argv("pattern-server", PORT, size), stdout=PIPE)
    try:
        if server is not None:
            read_ready(server)
            server_host.wait_for_port(PORT)
        if spy is not None:
            spy.start(sb.supervisor_pid)
        try:
            result = run_client(client_host, server_host.address, size)
        finally:
            if spy is not None:
                spy.finish()
        if server is not None:
            server.wait(30)
    finally:
        if server is not None:
            stop(server)
    result["supervisor_hwm_mb"] = (proc_status_kb(sb.supervisor_pid, "VmHWM") or 0) * 1024 / MB
    return result


def run_live(size: int, spy: Spy | None = None) -> dict:
    from pytest_netplayground import Sandbox

    with Sandbox() as sb:
        return transfer(sb, size, spy)


def run_record(size: int, cassette: Path, spy: Spy | None = None) -> dict:
    from pytest_netplayground import Sandbox

    with Sandbox(mode="record", cassette=cassette) as sb:
        result = transfer(sb, size, spy)
        began = time.perf_counter()
    result["close_s"] = time.perf_counter() - began  # writing the end marker, fsync, rename
    result["cassette_mb"] = cassette.stat().st_size / MB
    return result


def run_replay(size: int, cassette: Path, spy: Spy | None = None, sample_memory: bool = False) -> dict:
    from pytest_netplayground import Sandbox

    began = time.perf_counter()
    sb = Sandbox(mode="replay", cassette=cassette, pace="flood")
    try:
        sb.start()  # indexes the cassette
        result = {"start_s": time.perf_counter() - began}
        if sample_memory:
            with RssSampler(sb.supervisor_pid) as sampler:
                result.update(transfer(sb, size, spy))
            result["rss_peak_mb"] = sampler.peak_kb * 1024 / MB
            result["rss_samples"] = sampler.samples
        else:
            result.update(transfer(sb, size, spy))
    except BaseException:
        sb.close("abort")
        raise
    sb.close()
    report = sb.divergences
    result["divergences_ok"] = report.ok
    result["divergences"] = "" if report.ok else report.format()
    result["truncated_at"] = sb.truncated_at
    result["replay_ok"] = (
        result["bytes_ok"] and result["pattern_ok"] and report.ok and sb.truncated_at is None
    )
    return result


def check_transfer(label: str, result: dict, size: int) -> None:
    if not (result["bytes_ok"] and result["pattern_ok"]):
        raise RuntimeError(
            f"{label}: the client got {result['bytes']} of {size} bytes, pattern "
            f"{'ok' if result['pattern_ok'] else 'broken'}"
        )


def gbit(result: dict) -> float:
    return result["bytes_per_s"] * 8 / 1e9


def measure_rounds(params: dict, workdir: Path) -> tuple[dict[str, list[dict]], Path]:
    """live, record, replay-flood in turn, ``rounds`` times; the last cassette is kept and returned."""
    size = params["bytes"]
    rounds: dict[str, list[dict]] = {setup: [] for setup in SETUPS}
    cassette = workdir / "round-0.cassette"
    for r in range(params["rounds"]):
        previous, cassette = cassette, workdir / f"round-{r + 1}.cassette"
        live = run_live(size)
        check_transfer("live", live, size)
        record = run_record(size, cassette)
        check_transfer("record", record, size)
        previous.unlink(missing_ok=True)  # the disk holds one cassette at a time
        replay = run_replay(size, cassette)
        for setup, result in zip(SETUPS, (live, record, replay)):
            rounds[setup].append(result)
        print(
            f"  round {r + 1}/{params['rounds']}: live {gbit(live):.2f}, record {gbit(record):.2f}, "
            f"replay-flood {gbit(replay):.2f} Gbit/s; cassette {record['cassette_mb']:.0f} MB "
            f"(close {record['close_s']:.2f} s), replay start {replay['start_s']:.2f} s; "
            f"supervisor VmHWM {live['supervisor_hwm_mb']:.0f} / {record['supervisor_hwm_mb']:.0f} / "
            f"{replay['supervisor_hwm_mb']:.0f} MB; replay {'ok' if replay['replay_ok'] else 'WRONG'}",
            flush=True,
        )
    return rounds, cassette


# -- profile ----------------------------------------------------------------------------------------------


class Spy:
    """py-spy sampling the supervisor from just before the client starts until it ends."""

    def __init__(self, out: str, native: bool):
        pyspy = shutil.which("py-spy")
        if pyspy is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        self.pyspy = pyspy
        self.out = out
        self.native = native
        self.process: subprocess.Popen | None = None
        self.error = b""

    def start(self, pid: int) -> None:
        argv = [self.pyspy, "record", "--format", "raw", "--nolineno", "--rate", "250", "-o", self.out]
        argv += [*(["--native"] if self.native else []), "--pid", str(pid)]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # let py-spy attach

    def finish(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        _, self.error = self.process.communicate(timeout=30)

    def check(self) -> None:
        assert self.process is not None
        if self.process.returncode not in (0, -signal.SIGINT) or not os.path.exists(self.out):
            message = self.error.decode(errors="replace").strip()
            raise RuntimeError(f"py-spy failed ({self.process.returncode}): {message}")


def profile(params: dict, workdir: Path, prefix: str, native: bool) -> dict[str, list[tuple[str, float]]]:
    size = params["bytes"]
    cassette = workdir / "profile.cassette"
    summaries = {}
    for setup in ("record", "replay"):
        out = f"{prefix}-{setup}.txt"
        spy = Spy(out, native)
        if setup == "record":
            result = run_record(size, cassette, spy)
        else:
            result = run_replay(size, cassette, spy)
        spy.check()
        print(f"  {LABELS[setup]} under py-spy: {gbit(result):.2f} Gbit/s (slowed by sampling) -> {out}")
        summaries[setup] = self_time(out)
    cassette.unlink(missing_ok=True)
    return summaries


# -- report -----------------------------------------------------------------------------------------------


def verdict(name: str, value: float) -> tuple[str, bool]:
    op, limit, unit = TARGETS[name]
    return common_verdict(op, limit, value, unit)


def build_report(summary: dict, memory: dict, size: int) -> tuple[list[list[str]], dict]:
    live, record, replay = (summary[s]["gbit_s"] for s in SETUPS)
    peak_mb = max(memory["rss_peak_mb"], memory["supervisor_hwm_mb"])
    values = {
        "record_over_live": record / live,
        "replay_over_live": replay / live,
        "replay_peak_memory_mb": peak_mb,
    }
    targets = {}
    for name, value in values.items():
        text, met = verdict(name, value)
        targets[name] = {"target": text, "value": value, "met": met}

    def status(name: str) -> list[str]:
        return [targets[name]["target"], "MET" if targets[name]["met"] else "NOT MET"]

    size_text = f"{size / (1 << 30):g} GiB" if size >= 1 << 30 else f"{size / (1 << 20):g} MiB"
    replays = summary["replay"]["rounds"] + [memory]
    bad = [r for r in replays if not r["replay_ok"]]
    rows = [
        ["live throughput (Gbit/s), the baseline", f"{live:.2f}", "", ""],
        ["record throughput (Gbit/s)", f"{record:.2f}", "", ""],
        ["record / live", f"{values['record_over_live']:.2f}x", *status("record_over_live")],
        ["cassette size (MB)", f"{summary['record']['cassette_mb']:.0f}", "", ""],
        ["replay-flood throughput (Gbit/s)", f"{replay:.2f}", "", ""],
        ["replay-flood / live", f"{values['replay_over_live']:.2f}x", *status("replay_over_live")],
        [f"supervisor peak VmRSS replaying {size_text} (MB)", f"{memory['rss_peak_mb']:.1f}", "", ""],
        [f"supervisor VmHWM replaying {size_text} (MB)", f"{memory['supervisor_hwm_mb']:.1f}", "", ""],
        ["supervisor peak memory (MB)", f"{peak_mb:.1f}", *status("replay_peak_memory_mb")],
        [
            f"replays with exactly {size} bytes, no divergence",
            f"{len(replays) - len(bad)}/{len(replays)}",
            "all",
            "OK" if not bad else "FAILED",
        ],
    ]
    return rows, targets


def print_table(rows: list[list[str]]) -> None:
    print_rows(["metric", "value", "target", "status"], rows, "lrll")


# -- main -------------------------------------------------------------------------------------------------


def summarize(rounds: dict[str, list[dict]]) -> dict:
    summary = {}
    for setup, results in rounds.items():
        entry = {"gbit_s": statistics.median(gbit(r) for r in results), "rounds": results}
        if setup == "record":
            entry["cassette_mb"] = statistics.median(r["cassette_mb"] for r in results)
        summary[setup] = entry
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--json", metavar="FILE", help="write the numbers to FILE")
    parser.add_argument(
        "--profile",
        metavar="PREFIX",
        help="also profile a record and a replay-flood transfer with py-spy (raw output to PREFIX-*.txt)",
    )
    parser.add_argument("--native", action="store_true", help="with --profile: sample native frames too")
    args = parser.parse_args(argv)
    if args.profile and shutil.which("py-spy") is None:
        parser.error("--profile needs py-spy (pip install py-spy)")
    params = QUICK if args.quick else FULL
    size = params["bytes"]
    load = prepare(
        parser,
        f"bench_record_replay ({'quick' if args.quick else 'full'}): {size} bytes per transfer, "
        f"{params['rounds']} round(s) of live, record, replay-flood, median kept",
    )
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="netplay-bench-"))
    profiles = None
    try:
        print(f"cassettes in {workdir}", flush=True)
        rounds, cassette = measure_rounds(params, workdir)
        print("supervisor memory: replaying the last cassette, VmRSS sampled every 20 ms", flush=True)
        memory = run_replay(size, cassette, sample_memory=True)
        print(
            f"  {gbit(memory):.2f} Gbit/s, peak VmRSS {memory['rss_peak_mb']:.1f} MB "
            f"({memory['rss_samples']} samples), VmHWM {memory['supervisor_hwm_mb']:.1f} MB",
            flush=True,
        )
        cassette.unlink(missing_ok=True)
        if args.profile:
            print(f"profiling the supervisor with py-spy -> {args.profile}-*.txt", flush=True)
            try:
                profiles = profile(params, workdir, args.profile, args.native)
            except (RuntimeError, ValueError, subprocess.TimeoutExpired, OSError) as exc:
                print(f"profile failed: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted; sandboxes closed", file=sys.stderr)
        return 130
    except (RuntimeError, ValueError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"measurement failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started

    summary = summarize(rounds)
    rows, targets = build_report(summary, memory, size)
    print()
    print_table(rows)
    print(f"\n({elapsed:.0f} s; {machine_line()})")
    for result in summary["replay"]["rounds"] + [memory]:
        if result["divergences"]:
            print(f"\ndivergences:\n{result['divergences']}")
            break
    if profiles:
        for setup, ranked in profiles.items():
            print(f"\nsupervisor, self time during {LABELS[setup]} (% of active samples):")
            for name, share in ranked:
                print(f"  {share:5.1f}%  {name}")

    if args.json:
        numbers = {"setups": summary, "memory": memory, "targets": targets}
        write_json(args.json, args, params, load, {**numbers, "profile_self_time_percent": profiles})
    replays = summary["replay"]["rounds"] + [memory]
    return 0 if all(r["replay_ok"] for r in replays) else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        worker_main(sys.argv[2:])
    else:
        sys.exit(main())
