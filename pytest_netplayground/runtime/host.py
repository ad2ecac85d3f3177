"""One sandboxed machine as the caller sees it: spawn processes in it, make sockets in it."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from typing import Any, Sequence

import attrs

from ..errors import NetplayTimeout
from .channel import Channel
from .control import StdioMode
from .process import DEVNULL, PIPE, STDOUT, Process, Spawned


def _stdio(specs: Sequence[Any]) -> tuple[list[StdioMode], list[int]]:
    """How the supervisor sets up stdin, stdout and stderr, and the descriptors it needs for that."""
    modes: list[StdioMode] = []
    fds: list[int] = []
    for i, spec in enumerate(specs):
        if spec is None:
            modes.append(StdioMode.FD)
            fds.append(i)
        elif spec == PIPE:
            modes.append(StdioMode.PIPE)
        elif spec == DEVNULL:
            modes.append(StdioMode.DEVNULL)
        elif spec == STDOUT and i == 2:
            modes.append(StdioMode.STDOUT)
        else:
            modes.append(StdioMode.FD)
            fds.append(spec if isinstance(spec, int) else spec.fileno())
    return modes, fds


def _pipe_ends(modes: Sequence[StdioMode], got: Sequence[int], text: bool) -> list[Any]:
    """File objects over the pipe descriptors the supervisor passed back, None where no pipe."""
    got_iter = iter(got)
    streams: list[Any] = []
    for i, mode in enumerate(modes):
        if mode is not StdioMode.PIPE:
            streams.append(None)
            continue
        fd = next(got_iter)
        if i == 0:
            stream = open(fd, "w" if text else "wb", buffering=-1 if text else 0)
        else:
            stream = open(fd, "r" if text else "rb", buffering=-1 if text else 0)
        try:
            stream._netplay_text = text  # type: ignore[attr-defined]
        except AttributeError:
            pass
        streams.append(stream)
    return streams


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


@attrs.define(eq=False)
class Host:
    """One sandboxed machine: a network namespace with a TUN device and an address."""

    index: int
    address: str
    name: str
    channel: Channel = attrs.field(repr=False)
    spawned: Spawned = attrs.field(repr=False)
    # Beside the IPv4 address, with the same index in the sandbox's subnet6.
    address6: str | None = None

    def spawn(
        self,
        args: Sequence[str] | str,
        *,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
        user: int | str | None = None,
        group: int | str | None = None,
        stdin: Any = None,
        stdout: Any = None,
        stderr: Any = None,
        text: bool = False,
        shell: bool | None = None,
    ) -> Process:
        """Start a process in this host: an argv list, or a string run by ``/bin/sh -c``."""
        if shell is None:
            shell = isinstance(args, str)
        argv = ["/bin/sh", "-c", args if isinstance(args, str) else " ".join(args)] if shell else list(args)
        if not argv:
            raise ValueError("spawn needs a command")
        opened = self.spawned.open_output(self, {"stdout": stdout, "stderr": stderr})
        stdout = opened.get("stdout", stdout)
        stderr = opened.get("stderr", stderr)
        modes, fds = _stdio((stdin, stdout, stderr))
        try:
            result, got = self.channel.call(
                "spawn",
                fds=fds,
                host=self.index,
                argv=[os.fspath(a) for a in argv],
                env=dict(os.environ) if env is None else dict(env),
                cwd=os.fspath(cwd) if cwd is not None else os.getcwd(),
                user=user,
                group=group,
                stdio=modes,
            )
        finally:
            for f in opened.values():
                f.close()
        process = Process(self, result["pid"], args, *_pipe_ends(modes, got, text), channel=self.channel)
        process.output_files = {stream: f.name for stream, f in opened.items()}
        self.spawned.add(process)
        return process

    def run(
        self,
        args: Sequence[str] | str,
        *,
        timeout: float | None = None,
        input: bytes | str | None = None,
        check: bool = False,
        capture_output: bool = True,
        text: bool = False,
        **kwargs: Any,
    ) -> subprocess.CompletedProcess:
        """Run a command to completion in this host, like :func:`subprocess.run`."""
        if capture_output:
            kwargs.setdefault("stdout", PIPE)
            kwargs.setdefault("stderr", PIPE)
        if input is not None:
            kwargs["stdin"] = PIPE
        process = self.spawn(args, text=text, **kwargs)
        try:
            out, err = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                pass
            raise
        result = subprocess.CompletedProcess(args, process.returncode, out, err)
        if check:
            result.check_returncode()
        return result

    def wait_for_port(self, port: int, timeout: float = 5.0) -> None:
        """Return once a TCP socket in this host listens on ``port``."""
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            listening, _ = self.channel.call("listening", host=self.index, port=int(port))
            if listening:
                return
            if time.monotonic() >= deadline:
                exited = [
                    f"{p.args!r} exited with {p.poll()}"
                    for p in self.spawned.of(self)
                    if p.poll() is not None
                ]
                hint = f" ({'; '.join(exited)})" if exited else ""
                raise NetplayTimeout(
                    f"nothing listened on TCP port {port} in host {self.name} ({self.address}) "
                    f"within {timeout} s{hint}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> socket.socket:
        """A new socket that lives in this host's network namespace."""
        _, got = self.channel.call("socket", host=self.index, family=int(family), type=int(type))
        return socket.socket(fileno=got[0])

    def connect(self, address: tuple[str, int], timeout: float | None = 5.0) -> socket.socket:
        """A TCP connection from this host to ``address`` (IPv4 or IPv6)."""
        sock = self.socket(_family(address[0]))
        sock.settimeout(timeout)
        try:
            sock.connect(tuple(address))
        except BaseException:
            sock.close()
            raise
        return sock

    def listen(self, port: int, address: str = "", backlog: int = 128) -> socket.socket:
        """A TCP socket listening on ``port`` in this host (on IPv6 too when ``address`` is one)."""
        sock = self.socket(_family(address))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(backlog)
        return sock

    def udp_socket(self, bind: tuple[str, int] | None = None) -> socket.socket:
        """A UDP socket in this host, bound to ``bind`` if given."""
        sock = self.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if bind is not None:
            sock.bind(tuple(bind))
        return sock

    def __str__(self) -> str:
        return f"{self.name} ({self.address})"
