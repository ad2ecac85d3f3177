"""The caller's end of the control channel to a sandbox's supervisor.

One socket carries requests and their replies, and, unasked, the exit status
of every process the supervisor reaps; the channel sorts them as they come so
a caller waiting for one reply or one exit never loses the others.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import Any, Sequence

from ..errors import SandboxClosed
from . import control


class Channel:
    """Request/response over the control socket, collecting exit events on the way."""

    def __init__(self, sock: socket.socket, supervisor_pid: int):
        self.sock = sock
        self.pid = supervisor_pid
        self.lock = threading.RLock()
        self.exits: dict[int, int] = {}
        self.replies: dict[int, tuple[bool, Any, list[int]]] = {}
        self.closed_info: object = None
        self.gone = False
        self._ids = iter(range(1, 1 << 62))

    def _receive_one(self, timeout: float | None) -> bool:
        """Read one message if one comes within ``timeout``; False on timeout."""
        if self.gone:
            raise SandboxClosed("the sandbox's supervisor has exited")
        if timeout is not None:
            ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
            if not ready:
                return False
        try:
            message, fds = control.receive(self.sock)
        except (EOFError, ConnectionResetError, OSError):
            self.gone = True
            raise SandboxClosed("the sandbox's supervisor has exited") from None
        kind = message[0]
        if kind == "exit":
            self.exits[message[1]] = message[2]
        elif kind == "reply":
            self.replies[message[1]] = (message[2], message[3], fds)
        elif kind == "closed":
            self.closed_info = message[1]
            self.gone = True
        return True

    def call(self, op: str, fds: Sequence[int] = (), **args: Any) -> tuple[Any, list[int]]:
        with self.lock:
            if self.gone:
                raise SandboxClosed("the sandbox is closed")
            request_id = next(self._ids)
            try:
                control.send(self.sock, (request_id, op, args), fds)
            except OSError as exc:
                self.gone = True
                raise SandboxClosed("the sandbox's supervisor has exited") from exc
            while request_id not in self.replies:
                self._receive_one(None)
            ok, value, got = self.replies.pop(request_id)
        if not ok:
            raise value
        return value, got

    def close(self, **args: Any) -> dict:
        """Ask the supervisor to tear down, then read until it says what became of everything.

        Returns the supervisor's closing report, empty if it died without one.
        """
        try:
            self.call("close", **args)
            while not self.gone:
                self._receive_one(None)
        except SandboxClosed:
            pass
        return self.closed_info if isinstance(self.closed_info, dict) else {}

    def wait_exit(self, pid: int, timeout: float | None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self.lock:
                if pid in self.exits:
                    return self.exits[pid]
                if self.gone:
                    return self.exits.get(pid)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    # Out of time (poll() has none at all): still take the
                    # messages already waiting, which may hold this exit.
                    while not self.gone and self._receive_one(0):
                        if pid in self.exits:
                            return self.exits[pid]
                    return self.exits.get(pid)
                self._receive_one(0.05 if remaining is None else min(0.05, remaining))
