"""The supervisor's messages to its caller, queued so the loop never blocks on the channel.

A reply may carry descriptors (a socket made in a host); they go with its
first packet and are closed here once its last packet is sent.
"""

from __future__ import annotations

import collections
import os
import select
import socket
from typing import Callable

from . import control
from .loop import Loop


class Outbox:
    """Messages waiting for room on ``channel``; ``readable`` is the channel's input handler
    (watched for output too while messages wait), ``broken`` is told when the caller is gone."""

    def __init__(self, channel: socket.socket, loop: Loop, readable: Callable[[int], None], broken: Callable[[], None]):
        self.channel = channel
        self.loop = loop
        self.readable = readable
        self.broken = broken
        self.queue: collections.deque[tuple[bytes, list[int], list[int]]] = collections.deque()
        self.waiting = False

    def post(self, message: object, fds: list[int] = ()) -> None:
        """Queue ``message`` (with ``fds``, closed once sent) and send what can go now."""
        pieces = control.packets(message)
        for i, packet in enumerate(pieces):
            last = i == len(pieces) - 1
            self.queue.append((packet, list(fds) if i == 0 else [], list(fds) if last else []))
        self.flush()

    def flush(self) -> None:
        """Send queued packets until the channel is full (then wait for room) or the queue is empty."""
        while self.queue:
            data, fds, close_after = self.queue[0]
            try:
                if fds:
                    socket.send_fds(self.channel, [data], fds, socket.MSG_DONTWAIT)
                else:
                    self.channel.send(data, socket.MSG_DONTWAIT)
            except BlockingIOError:
                if not self.waiting:
                    self.waiting = True
                    mask = select.EPOLLIN | select.EPOLLOUT
                    self.loop.watch(self.channel.fileno(), mask, self.readable, registered=True)
                return
            except OSError:
                self.queue.clear()
                self.broken()
                return
            self.queue.popleft()
            for fd in close_after:
                os.close(fd)
        if self.waiting:
            self.waiting = False
            self.loop.watch(self.channel.fileno(), select.EPOLLIN, self.readable, registered=True)
