"""What the benchmarks share: the direct veth baseline, process helpers, the report table
and the start and end of a run. Imported by the scripts beside it (their directory is first
on ``sys.path`` when one is run as a script).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

VETH_SERVER = "10.99.0.1"
VETH_CLIENT = "10.99.0.2"
PREFIXLEN = 24
VETH_IF = "veth0"


def worker_argv(script: str | Path, role: str, *args: object) -> list[str]:
    """How a benchmark runs one of its own client/server programs: ``SCRIPT _worker ROLE ARGS``."""
    return [sys.executable, str(script), "_worker", role, *(str(a) for a in args)]


def quantile(values: list[float], q: int) -> float:
    """The q-th percentile (inclusive method)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def parse_json_output(what: str, result: subprocess.CompletedProcess) -> dict:
    if result.returncode != 0:
        err = result.stderr.decode(errors="replace") if result.stderr else ""
        out = result.stdout.decode(errors="replace") if result.stdout else ""
        raise RuntimeError(f"{what} exited with {result.returncode}: {err.strip()} {out.strip()[-500:]}")
    return json.loads(result.stdout)



def read_ready(process) -> None:
    line = process.stdout.readline()
    if line.strip() != b"ready":
        raise RuntimeError(f"server {process.args!r} did not start (said {line!r})")


def stop(process) -> None:
    if process.poll() is None:
        process.kill()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        pass
    if process.stdout is not None:
        process.stdout.close()


def listening_in(pid: int, port: int) -> bool:
    """Whether a TCP socket in process ``pid``'s network namespace listens on ``port``."""
    lines = []
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                lines += f.read().splitlines()[1:]
        except OSError:
            pass
    for line in lines:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            return True
    return False


# -- the direct veth baseline -------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back for the body; they are delivered right after it."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class VethPair:
    """Two named namespaces joined by a veth pair; ``a`` serves on 10.99.0.1, ``b`` is the client."""

    def __init__(self, prefix: str):
        self.names = (f"{prefix}-a", f"{prefix}-b")
        self.created: list[str] = []
        self.processes: list[subprocess.Popen] = []
        self.fds: dict[str, int] = {}
        self.server_address = VETH_SERVER

    def create(self) -> None:
        with signals_held():  # a Ctrl-C lands after this, when close() knows every name made
            self._create()

    def _create(self) -> None:
        from pyroute2 import IPRoute, netns

        a, b = self.names
        for name in self.names:
            self.created.append(name)  # before create: a half-made one is removed too
            netns.create(name)
        for name, address, peer in ((a, VETH_SERVER, b), (b, VETH_CLIENT, None)):
            netns.pushns(name)
            try:
                with IPRoute() as ipr:
                    if peer is not None:
                        ipr.link(
                            "add", ifname=VETH_IF, kind="veth", peer={"ifname": VETH_IF, "net_ns_fd": peer}
                        )
                    idx = ipr.link_lookup(ifname=VETH_IF)[0]
                    ipr.addr("add", index=idx, address=address, prefixlen=PREFIXLEN)
                    ipr.link("set", index=idx, state="up")
                    ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            finally:
                netns.popns()

    def close(self) -> None:
        with signals_held():  # a second Ctrl-C must not cut the clean-up short
            self._close()

    def _close(self) -> None:
        from pyroute2 import netns

        for process in self.processes:
            stop(process)
        self.processes.clear()
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
        while self.created:
            name = self.created.pop()
            try:
                netns.remove(name)
            except OSError:
                pass

    def _enter(self, side: int):
        name = self.names[side]
        if name not in self.fds:
            self.fds[name] = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
        fd = self.fds[name]

        def preexec() -> None:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                os._exit(126)

        return preexec

    def spawn(self, side: int, argv: list[str], stdout=None) -> subprocess.Popen:
        preexec = self._enter(side)
        quiet = subprocess.DEVNULL
        process = subprocess.Popen(argv, stdout=stdout, stderr=quiet, preexec_fn=preexec)  # noqa: PLW1509
        self.processes.append(process)
        return process

    def run(self, side: int, argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        preexec = self._enter(side)
        return subprocess.run(argv, check=False, capture_output=True, timeout=timeout, preexec_fn=preexec)

    def wait_for_port(self, process: subprocess.Popen, port: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not listening_in(process.pid, port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{process.args!r} did not listen on port {port}")
            time.sleep(0.005)


@contextlib.contextmanager
def veth_pair(prefix: str) -> Iterator[VethPair]:
    """A ready :class:`VethPair`, removed on the way out whatever happens (Ctrl-C included)."""
    pair = VethPair(prefix)
    try:
        pair.create()
        yield pair
    finally:
        pair.close()


def self_time(path: str, top: int = 12) -> list[tuple[str, float]]:
    """The functions with the most self time in py-spy's raw output, in % of the samples."""
    counts: dict[str, int] = {}
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            leaf = stack.split(";")[-1]
            counts[leaf] = counts.get(leaf, 0) + int(count)
            total += int(count)
    ranked = sorted(counts.items(), key=lambda item: -item[1])[:top]
    return [(name, 100.0 * n / total) for name, n in ranked]


# -- report -------------------------------------------------------------------------------------------


def verdict(op: str, limit: float, value: float, unit: str = "x") -> tuple[str, bool]:
    """A target's text (``>= 0.5x``) and whether ``value`` meets it."""
    met = {">=": value >= limit, "<=": value <= limit, "<": value < limit, ">": value > limit}[op]
    return f"{op} {limit:g}{unit}", met


def print_table(header: list[str], rows: list[list[str]], align: str) -> None:
    """Rows under a header, each column left- (``l``) or right-aligned (``r``) as ``align`` says."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    print("-|-".join("-" * w for w in widths))
    for row in rows:
        cells = [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(row, widths, align)]
        print(" | ".join(cells).rstrip())


# -- start and end of a run ---------------------------------------------------------------------------


def machine_line() -> str:
    return f"{os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"


def write_json(path: str, args: argparse.Namespace, params: dict, load: float, numbers: dict) -> None:
    """Every number of a run, with what was run and on what machine."""
    data = {
        "mode": "quick" if args.quick else "full",
        "params": params,
        "machine": {
            "cores": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "load_average_at_start": load,
        },
        **numbers,
    }
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def prepare(parser: argparse.ArgumentParser, headline: str) -> float:
    """What every benchmark does first: check root, import the package, trap signals, say the load."""
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces)")
    try:
        import pytest_netplayground  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(REPO))
    import pyroute2  # noqa: F401  (imported up front: setup timings exclude the import)

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    load = os.getloadavg()[0]
    print(f"{headline}; load average {load:.2f}", flush=True)
    if load > 0.5:
        print("  (other work is running on this machine: the numbers will be noisy)", flush=True)
    return load
