"""Tunnel datagrams out in batches: one system call for a run of equal-sized datagrams.

A TCP stream through the tunnel is a train of full-sized segments, each sealed
into a datagram of the same size. Linux's UDP segmentation offload
(``UDP_SEGMENT``, Linux 4.18+) takes such a run in one ``sendmsg`` and cuts it
into the same separate datagrams on the wire (the last one may be shorter), so
the wire format is unchanged and the path MTU still holds per datagram; the
kernel walks its send path once per run instead of once per packet. A kernel or
device that refuses it turns it off for the sender, which then sends one by one.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys

SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
UDP_GRO = getattr(socket, "UDP_GRO", 104)
#: The kernel's limit of segments in one send (UDP_MAX_SEGMENTS).
MAX_SEGMENTS = 64
#: Bytes of payload in one send: the IP length field's limit, with room for the headers.
MAX_BYTES = 65000
#: What a kernel or device without the offload answers.
_UNOFFERED = {errno.EIO, errno.EINVAL, errno.EMSGSIZE, errno.ENOPROTOOPT, errno.EOPNOTSUPP}
_SIZE = struct.Struct("=H")
_ANCILLARY = socket.CMSG_SPACE(4)


class BatchSender:
    """Collects sealed datagrams with :meth:`add` and sends them by runs of one size; call
    :meth:`flush` when the batch ends (a readiness callback drained its source).

    ``address`` is None for a connected socket. A datagram that cannot be sent
    (buffer full, network down) is counted in ``dropped["send failed"]``, as before
    batching: UDP may lose it, TCP inside sends it again.
    """

    def __init__(self, sock: socket.socket, dropped, address: tuple | None = None) -> None:
        self.sock = sock
        self.dropped = dropped
        self.address = address
        self.offload = True
        self.run: list = []
        self.size = 0
        self.total = 0

    def add(self, datagram: bytes) -> None:
        n = len(datagram)
        run = self.run
        if run and (n > self.size or len(run) >= MAX_SEGMENTS or self.total + n > MAX_BYTES):
            self.flush()
            run = self.run
        if not run:
            self.size = n
        run.append(datagram)
        self.total += n
        if n < self.size:  # a shorter datagram can only end a run
            self.flush()

    def flush(self) -> None:
        run = self.run
        if not run:
            return
        self.run = []
        self.total = 0
        if len(run) > 1 and self.offload:
            cmsg = [(SOL_UDP, UDP_SEGMENT, _SIZE.pack(self.size))]
            try:
                if self.address is None:
                    self.sock.sendmsg(run, cmsg)
                else:
                    self.sock.sendmsg(run, cmsg, 0, self.address)
                return
            except OSError as exc:
                if exc.errno not in _UNOFFERED:
                    self.dropped["send failed"] += len(run)
                    return
                self.offload = False  # not offered here (old kernel, device): one by one from now on
        for datagram in run:
            self._send_one(datagram)

    def _send_one(self, datagram: bytes) -> None:
        try:
            if self.address is None:
                self.sock.send(datagram)
            else:
                self.sock.sendto(datagram, self.address)
        except OSError:
            self.dropped["send failed"] += 1


class BatchReceiver:
    """Reads tunnel datagrams from a UDP socket, asking the kernel to hand a run that came in
    as one (from a :class:`BatchSender`, ``UDP_GRO``) up in one read: :meth:`receive` splits it
    back into the datagrams that were sent. Without the option it reads one datagram a call."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray(70000)
        self.view = memoryview(self.buffer)
        try:
            sock.setsockopt(SOL_UDP, UDP_GRO, 1)
            self.coalesce = True
        except OSError:
            self.coalesce = False

    def receive(self) -> list:
        """The datagrams of one read (views into a buffer reused by the next call); raises
        BlockingIOError when there is nothing to read."""
        if not self.coalesce:
            n = self.sock.recv_into(self.buffer)
            return [self.view[:n]]
        n, ancdata, _, _ = self.sock.recvmsg_into([self.buffer], _ANCILLARY)
        size = n
        for level, kind, data in ancdata:
            if level == SOL_UDP and kind == UDP_GRO and len(data) >= 4:
                size = int.from_bytes(data[:4], sys.byteorder) or n
        view = self.view
        if size >= n:
            return [view[:n]]
        return [view[start : min(start + size, n)] for start in range(0, n, size)]
