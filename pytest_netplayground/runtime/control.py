"""The control channel between the caller and its sandbox's supervisor.

A ``SOCK_SEQPACKET`` socketpair: every message is one pickled object, and
file descriptors (sockets made inside a host, the pipes of spawned processes)
travel with it as ``SCM_RIGHTS``. Both ends run the same code, so pickle is a
safe and cheap encoding here.

A request is ``(request_id, op, args)`` with ``args`` a dict; the supervisor
turns it into one of the request values below (:func:`parse`) before acting.

Large messages go in pieces (a replay's divergence report can run to
megabytes, more than the kernel lets one packet hold): each packet starts
with one byte saying whether more of its message follow.
"""

from __future__ import annotations

import enum
import os
import pickle
import socket
from signal import SIGTERM
from typing import ClassVar, Union

import attrs

from ..core import defaults
from ..errors import SandboxError
from .drive_request import DRIVE_REQUESTS
from .fault_control import FAULT_REQUESTS
from .shadow_control import SHADOW_REQUESTS

MAX_MESSAGE = 1 << 20
MAX_FDS = 16
# Well under the smallest send buffer a socket gets (net.core.wmem_max caps it).
PIECE = 64 * 1024
# Seconds between the kill signal and SIGKILL when the caller does not say.
DEFAULT_GRACE = defaults.GRACE
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


class StdioMode(str, enum.Enum):
    """How a spawned process's stdin, stdout or stderr is connected (the values go on the wire)."""

    FD = "fd"  # a descriptor that came with the request
    PIPE = "pipe"  # a new pipe, whose other end goes back to the caller
    DEVNULL = "devnull"
    STDOUT = "stdout"  # stderr only: where stdout goes
    INHERIT = "inherit"  # the supervisor's own (``None`` on the wire)

    @classmethod
    def of(cls, value: object) -> "StdioMode":
        return cls.INHERIT if value is None else cls(value)


def _stdio(value: object) -> tuple[StdioMode, ...]:
    modes = tuple(StdioMode.of(mode) for mode in value)  # type: ignore[attr-defined]
    if len(modes) != 3:
        raise ValueError(f"stdio takes three modes (stdin, stdout, stderr), got {len(modes)}")
    return modes


_int = attrs.validators.instance_of(int)
_name = attrs.validators.optional(attrs.validators.instance_of((str, int)))


@attrs.frozen
class AddHost:
    op: ClassVar[str] = "add_host"
    name: str | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.instance_of(str)))
    # The agent whose machine the host lives on (None: this machine).
    on: str | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.instance_of(str)))


@attrs.frozen
class Spawn:
    """Start ``argv`` in host ``host``; ``fds`` are the descriptors the ``fd`` modes of ``stdio`` use, in order."""

    op: ClassVar[str] = "spawn"
    host: int = attrs.field(validator=_int)
    argv: tuple[str, ...] = attrs.field(converter=tuple)
    env: dict[str, str] = attrs.field(validator=attrs.validators.instance_of(dict))
    cwd: str = attrs.field(validator=attrs.validators.instance_of(str))
    stdio: tuple[StdioMode, ...] = attrs.field(converter=_stdio)
    user: str | int | None = attrs.field(default=None, validator=_name)
    group: str | int | None = attrs.field(default=None, validator=_name)
    fds: tuple[int, ...] = attrs.field(default=(), converter=tuple)

    def __attrs_post_init__(self) -> None:
        if not self.argv:
            raise ValueError("argv is empty")
        wanted = sum(mode is StdioMode.FD for mode in self.stdio)
        if wanted != len(self.fds):
            raise ValueError(f"{wanted} stdio modes take a descriptor, but {len(self.fds)} came")


@attrs.frozen
class MakeSocket:
    op: ClassVar[str] = "socket"
    host: int = attrs.field(validator=_int)
    family: int = attrs.field(validator=_int)
    type: int = attrs.field(validator=_int)


@attrs.frozen
class Listening:
    op: ClassVar[str] = "listening"
    host: int = attrs.field(validator=_int)
    port: int = attrs.field(validator=_int)


@attrs.frozen
class Signal:
    """Send ``signal`` to process ``pid`` (its process group with ``group``)."""

    op: ClassVar[str] = "signal"
    pid: int = attrs.field(validator=_int)
    signal: int = attrs.field(validator=_int)
    group: bool = attrs.field(default=False, converter=bool)


@attrs.frozen
class Namespaces:
    op: ClassVar[str] = "namespaces"


@attrs.frozen
class Stats:
    op: ClassVar[str] = "stats"


@attrs.frozen
class Close:
    """Stop the processes (``signal``, then SIGKILL after ``grace`` seconds) and end the sandbox;
    ``cassette`` says what becomes of a recording (see ``Sandbox.close``)."""

    op: ClassVar[str] = "close"
    signal: int = attrs.field(default=SIGTERM, validator=_int)
    grace: float = attrs.field(default=DEFAULT_GRACE, converter=float)
    cassette: object = "abort"


Request = Union[AddHost, Spawn, MakeSocket, Listening, Signal, Namespaces, Stats, Close]
REQUESTS: dict[str, type] = {
    kind.op: kind for kind in (AddHost, Spawn, MakeSocket, Listening, Signal, Namespaces, Stats, Close)
}
REQUESTS.update(FAULT_REQUESTS)
REQUESTS.update(DRIVE_REQUESTS)
REQUESTS.update(SHADOW_REQUESTS)


def parse(op: str, args: dict, fds: list[int]) -> Request:
    """The request value for ``op`` with ``args`` (keys it does not know are ignored) and the
    descriptors that came with it; a :class:`SandboxError` naming what is wrong otherwise."""
    kind = REQUESTS.get(op)
    if kind is None:
        raise SandboxError(f"unknown supervisor request {op!r}")
    names = {field.name for field in attrs.fields(kind)}
    values = {key: value for key, value in args.items() if key in names and key != "fds"}
    if "fds" in names:
        values["fds"] = fds
    try:
        return kind(**values)
    except (TypeError, ValueError) as exc:
        raise SandboxError(f"bad {op!r} request to the supervisor: {exc}") from exc
