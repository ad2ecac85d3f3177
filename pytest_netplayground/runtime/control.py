"""The control channel between the caller and its sandbox's supervisor.

A ``SOCK_SEQPACKET`` socketpair: every message is one pickled object, and
file descriptors (sockets made inside a host, the pipes of spawned processes)
travel with it as ``SCM_RIGHTS``. Both ends run the same code, so pickle is a
safe and cheap encoding here.

Large messages go in pieces (a replay's divergence report can run to
megabytes, more than the kernel lets one packet hold): each packet starts
with one byte saying whether more of its message follow.
"""

from __future__ import annotations

import os
import pickle
import socket

MAX_MESSAGE = 1 << 20
MAX_FDS = 16
# Well under the smallest send buffer a socket gets (net.core.wmem_max caps it).
PIECE = 64 * 1024
_LAST = b"\x00"
_MORE = b"\x01"


def make_pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_MESSAGE * 2)
    return a, b


def packets(obj: object) -> list[bytes]:
    """The packets that carry ``obj``: each at most :data:`PIECE` bytes."""
    data = memoryview(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
    step = PIECE - 1
    return [
        (_LAST if start + step >= len(data) else _MORE) + data[start : start + step]
        for start in range(0, max(len(data), 1), step)
    ]


def send(sock: socket.socket, obj: object, fds: list[int] | tuple[int, ...] = ()) -> None:
    """Send ``obj`` (in pieces if large), with ``fds`` on its first packet; blocks."""
    for i, packet in enumerate(packets(obj)):
        if fds and i == 0:
            socket.send_fds(sock, [packet], list(fds))
        else:
            sock.sendall(packet)


def receive(sock: socket.socket) -> tuple[object, list[int]]:
    """One message and the descriptors that came with it; EOFError when the peer is gone."""
    pieces: list[bytes] = []
    got: list[int] = []
    while True:
        data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
        got += fds
        if not data:
            for fd in got:
                os.close(fd)
            raise EOFError("control channel closed")
        pieces.append(data[1:])
        if data[:1] == _LAST:
            return pickle.loads(b"".join(pieces)), got
