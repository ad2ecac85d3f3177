"""The control channel between the caller and its sandbox's supervisor.

A ``SOCK_SEQPACKET`` socketpair: every message is one pickled object, and
file descriptors (sockets made inside a host, the pipes of spawned processes)
travel with it as ``SCM_RIGHTS``. Both ends run the same code, so pickle is a
safe and cheap encoding here.
"""

from __future__ import annotations

import os
import pickle
import socket

MAX_MESSAGE = 1 << 20
MAX_FDS = 16


def make_pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_MESSAGE * 2)
    return a, b


def encode(obj: object) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def send(sock: socket.socket, obj: object, fds: list[int] | tuple[int, ...] = ()) -> None:
    data = encode(obj)
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.sendall(data)


def receive(sock: socket.socket) -> tuple[object, list[int]]:
    """One message and the descriptors that came with it; EOFError when the peer is gone."""
    data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
    if not data:
        for fd in fds:
            os.close(fd)
        raise EOFError("control channel closed")
    return pickle.loads(data), fds
