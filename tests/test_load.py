"""Load: many short connections through a sandbox, recorded and then replayed.

What must hold at any speed is checked here: every client gets its answer, no
connection and no byte is lost, the supervisor's memory stays flat and its
descriptors come back to where they were. How fast it goes (rates, spans,
latencies) is measured by ``benchmarks/bench_load.py``, never asserted: the
rate is one that a slow, busy 2-core machine sustains.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest

from pytest_netplayground.cassette import Cassette
from pytest_netplayground.core.events import ConnectionOpened, Data, Direction, Outcome
from tests.support import leaks, load_programs

pytestmark = pytest.mark.root

PORT = 9000
HOSTS_PER_SIDE = 5
RATE = 200  # new connections per second, all clients together
SECONDS = 4
TOTAL = RATE * SECONDS
# What the supervisor may keep once the clients are gone: a listener per server
# address and port (made on demand, kept for the sandbox's life), and a little.
KEPT_DESCRIPTORS = 2 * HOSTS_PER_SIDE


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclasses.dataclass
class LoadRun:
    cassette: Path
    log: list[list]  # every client's lines
    samples: list[tuple[float, int, int]]  # (seconds since the clients started, RSS, descriptors)
    exit_codes: list[int]
    descriptors_before: int  # the supervisor's, with every host made, before the first client
    descriptors_after: int  # the same once every client has exited (and the pipes have closed)
    divergences: object = None


def settled_descriptors(pid: int, target: int, timeout: float = 10.0) -> int:
    """The supervisor's descriptor count once it is back to ``target``, or at ``timeout``."""
    deadline = time.monotonic() + timeout
    while (count := open_descriptors(pid)) > target and time.monotonic() < deadline:
        time.sleep(0.05)
    return count


def run_load(directory: Path, mode: str, cassette: Path) -> LoadRun:
    """5 server hosts (absent on replay) and 5 client hosts, at RATE for SECONDS."""
    samples: list[tuple[float, int, int]] = []
    logs = [directory / f"{mode}-client{i}.log" for i in range(HOSTS_PER_SIDE)]
    with leaks.running(mode, cassette) as sb:
        servers = [sb.add_host(f"server{i}") for i in range(HOSTS_PER_SIDE)]
        clients = [sb.add_host(f"client{i}") for i in range(HOSTS_PER_SIDE)]
        supervisor_pid = sb.supervisor_pid
        if mode == "record":
            for server in servers:
                server.spawn(load_programs.server_argv(PORT))
            for server in servers:
                server.wait_for_port(PORT, timeout=10)
        before = open_descriptors(supervisor_pid)
        start = time.monotonic()
        procs = [
            client.spawn(
                load_programs.client_argv(
                    server.address, PORT, RATE / HOSTS_PER_SIDE, SECONDS, log, client.name
                )
            )
            for client, server, log in zip(clients, servers, logs)
        ]
        deadline = start + SECONDS + 60
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            samples.append(
                (time.monotonic() - start, rss_bytes(supervisor_pid), open_descriptors(supervisor_pid))
            )
            time.sleep(0.25)
        codes = [p.wait(5) for p in procs]
        # The clients' processes hold a descriptor each in the supervisor until it reaps them.
        after = settled_descriptors(supervisor_pid, before + KEPT_DESCRIPTORS)
    return LoadRun(cassette, load_programs.read_logs(logs), samples, codes, before, after, sb.divergences)


@pytest.fixture(scope="module")
def recorded_load(tmp_path_factory) -> LoadRun:
    directory = tmp_path_factory.mktemp("load")
    return run_load(directory, "record", directory / "load.netplay")


@pytest.fixture(scope="module")
def replayed_load(recorded_load) -> LoadRun:
    return run_load(recorded_load.cassette.parent, "replay", recorded_load.cassette)


def assert_every_client_got_its_reply(run: LoadRun) -> None:
    assert run.exit_codes == [0] * HOSTS_PER_SIDE
    assert len(run.log) == TOTAL
    errors = [line for line in run.log if line[2] is not None]
    assert errors == [], f"{len(errors)} connections failed, e.g. {errors[:3]}"
    wrong = [line for line in run.log if line[1] != load_programs.answer_to(line[0])]
    assert wrong == [], f"{len(wrong)} replies were not the hash of their payload, e.g. {wrong[:3]}"
    assert len({line[0] for line in run.log}) == TOTAL


def assert_memory_flat(run: LoadRun) -> None:
    """From 2 s in to the end, the supervisor's memory grows by at most 20 MiB."""
    samples = run.samples
    early = next(rss for t, rss, _ in samples if t >= 2)
    assert samples[-1][0] >= SECONDS - 1, "the run was not sampled to its end"
    assert samples[-1][1] - early <= 20 * 1024 * 1024, [(round(t, 1), rss >> 20) for t, rss, _ in samples]


def assert_descriptors_bounded(run: LoadRun) -> None:
    """Far below the 1024 that is many systems' default limit during the run, and once the
    clients are gone back where they were but for the listeners: nothing per connection."""
    assert max(fds for _, _, fds in run.samples) < 1000, run.samples
    kept = run.descriptors_after - run.descriptors_before
    assert kept <= KEPT_DESCRIPTORS, (run.descriptors_before, run.descriptors_after)


def test_load_recording_gives_every_client_its_reply(recorded_load):
    assert_every_client_got_its_reply(recorded_load)


def test_load_recording_loses_no_connection_and_no_byte(recorded_load):
    sent: dict[int, bytearray] = {}
    answered: dict[int, bytearray] = {}
    for event in Cassette(recorded_load.cassette).events():
        if isinstance(event, ConnectionOpened):
            assert event.outcome is Outcome.ESTABLISHED
        if isinstance(event, Data):
            side = sent if event.direction is Direction.C2S else answered
            side.setdefault(event.conn, bytearray()).extend(event.data)
    conversations = {bytes(sent[conn]).decode(): bytes(answered.get(conn, b"")).decode() for conn in sent}
    assert len(conversations) == len(sent) == TOTAL
    logged = {payload: reply for payload, reply, *_ in recorded_load.log}
    assert conversations == logged


def test_load_recording_keeps_the_supervisors_memory_flat(recorded_load):
    assert_memory_flat(recorded_load)


def test_load_recording_keeps_the_supervisors_descriptors_bounded(recorded_load):
    assert_descriptors_bounded(recorded_load)


def test_load_replay_without_servers_gives_every_client_its_recorded_reply(replayed_load):
    assert_every_client_got_its_reply(replayed_load)
    assert replayed_load.divergences.ok, replayed_load.divergences.format()[:2000]


def test_load_replay_keeps_the_supervisors_memory_flat(replayed_load):
    assert_memory_flat(replayed_load)


def test_load_replay_keeps_the_supervisors_descriptors_bounded(replayed_load):
    assert_descriptors_bounded(replayed_load)
