"""The tunnel's datagrams and control frames: what is delivered, and everything that must not be."""

from __future__ import annotations

import random

import pytest

from pytest_netplayground.core import tunnel_crypto as tc
from pytest_netplayground.core.tunnel_channels import (
    HEADER_SIZE,
    REPLAY_WINDOW,
    TAG_SIZE,
    ReplayWindow,
    datagram_session,
    inner_mtu,
)
from pytest_netplayground.errors import TunnelAuthError, TunnelError

KEY = bytes(range(32))


def session(plaintext: bool = False, key: bytes = KEY):
    s = tc.Handshake.supervisor(key, insecure_plaintext=plaintext)
    a = tc.Handshake.agent(key)
    s.receive(a.receive(s.receive(a.receive(s.initial()))))
    assert s.done and a.done
    return s.keys, a.keys


def ip_packet(size: int, seed: int = 0, version: int = 4) -> bytes:
    body = random.Random(seed).randbytes(size)
    return bytes([version << 4 | 5]) + body[1:]


@pytest.fixture(params=[False, True], ids=["sealed", "plaintext"])
def pair(request):
    s, a = session(request.param)
    return s.datagrams(), a.datagrams()


def test_round_trip_both_ways(pair):
    to_agent, from_supervisor = pair
    for size in (1, 20, 576, 1400, 9000, 65535):
        packet = ip_packet(size, size)
        datagram = to_agent.seal(packet)
        assert len(datagram) == size + to_agent.overhead == size + HEADER_SIZE + TAG_SIZE
        assert from_supervisor.open(datagram) == packet
        back = from_supervisor.seal(packet)
        assert to_agent.open(back) == packet
    assert not to_agent.dropped and not from_supervisor.dropped
    assert from_supervisor.delivered == 6


def test_sealed_datagrams_hide_the_packet_and_plaintext_shows_it():
    packet = ip_packet(200, 1)
    sealed = session(False)[0].datagrams().seal(packet)
    clear = session(True)[0].datagrams().seal(packet)
    assert packet not in sealed and packet[20:60] not in sealed
    assert clear[HEADER_SIZE : HEADER_SIZE + len(packet)] == packet
    assert clear[2:4] == b"\x08\x00"
    assert session(True)[0].datagrams().seal(ip_packet(60, 2, version=6))[2:4] == b"\x86\xdd"


def test_a_bit_flip_anywhere_is_dropped_and_counted(pair):
    sender, receiver = pair
    packet = ip_packet(64, 3)
    datagram = sender.seal(packet)
    for position in range(len(datagram)):
        for bit in (0x01, 0x80):
            forged = bytearray(datagram)
            forged[position] ^= bit
            assert receiver.open(bytes(forged)) is None, position
    assert sum(receiver.dropped.values()) == 2 * len(datagram)
    assert set(receiver.dropped) <= {"malformed", "session", "auth"}
    assert receiver.dropped["auth"] >= 2 * (len(datagram) - 16)
    assert receiver.delivered == 0
    # no forgery moved the replay window: the real one still gets through
    assert receiver.open(datagram) == packet


def test_replayed_is_dropped(pair):
    sender, receiver = pair
    first, second = sender.seal(ip_packet(40, 1)), sender.seal(ip_packet(40, 2))
    assert receiver.open(first) and receiver.open(second)
    assert receiver.open(first) is None and receiver.open(second) is None
    assert receiver.dropped == {"replayed": 2}


def test_reordered_within_the_window_is_delivered_once():
    sender, receiver = (side.datagrams() for side in session())
    datagrams = [sender.seal(ip_packet(40, i)) for i in range(3000)]
    order = list(range(3000))
    rng = random.Random(7)
    for start in range(0, 3000, 500):  # shuffled in blocks smaller than the window
        block = order[start : start + 500]
        rng.shuffle(block)
        order[start : start + 500] = block
    got = [receiver.open(datagrams[i]) for i in order]
    assert got == [ip_packet(40, i) for i in order]
    assert [receiver.open(datagrams[i]) for i in order[-100:]] == [None] * 100
    assert receiver.dropped == {"replayed": 100}


def test_too_old_is_dropped_at_the_window_edge():
    sender, receiver = (side.datagrams() for side in session())
    datagrams = [sender.seal(ip_packet(40, i)) for i in range(REPLAY_WINDOW + 2)]
    newest = REPLAY_WINDOW + 1
    assert receiver.open(datagrams[newest]) is not None
    assert receiver.open(datagrams[newest - (REPLAY_WINDOW - 1)]) is not None  # the oldest still in
    assert receiver.open(datagrams[newest - REPLAY_WINDOW]) is None
    assert receiver.open(datagrams[0]) is None
    assert receiver.dropped == {"too old": 2}


def test_other_session_and_reflection_are_dropped():
    s1, a1 = session()
    s2, _ = session()
    other = s2.datagrams().seal(ip_packet(40))
    assert a1.datagrams().open(other) is None
    own = s1.datagrams().seal(ip_packet(40))
    assert s1.datagrams().open(own) is None  # sent back to its sender
    assert a1.datagrams().dropped == {"session": 1}
    assert s1.datagrams().dropped == {"session": 1}
    assert datagram_session(own) == s1.session_ids[0] == a1.session_ids[1]


def test_same_ids_but_another_key_fails_authentication():
    s, a = session()
    forged = bytearray(s.datagrams().seal(ip_packet(40)))
    forged[HEADER_SIZE:] = random.Random(1).randbytes(len(forged) - HEADER_SIZE)
    assert a.datagrams().open(bytes(forged)) is None
    assert a.datagrams().dropped == {"auth": 1}


def test_plaintext_and_sealed_sessions_do_not_take_each_other():
    s, a = session(plaintext=True)
    sealed_lookalike = bytearray(s.datagrams().seal(ip_packet(40)))
    sealed_lookalike[2:4] = b"\x88\xb5"
    assert a.datagrams().open(bytes(sealed_lookalike)) is None
    assert a.datagrams().dropped == {"malformed": 1}


def test_every_truncation_is_dropped(pair):
    sender, receiver = pair
    datagram = sender.seal(ip_packet(100, 5))
    for end in range(len(datagram)):
        assert receiver.open(datagram[:end]) is None
    assert receiver.dropped["short"] == HEADER_SIZE + TAG_SIZE
    assert sum(receiver.dropped.values()) == len(datagram)
    assert receiver.open(datagram) is not None


def test_fuzzed_garbage_is_never_delivered(pair):
    sender, receiver = pair
    rng = random.Random(20261130)
    template = sender.seal(ip_packet(100))
    for i in range(4000):
        if i % 2:
            datagram = rng.randbytes(rng.randrange(0, 1600))
        else:  # a well-formed header of this session, so it gets as far as the cipher
            datagram = template[:16] + rng.randbytes(8 + rng.randrange(0, 1600))
        assert receiver.open(datagram) is None
    assert sum(receiver.dropped.values()) == 4000
    assert receiver.dropped["auth"] > 1500
    assert receiver.delivered == 0


def test_open_accepts_memoryview_and_bytearray():
    s, a = session()
    packet = ip_packet(30)
    assert a.datagrams().open(bytearray(s.datagrams().seal(packet))) == packet
    assert a.datagrams().open(memoryview(s.datagrams().seal(packet))) == packet


def test_counter_exhaustion_refuses_to_reuse_a_nonce():
    s, _ = session()
    channel = s.datagrams()
    channel.sent = (1 << 64) - 1
    channel.seal(ip_packet(20))
    with pytest.raises(TunnelError, match="2\\*\\*64"):
        channel.seal(ip_packet(20))


def test_replay_window_jump_far_ahead():
    window = ReplayWindow(size=8)
    for counter in (0, 1, 1 << 40, (1 << 40) - 7, (1 << 40) - 8):
        if window.check(counter) is None:
            window.accept(counter)
    assert window.highest == 1 << 40
    assert window.check(0) == "too old" and window.check((1 << 40) - 8) == "too old"
    assert window.check((1 << 40) - 7) == "replayed"
    assert window.check((1 << 40) - 1) is None
    assert len(window.seen) == 8
    with pytest.raises(ValueError):
        ReplayWindow(size=1000)


# -- control frames --------------------------------------------------------


@pytest.fixture(params=[False, True], ids=["sealed", "plaintext"])
def control(request):
    s, a = session(request.param)
    return s.control(), a.control()


def test_control_round_trip(control):
    out, back = control
    messages = [b"", b"spawn", bytes(range(256)) * 300]
    assert back.feed(b"".join(out.seal(m) for m in messages)) == messages
    assert out.feed(back.seal(b"exit 0")) == [b"exit 0"]
    assert back.buffered == 0


def test_control_split_at_every_byte_boundary(control):
    out, _ = control
    messages = [b"a", b"", b"hello world" * 5]
    stream = b"".join(out.seal(m) for m in messages)
    for cut in range(len(stream) + 1):
        s, a = session(out.insecure_plaintext)
        sender, receiver = s.control(), a.control()
        data = b"".join(sender.seal(m) for m in messages)
        assert receiver.feed(data[:cut]) + receiver.feed(data[cut:]) == messages
    s, a = session()
    data = b"".join(s.control().seal(m) for m in messages)
    got = []
    for i in range(len(data)):
        got += a.control().feed(data[i : i + 1])
    assert got == messages


def test_control_plaintext_is_readable_and_sealed_is_not():
    s, _ = session(plaintext=True)
    assert b"secret command" in s.control().seal(b"secret command")
    s, _ = session(plaintext=False)
    assert b"secret command" not in s.control().seal(b"secret command")


def test_control_bit_flip_anywhere_raises_and_stays_closed(control):
    out, _ = control
    frame = out.seal(b"kill 9")
    for position in range(len(frame)):
        s, a = session(out.insecure_plaintext)
        good = s.control().seal(b"kill 9")
        forged = bytearray(good)
        forged[position] ^= 0x01
        receiver = a.control()
        try:
            got = receiver.feed(bytes(forged))
        except TunnelAuthError:
            got = None
        if got == []:  # a length made larger: the frame is incomplete until more arrives
            assert position < 4
            missing = int.from_bytes(forged[:4], "big") + 4 - len(forged)
            assert receiver.feed(bytes(missing - 1)) == []
            with pytest.raises(TunnelAuthError):
                receiver.feed(b"\0")
        else:
            assert got is None, position
        with pytest.raises(TunnelAuthError):
            receiver.feed(s.control().seal(b"next"))


def test_control_replayed_dropped_or_reordered_frame_raises():
    s, a = session()
    first, second = s.control().seal(b"1"), s.control().seal(b"2")
    assert a.control().feed(first) == [b"1"]
    with pytest.raises(TunnelAuthError, match="frame 1"):
        a.control().feed(first)
    s, a = session()
    first, second = s.control().seal(b"1"), s.control().seal(b"2")
    with pytest.raises(TunnelAuthError):
        a.control().feed(second + first)


def test_control_frame_of_the_other_direction_raises():
    s, a = session()
    with pytest.raises(TunnelAuthError):
        s.control().feed(s.control().seal(b"echo"))


def test_control_absurd_length_raises_at_once():
    _, a = session()
    with pytest.raises(TunnelAuthError, match="announces"):
        a.control().feed(b"\xff\xff\xff\xff")
    _, a = session()
    with pytest.raises(TunnelAuthError, match="announces 3 bytes"):
        a.control().feed(b"\x00\x00\x00\x03abc")


def test_control_message_over_the_limit_is_refused_on_send():
    s, _ = session()
    with pytest.raises(TunnelError, match="over the limit"):
        s.control().seal(bytes((16 << 20) + 1))


@pytest.mark.parametrize("size", [1, 8, 1024])
def test_replay_window_agrees_with_a_plain_model(size):
    """Against the definition: accept a counter once, unless the highest accepted is size or more ahead."""
    rng = random.Random(size)
    window, accepted, highest = ReplayWindow(size=size), set(), -1
    for step in range(20000):
        kind = rng.random()
        if kind < 0.6:
            counter = highest + rng.choice([1, 1, 1, 2, 3, size - 1, size, size + 1, 5 * size])
        else:
            counter = max(0, highest - rng.randrange(0, 2 * size + 2))
        expected = (
            None if counter > highest else "too old" if highest - counter >= size
            else "replayed" if counter in accepted else None
        )
        assert window.check(counter) == expected, (step, counter, highest)
        if expected is None and rng.random() < 0.9:  # sometimes it fails authentication
            window.accept(counter)
            accepted.add(counter)
            highest = max(highest, counter)


def test_inner_mtu_fills_the_path_exactly():
    s, _ = session()
    for path_mtu, ipv6, outer in ((1500, False, 20 + 8), (1500, True, 40 + 8), (9000, False, 20 + 8)):
        size = inner_mtu(path_mtu, ipv6=ipv6)
        assert outer + len(s.datagrams().seal(ip_packet(size))) == path_mtu
    assert inner_mtu(1500) == 1432 and inner_mtu(1500, ipv6=True) == 1412



def test_control_fuzzed_garbage_only_ever_raises_auth_errors():
    rng = random.Random(5)
    for trial in range(2000):
        _, a = session(trial % 2 == 1)
        receiver = a.control()
        data = rng.randbytes(rng.randrange(1, 64))
        if trial % 3 == 0:  # a plausible length, so it gets as far as the tag
            data = (len(data) + 16).to_bytes(4, "big") + data + rng.randbytes(16)
        try:
            got = receiver.feed(data)
        except TunnelAuthError:
            continue
        assert got == []  # nothing delivered: at most an incomplete frame
        assert receiver.buffered == len(data)
