"""Tunnel datagrams sent in runs and read back in runs: the same datagrams, in order, come out."""

from __future__ import annotations

import collections
import errno
import os
import select
import socket

import pytest

from pytest_netplayground.runtime.udp_batch import MAX_SEGMENTS, BatchReceiver, BatchSender


@pytest.fixture
def pair():
    """A receiving socket and a sender connected to it, both on loopback."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    receiver.setblocking(False)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.connect(receiver.getsockname())
    yield sender, receiver
    sender.close()
    receiver.close()


def _read_all(
    receiver: socket.socket, batch: BatchReceiver | None, expected: int, reads: list | None = None
) -> list[bytes]:
    got: list[bytes] = []
    while len(got) < expected:
        if reads is not None:
            reads.append(1)
        assert select.select([receiver], [], [], 5.0)[0], f"only {len(got)} of {expected} datagrams arrived"
        try:
            if batch is None:
                got.append(receiver.recv(70000))
            else:
                got.extend(bytes(view) for view in batch.receive())
        except BlockingIOError:
            continue
    return got


def _datagrams() -> list[bytes]:
    """Runs of one size, a shorter one ending a run, a longer one starting the next, a lone one."""
    sizes = [1400] * 70 + [600] + [1400] * 3 + [1472] * 5 + [900] + [40, 40]
    return [bytes([i % 251]) * 4 + os.urandom(size - 4) for i, size in enumerate(sizes)]


def test_each_datagram_arrives_whole_and_in_order_to_a_plain_reader(pair):
    sender, receiver = pair
    dropped = collections.Counter()
    batch = BatchSender(sender, dropped)
    sent = _datagrams()
    for datagram in sent:
        batch.add(datagram)
    batch.flush()
    assert _read_all(receiver, None, len(sent)) == sent
    assert not dropped


def test_the_batch_reader_splits_runs_back_into_the_datagrams_sent(pair):
    sender, receiver = pair
    reader = BatchReceiver(receiver)
    batch = BatchSender(sender, collections.Counter())
    sent = _datagrams()
    for datagram in sent:
        batch.add(datagram)
    batch.flush()
    reads: list = []
    assert _read_all(receiver, reader, len(sent), reads) == sent
    if reader.coalesce and batch.offload:
        assert len(reads) < len(sent), "no run came up in one read"


def test_a_run_is_cut_at_the_kernels_segment_limit(pair):
    sender, receiver = pair
    batch = BatchSender(sender, collections.Counter())
    for i in range(MAX_SEGMENTS + 1):
        batch.add(bytes([i]) * 100)
    assert len(batch.run) == 1, "the run was not sent when it reached the segment limit"
    batch.flush()
    assert [d[0] for d in _read_all(receiver, None, MAX_SEGMENTS + 1)] == list(range(MAX_SEGMENTS + 1))


def test_without_the_offload_it_sends_one_by_one(pair):
    sender, receiver = pair
    batch = BatchSender(sender, collections.Counter())
    batch.offload = False
    sent = [bytes([i]) * 500 for i in range(10)]
    for datagram in sent:
        batch.add(datagram)
    batch.flush()
    assert _read_all(receiver, BatchReceiver(receiver), len(sent)) == sent


def test_an_unconnected_sender_sends_to_its_address(pair):
    _, receiver = pair
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        batch = BatchSender(sock, collections.Counter(), receiver.getsockname())
        sent = [b"x" * 1000] * 5 + [b"y" * 10]
        for datagram in sent:
            batch.add(datagram)
        batch.flush()
        assert _read_all(receiver, None, len(sent)) == sent
    finally:
        sock.close()


class _NoLargeSegments:
    """A connected UDP socket whose kernel refuses segmentation of datagrams over the path's MTU
    (a tunnel MTU above it), as Linux does with EMSGSIZE; single datagrams it fragments and sends."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendmsg(self, buffers, ancillary, *rest):
        raise OSError(errno.EMSGSIZE, "Message too long")

    def send(self, datagram) -> int:
        self.sent.append(bytes(datagram))
        return len(datagram)


def test_a_run_the_kernel_will_not_segment_is_sent_datagram_by_datagram_and_none_is_lost():
    sock, dropped = _NoLargeSegments(), collections.Counter()
    batch = BatchSender(sock, dropped)
    sent = [os.urandom(8960) for _ in range(5)] + [os.urandom(8960) for _ in range(3)]
    for datagram in sent[:5]:
        batch.add(datagram)
    batch.flush()
    for datagram in sent[5:]:
        batch.add(datagram)
    batch.flush()
    assert sock.sent == sent
    assert not dropped and batch.offload is False
