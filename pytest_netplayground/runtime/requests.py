"""What the supervisor does for each request of the test process on the control channel.

The supervisor owns the loop, the network and the processes; these handlers
only turn a parsed request into calls on them and a reply (its value, and the
descriptors that go with it). Faults and shadows bring handlers of their own.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from . import control
from .drive_request import DriveRequest, Later
from .driver import Drive

__all__ = ["request_handlers"]

Handler = Callable[[Any], tuple[object, list[int]]]


def request_handlers(sup) -> dict[type, Handler]:
    """The handlers of the core requests, acting on supervisor ``sup``."""

    def spawn(request: control.Spawn) -> tuple[object, list[int]]:
        child, to_caller = sup.processes.spawn(request)
        return {"pid": child.pid}, to_caller

    def make_socket(request: control.MakeSocket) -> tuple[object, list[int]]:
        fd = sup.processes.make_socket(request.host, request.family, request.type).detach()
        return None, [fd]

    def send_signal(request: control.Signal) -> tuple[object, list[int]]:
        sup.processes.signal(request.pid, request.signal, request.group)
        return None, []

    def namespaces(request: control.Namespaces) -> tuple[object, list[int]]:
        return [os.fstat(fd).st_ino for fd in [sup.network.proxy_ns, *sup.network.host_ns] if fd >= 0], []

    def stats(request: control.Stats) -> tuple[object, list[int]]:
        dropped = {**sup.router.dropped, **sup.faults.table.dropped}
        return {"dropped": dropped, "pipes": len(sup.proxy.pipes), "faults": sup.faults.state()}, []

    def drive(request: DriveRequest) -> tuple[object, list[int]]:
        """Start playing the request's clients; the reply (their results) comes when the last ends."""
        later = Later()
        Drive(sup.loop, sup.plan, request, sup.proxy.read_buffer, later.resolve)
        return later, []

    def close(request: control.Close) -> tuple[object, list[int]]:
        sup.stopping = True
        sup.kill_signal = request.signal
        sup.grace = request.grace
        sup.cassette_action = request.cassette
        return None, []

    return {
        control.AddHost: lambda request: (sup.add_host(request.name, request.on), []),
        control.Spawn: spawn,
        control.MakeSocket: make_socket,
        control.Listening: lambda request: (sup.processes.listening(request.host, request.port), []),
        control.Signal: send_signal,
        control.Namespaces: namespaces,
        control.Stats: stats,
        control.Close: close,
        DriveRequest: drive,
    }
