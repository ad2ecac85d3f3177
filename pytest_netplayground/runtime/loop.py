"""The supervisor's event loop: one epoll and a heap of deadlines, one thread.

Everything the supervisor does is a handler run from here: TUN packets, proxy
sockets, the control channel, exited children. A handler takes the epoll
event mask; a timer takes nothing (or the object it was set for).
"""

from __future__ import annotations

import heapq
import itertools
import select
import time
import weakref
from typing import Callable

Handler = Callable[[int], object]


class Loop:
    """A minimal epoll reactor with deadlines; handlers take the event mask."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.handlers: dict[int, Handler] = {}
        self.timers: list[tuple[float, int, Callable[[], object]]] = []
        #: Called after each round of handlers: to send at once what the handlers queued.
        self.after: list[Callable[[], object]] = []
        self._seq = itertools.count()

    @staticmethod
    def now() -> float:
        return time.monotonic()

    def watch(self, fd: int, mask: int, handler: Handler, registered: bool = False) -> None:
        self.handlers[fd] = handler
        if registered:
            self.epoll.modify(fd, mask)
        else:
            self.epoll.register(fd, mask)

    def unwatch(self, fd: int) -> None:
        if self.handlers.pop(fd, None) is not None:
            try:
                self.epoll.unregister(fd)
            except (OSError, ValueError):
                pass

    def call_at(self, when: float, callback, owner: object = None) -> None:
        """Run ``callback()`` at ``when``; with ``owner``, run ``callback(owner)`` if it still exists then.

        The timer holds an owner weakly, so a finished connection is freed at
        once, not when its latest timer comes due.
        """
        if owner is not None:
            ref, target = weakref.ref(owner), callback
            callback = lambda: (alive := ref()) is not None and target(alive)
        heapq.heappush(self.timers, (when, next(self._seq), callback))

    def run_once(self, max_wait: float | None) -> list[tuple[int, int]]:
        """Wait for and handle ready descriptors and due timers; returns the (fd, events) that were ready."""
        timeout = -1.0 if max_wait is None else max_wait
        if self.timers:
            until = self.timers[0][0] - time.monotonic()
            timeout = max(0.0, until) if timeout < 0 else max(0.0, min(timeout, until))
        try:
            ready = self.epoll.poll(timeout)
        except InterruptedError:
            ready = []
        handlers = self.handlers
        for fd, events in ready:
            handler = handlers.get(fd)
            if handler is not None:
                handler(events)
        for hook in self.after:
            hook()
        if self.timers:
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, callback = heapq.heappop(self.timers)
                callback()
        return ready
