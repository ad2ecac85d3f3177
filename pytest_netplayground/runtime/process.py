"""Processes running in a sandbox's hosts, and the record of every one spawned.

A :class:`Process` behaves like :class:`subprocess.Popen`: its pipes are real
descriptors passed back from the host, and its exit status arrives over the
control channel once the supervisor has reaped it.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from typing import TYPE_CHECKING, Any, BinaryIO, Iterator

import attrs

from ..errors import SandboxClosed
from .channel import Channel

if TYPE_CHECKING:
    from .host import Host

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT


@attrs.define(eq=False)
class Process:
    """A process running in a host; behaves like :class:`subprocess.Popen`."""

    host: "Host"
    pid: int
    args: Any
    stdin: Any = None
    stdout: Any = None
    stderr: Any = None
    returncode: int | None = None
    output_files: dict = attrs.field(factory=dict)
    channel: Channel = attrs.field(kw_only=True, repr=False)

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self.returncode = self.channel.wait_exit(self.pid, 0)
            except SandboxClosed:
                pass
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            code = self.channel.wait_exit(self.pid, timeout)
            if code is None:
                if self.channel.gone:
                    raise SandboxClosed(f"the sandbox closed before process {self.pid} was seen to exit")
                raise subprocess.TimeoutExpired(self.args, timeout)
            self.returncode = code
        return self.returncode

    def send_signal(self, sig: int, group: bool = False) -> None:
        """Send ``sig`` to the process (or, with ``group``, to its whole process group)."""
        if self.returncode is None:
            self.channel.call("signal", pid=self.pid, signal=int(sig), group=group)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, input: bytes | str | None = None, timeout: float | None = None):
        """Send ``input``, read stdout and stderr to EOF, wait; like Popen.communicate."""
        deadline = None if timeout is None else time.monotonic() + timeout
        chunks: dict[Any, list[bytes]] = {}
        sel = selectors.DefaultSelector()
        pending_input = b""
        if self.stdin is not None:
            if input:
                pending_input = input.encode() if isinstance(input, str) else bytes(input)
                os.set_blocking(self.stdin.fileno(), False)
                sel.register(self.stdin, selectors.EVENT_WRITE)
            else:
                self.stdin.close()
        for stream in (self.stdout, self.stderr):
            if stream is not None and not stream.closed:
                chunks[stream] = []
                sel.register(stream, selectors.EVENT_READ)
        while sel.get_map():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                sel.close()
                raise subprocess.TimeoutExpired(self.args, timeout)
            for key, _ in sel.select(remaining):
                if key.fileobj is self.stdin:
                    try:
                        n = os.write(self.stdin.fileno(), pending_input[:65536])
                    except BrokenPipeError:
                        n = len(pending_input)
                    except BlockingIOError:
                        continue
                    pending_input = pending_input[n:]
                    if not pending_input:
                        sel.unregister(self.stdin)
                        self.stdin.close()
                    continue
                data = os.read(key.fileobj.fileno(), 65536)
                if data:
                    chunks[key.fileobj].append(data)
                else:
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
        sel.close()
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        self.wait(remaining)
        results = []
        for stream in (self.stdout, self.stderr):
            if stream is None:
                results.append(None)
                continue
            data = b"".join(chunks.get(stream, []))
            results.append(data.decode() if getattr(stream, "_netplay_text", False) else data)
        return tuple(results)

    def __enter__(self) -> "Process":
        return self

    def __exit__(self, *exc: object) -> None:
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        if self.returncode is None:
            try:
                self.kill()
                self.wait(5)
            except (SandboxClosed, subprocess.TimeoutExpired):
                pass


@attrs.define(eq=False)
class Spawned:
    """Every process spawned in one sandbox's hosts, in order, and where their unredirected output goes.

    Teardown settles their exit statuses, a host's output is read back from
    their files, and a host's exited processes explain a port never opened.
    """

    output_dir: str | None = None
    _processes: list[Process] = attrs.field(factory=list, repr=False)

    def __iter__(self) -> Iterator[Process]:
        return iter(self._processes)

    def __len__(self) -> int:
        return len(self._processes)

    def add(self, process: Process) -> None:
        self._processes.append(process)

    def of(self, host: "Host") -> list[Process]:
        return [p for p in self._processes if p.host is host]

    def open_output(self, host: "Host", streams: dict[str, Any]) -> dict[str, BinaryIO]:
        """Files for those of ``streams`` (stdout/stderr -> spec) left to the sandbox, one per process and stream."""
        if self.output_dir is None:
            return {}
        number = len(self.of(host)) + 1
        opened = {}
        for stream_name, spec in streams.items():
            if spec is None:
                path = os.path.join(self.output_dir, f"{host.name}-{number}.{stream_name}")
                opened[stream_name] = open(path, "ab")
        return opened

    def output(self, host: "Host") -> dict[str, bytes]:
        """What ``host``'s processes wrote to their output files, by stream."""
        collected: dict[str, bytes] = {}
        for process in self.of(host):
            for stream, path in process.output_files.items():
                try:
                    with open(path, "rb") as f:
                        data = f.read()
                except OSError:
                    continue
                if data:
                    collected[stream] = collected.get(stream, b"") + data
        return collected

    def settle(self, exits: dict[int, int]) -> None:
        """Give each process still without a status the one the supervisor reported."""
        for process in self._processes:
            if process.returncode is None and process.pid in exits:
                process.returncode = exits[process.pid]
