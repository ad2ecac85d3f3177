"""The supervisor's end of one agent's tunnel: remote hosts' packets in and out of sealed datagrams.

The router writes a packet for a remote host to one end of a socketpair, as
if it were the host's TUN; this reads the other end, seals the packet and
sends it to the agent in one UDP datagram. On its busiest path (the proxy's
packets to a remote host) the router hands the packet to :meth:`send_packet`
instead, saving the socketpair's two system calls; what the handlers of one
loop round queued leaves in runs (:class:`BatchSender`) when the round ends. Datagrams from the agent are
opened and written back the other way, so the router reads them as it reads a
local host's TUN. A datagram that fails to open, or carries a packet from an
address that is not one of this agent's hosts, is dropped and counted.
"""

from __future__ import annotations

import os
import select
import socket

from .loop import Loop
from .udp_batch import BatchReceiver, BatchSender

#: Bytes of kernel buffer for the tunnel's sockets: bursts at the tunnel's MTU without loss.
BUFFER = 4 << 20


class TunnelEnds:
    """The UDP socket to one agent, and a socketpair per remote host of it (by address)."""

    def __init__(self, host: str, port: int, ipv6: bool, datagrams) -> None:
        self.datagrams = datagrams
        self.udp = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.connect((host, port))
        self.udp.setblocking(False)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            self.udp.setsockopt(socket.SOL_SOCKET, option, BUFFER)
        self.receiver = BatchReceiver(self.udp)
        self.batch = BatchSender(self.udp, datagrams.dropped)
        self.pumps: dict[bytes, int] = {}
        self.loop: Loop | None = None

    @property
    def port(self) -> int:
        return self.udp.getsockname()[1]

    def attach(self, loop: Loop) -> None:
        self.loop = loop
        loop.watch(self.udp.fileno(), select.EPOLLIN, self._udp_readable)
        loop.after.append(self.batch.flush)

    def send_packet(self, packet) -> None:
        """Seal a remote host's packet and queue it; it leaves when the loop's round ends."""
        self.batch.add(self.datagrams.seal(packet))

    def add(self, address: str, address6: str | None) -> int:
        """A remote host's end for the router: the descriptor it uses as the host's TUN."""
        ours, router_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for end in (ours, router_end):
            end.setblocking(False)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
        fd = ours.detach()
        self.pumps[socket.inet_aton(address)] = fd
        if address6:
            self.pumps[socket.inet_pton(socket.AF_INET6, address6)] = fd
        self.loop.watch(fd, select.EPOLLIN, self._pump_out(fd))
        return router_end.detach()

    def close(self) -> None:
        if self.udp.fileno() < 0:
            return
        if self.loop is not None:
            self.loop.unwatch(self.udp.fileno())
            if self.batch.flush in self.loop.after:
                self.loop.after.remove(self.batch.flush)
            for fd in set(self.pumps.values()):
                self.loop.unwatch(fd)
        self.udp.close()
        for fd in set(self.pumps.values()):
            os.close(fd)
        self.pumps.clear()

    def _pump_out(self, fd: int):
        buf = bytearray(65536)
        view = memoryview(buf)
        readv, seal = os.readv, self.datagrams.seal
        batch = self.batch
        add = batch.add

        def readable(events: int) -> None:
            try:
                for _ in range(64):
                    n = readv(fd, [buf])
                    add(seal(view[:n]))
            except BlockingIOError:
                pass
            batch.flush()

        return readable

    def _udp_readable(self, events: int) -> None:
        open_, receive, pumps, write = self.datagrams.open, self.receiver.receive, self.pumps, os.write
        dropped = self.datagrams.dropped
        for _ in range(64):
            try:
                datagrams = receive()
            except BlockingIOError:
                return
            except OSError:
                dropped["receive failed"] += 1
                return
            for data in datagrams:
                packet = open_(data)
                if packet is None:
                    continue
                version = packet[0] >> 4 if packet else 0
                src = packet[12:16] if version == 4 else packet[8:24] if version == 6 else b""
                fd = pumps.get(bytes(src))
                if fd is None:
                    dropped["not from a host of this agent"] += 1
                    continue
                try:
                    write(fd, packet)
                except OSError:
                    dropped["write failed"] += 1
