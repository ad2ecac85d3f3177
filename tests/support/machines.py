"""Two "machines" on one: network namespaces A and B joined by a veth pair, and an agent in B.

Both namespaces are made and removed by the fixture (``ip netns``); nothing in
the root namespace's links or routes is touched. Commands run in a machine
with ``ip netns exec``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
A_ADDRESS = "192.0.2.1"
B_ADDRESS = "192.0.2.2"
PORT = 50000


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def pids_in(ns: str) -> list[int]:
    result = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10)
    return [int(p) for p in result.stdout.split()]


@attrs.define
class Machines:
    a: str
    b: str
    key: Path
    agent: subprocess.Popen | None = None
    agent_log: Path | None = None

    @property
    def agent_address(self) -> str:
        return f"{B_ADDRESS}:{PORT}"

    def command(self, ns: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def environment(self) -> dict:
        return {**os.environ, "PYTHONPATH": str(ROOT)}

    def start_agent(self, key: Path | None = None) -> subprocess.Popen:
        self.agent_log = self.key.with_name("agent.log")
        log = open(self.agent_log, "wb")
        self.agent = subprocess.Popen(
            self.command(
                self.b, PYTHON, "-m", "pytest_netplayground", "agent",
                "--listen", self.agent_address, "--key-file", str(key or self.key),
            ),
            stdout=log, stderr=log, env=self.environment(), cwd=ROOT,
        )
        log.close()
        deadline = time.monotonic() + 15
        while b"listening on" not in self.agent_log.read_bytes():
            if self.agent.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the agent did not start: {self.agent_log.read_text()}")
            time.sleep(0.05)
        return self.agent

    def log(self) -> str:
        return self.agent_log.read_text() if self.agent_log else ""

    def stop_agent(self, signum: int = signal.SIGTERM) -> int | None:
        if self.agent is None:
            return None
        if self.agent.poll() is None:
            self.agent.send_signal(signum)
        try:
            code = self.agent.wait(20)
        except subprocess.TimeoutExpired:
            self.agent.kill()
            code = self.agent.wait()
        self.agent = None
        return code

    def netplay(self, *args: str, timeout: float = 60, key: Path | None = None) -> subprocess.CompletedProcess:
        """``netplay`` on machine A with agent b (the agent in B)."""
        action, *rest = args
        argv = [
            PYTHON, "-m", "pytest_netplayground", action,
            "--agent", f"b={self.agent_address}", "--key-file", str(key or self.key), *rest,
        ]
        return subprocess.run(
            self.command(self.a, *argv), capture_output=True, text=True, timeout=timeout,
            env=self.environment(), cwd=ROOT,
        )


def make_machines(tmp_path: Path, mtu: int = 1500) -> Machines:
    tag = f"{os.getpid() % 100000}{time.monotonic_ns() % 1000}"
    a, b = f"npa{tag}", f"npb{tag}"
    ip("netns", "add", a)
    try:
        ip("netns", "add", b)
        ip("-n", a, "link", "add", "va", "mtu", str(mtu), "type", "veth", "peer", "name", "vb", "mtu", str(mtu), "netns", b)
        ip("-n", a, "addr", "add", f"{A_ADDRESS}/24", "dev", "va")
        ip("-n", b, "addr", "add", f"{B_ADDRESS}/24", "dev", "vb")
        for ns, dev in ((a, "va"), (b, "vb")):
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
    except BaseException:
        remove(a, b)
        raise
    key = tmp_path / "tunnel.key"
    subprocess.run(
        [PYTHON, "-m", "pytest_netplayground", "agent", "--make-key", str(key)],
        check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
    )
    return Machines(a, b, key)


def remove(*names: str) -> None:
    for ns in names:
        for pid in pids_in(ns):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
