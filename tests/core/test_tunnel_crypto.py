"""The tunnel's key handling and handshake, without sockets."""

from __future__ import annotations

import pickle

import pytest

from pytest_netplayground.core import tunnel_crypto as tc
from pytest_netplayground.errors import (
    NetplayError,
    TunnelKeyError,
    TunnelKeyMismatch,
    TunnelProtocolError,
)


def key(n: int) -> bytes:
    return bytes([n]) * 32


def run_handshake(supervisor: tc.Handshake, agent: tc.Handshake, chunk: int | None = None):
    """Shuttle bytes between the two sides until neither has anything to say; returns the transcript."""
    transcript = []
    to_agent = supervisor.initial()
    while to_agent:
        transcript.append(("s", to_agent))
        to_supervisor = feed(agent, to_agent, chunk)
        if not to_supervisor:
            break
        transcript.append(("a", to_supervisor))
        to_agent = feed(supervisor, to_supervisor, chunk)
    return transcript


def feed(side: tc.Handshake, data: bytes, chunk: int | None) -> bytes:
    if chunk is None:
        return side.receive(data)
    out = b""
    for i in range(0, len(data), chunk):
        out += side.receive(data[i : i + chunk])
    return out


def test_key_text_round_trip_and_is_fresh():
    a, b = tc.make_key_text(), tc.make_key_text()
    assert a != b
    assert a.startswith(b"#")
    assert len(tc.parse_key(a, "k")) == tc.KEY_SIZE
    assert tc.parse_key(b"\n  " + b"ab" * 32 + b"  \n# note\n", "k") == bytes([0xAB]) * 32


@pytest.mark.parametrize(
    "text", [b"", b"# only a comment\n", b"ab" * 31, b"ab" * 33, b"zz" * 32, b"ab" * 16 + b" " + b"ab" * 16 + b"x"]
)
def test_bad_key_text_names_the_file_and_the_fix(text):
    with pytest.raises(TunnelKeyError) as info:
        tc.parse_key(text, "/etc/k.key")
    message = str(info.value)
    assert "/etc/k.key" in message and "--make-key" in message
    assert isinstance(info.value, NetplayError)


def test_key_error_never_quotes_the_contents():
    secret = b"cd" * 31 + b"qq"  # a near-miss key must not end up in a log
    with pytest.raises(TunnelKeyError) as info:
        tc.parse_key(secret, "k")
    assert "cdcd" not in str(info.value)


def test_handshake_gives_both_sides_matching_keys():
    s, a = tc.Handshake.supervisor(key(1)), tc.Handshake.agent(key(1))
    transcript = run_handshake(s, a)
    assert [who for who, _ in transcript] == ["s", "a", "s", "a"]
    assert s.done and a.done and s.rest == b"" and a.rest == b""
    assert s.keys.session_ids == a.keys.session_ids[::-1]
    assert s.keys.session_ids[0] != s.keys.session_ids[1]
    assert not s.keys.insecure_plaintext and not a.keys.insecure_plaintext


def test_each_session_has_its_own_ids():
    ids = set()
    for _ in range(5):
        s, a = tc.Handshake.supervisor(key(1)), tc.Handshake.agent(key(1))
        run_handshake(s, a)
        ids.update(s.keys.session_ids)
    assert len(ids) == 10


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 41])
def test_handshake_survives_any_split(chunk):
    s, a = tc.Handshake.supervisor(key(1)), tc.Handshake.agent(key(1))
    run_handshake(s, a, chunk)
    assert s.done and a.done
    assert s.keys.session_ids == a.keys.session_ids[::-1]


def test_bytes_after_the_handshake_are_kept_as_rest():
    s, a = tc.Handshake.supervisor(key(1)), tc.Handshake.agent(key(1))
    m2 = a.receive(s.initial())
    m3 = s.receive(m2)
    ok = a.receive(m3 + b"early")
    assert a.done and a.rest == b"early"
    frame = a.keys.control().seal(b"first")
    assert s.receive(ok + frame) == b""
    assert s.done and s.rest == frame
    assert s.keys.control().feed(s.rest) == [b"first"]


def test_channels_are_made_once_per_session():
    s, a = tc.Handshake.supervisor(key(1)), tc.Handshake.agent(key(1))
    run_handshake(s, a)
    assert s.keys.control() is s.keys.control()
    assert s.keys.datagrams() is s.keys.datagrams()


@pytest.mark.parametrize("plaintext", [False, True])
def test_wrong_key_is_one_clear_error_on_both_ends(plaintext):
    s = tc.Handshake.supervisor(key(1), insecure_plaintext=plaintext, peer="b=192.0.2.2:50000")
    a = tc.Handshake.agent(key(2), peer="192.0.2.1:40000")
    m2 = a.receive(s.initial())
    with pytest.raises(TunnelKeyMismatch) as on_supervisor:
        s.receive(m2)
    assert "b=192.0.2.2:50000" in str(on_supervisor.value)
    assert "different tunnel key" in str(on_supervisor.value)
    with pytest.raises(TunnelKeyMismatch) as on_agent:
        a.receive(on_supervisor.value.reply)
    assert "supervisor 192.0.2.1:40000" in str(on_agent.value)
    assert not s.done and not a.done and s.keys is None and a.keys is None
    with pytest.raises(TunnelKeyMismatch):  # it stays failed
        s.receive(b"")


def test_agent_finding_a_wrong_supervisor_proof_rejects_and_supervisor_says_so():
    s, a = tc.Handshake.supervisor(key(1)), tc.Handshake.agent(key(1))
    m2 = a.receive(s.initial())
    m3 = bytearray(s.receive(m2))
    m3[-1] ^= 1  # a proof made with another key, as far as the agent can tell
    with pytest.raises(TunnelKeyMismatch) as on_agent:
        a.receive(bytes(m3))
    assert "a supervisor tried to connect with a different tunnel key" in str(on_agent.value)
    with pytest.raises(TunnelKeyMismatch) as on_supervisor:
        s.receive(on_agent.value.reply)
    assert "agent holds a different tunnel key" in str(on_supervisor.value)


def test_agent_seeing_the_stream_end_after_its_proof_suspects_the_key():
    s, a = tc.Handshake.supervisor(key(1)), tc.Handshake.agent(key(2))
    a.receive(s.initial())
    with pytest.raises(TunnelProtocolError, match="another key"):
        a.eof()


@pytest.mark.parametrize(
    "garbage",
    [b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x02\x00", b"N", b"NPTUNNEX", b"NPTUNNEL\x01\x09"],
)
def test_garbage_is_a_protocol_error_for_the_agent(garbage):
    a = tc.Handshake.agent(key(1))
    with pytest.raises(TunnelProtocolError) as info:
        a.receive(garbage)
        a.eof()  # a prefix of the magic: only the end of the stream shows it was garbage
    assert "does not speak the netplay tunnel protocol" in str(info.value) or "closed" in str(info.value)


def test_garbage_is_a_protocol_error_for_the_supervisor():
    s = tc.Handshake.supervisor(key(1))
    s.initial()
    with pytest.raises(TunnelProtocolError, match="does not speak"):
        s.receive(b"SSH-2.0-OpenSSH_9.2\r\n")


def test_another_version_is_named_on_both_ends():
    s, a = tc.Handshake.supervisor(key(1)), tc.Handshake.agent(key(1))
    hello = bytearray(s.initial())
    hello[len(tc.MAGIC)] = 7
    with pytest.raises(TunnelProtocolError, match="version 7") as on_agent:
        a.receive(bytes(hello))
    with pytest.raises(TunnelProtocolError, match="version 1, this side") as on_supervisor:
        s.receive(on_agent.value.reply)
    assert on_supervisor.value.reply == b""


def test_a_message_out_of_turn_is_a_protocol_error():
    s, a = tc.Handshake.supervisor(key(1)), tc.Handshake.agent(key(1))
    hello = s.initial()
    with pytest.raises(TunnelProtocolError, match="HELLO where AGENT_HELLO"):
        s.receive(hello)  # its own hello reflected back
    with pytest.raises(TunnelProtocolError, match="OK where HELLO"):
        a.receive(tc.MAGIC + bytes([1, tc.OK]))


def test_agent_may_refuse_plaintext():
    s = tc.Handshake.supervisor(key(1), insecure_plaintext=True)
    a = tc.Handshake.agent(key(1), allow_insecure_plaintext=False)
    with pytest.raises(TunnelProtocolError, match="refuses") as on_agent:
        a.receive(s.initial())
    with pytest.raises(TunnelProtocolError, match="refuses --insecure-plaintext"):
        s.receive(on_agent.value.reply)


def test_flipping_the_plaintext_flag_in_flight_fails_the_proofs():
    s = tc.Handshake.supervisor(key(1), insecure_plaintext=False)
    a = tc.Handshake.agent(key(1))
    hello = bytearray(s.initial())
    hello[len(tc.MAGIC) + 2] |= tc.FLAG_PLAINTEXT
    m2 = bytearray(a.receive(bytes(hello)))
    m2[len(tc.MAGIC) + 2] &= ~tc.FLAG_PLAINTEXT  # hide it from the supervisor too
    with pytest.raises(TunnelKeyMismatch):
        s.receive(bytes(m2))


def test_a_reflected_agent_proof_does_not_pass_as_the_supervisor_proof():
    s, a = tc.Handshake.supervisor(key(1)), tc.Handshake.agent(key(1))
    m2 = a.receive(s.initial())
    fake = tc.MAGIC + bytes([1, tc.PROOF]) + m2[-32:]
    with pytest.raises(TunnelKeyMismatch):
        a.receive(fake)


def test_wrong_key_size_is_refused():
    with pytest.raises(TunnelKeyError):
        tc.Handshake.supervisor(b"short")


def test_tunnel_errors_keep_their_reply_across_pickle():
    error = TunnelKeyMismatch("keys differ", reply=b"reject")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is TunnelKeyMismatch and copy.reply == b"reject" and str(copy) == "keys differ"


def test_session_from_transcript_matches_the_live_keys():
    s, a = tc.Handshake.supervisor(key(3)), tc.Handshake.agent(key(3))
    transcript = run_handshake(s, a)
    hello, agent_hello = transcript[0][1], transcript[1][1]
    seen = tc.session_from_transcript(key(3), hello, agent_hello, "agent")
    packet = s.keys.datagrams().seal(b"\x45" + bytes(39))
    assert seen.datagrams().open(packet) == b"\x45" + bytes(39)
    with pytest.raises(TunnelKeyMismatch):
        tc.session_from_transcript(key(4), hello, agent_hello, "agent")
    with pytest.raises(TunnelProtocolError):
        tc.session_from_transcript(key(3), agent_hello, hello, "agent")


def _tampered_run(message_index: int, position: int, bit: int):
    """A handshake where one bit of one message is flipped in flight; what each side ended with."""
    s, a = tc.Handshake.supervisor(key(1)), tc.Handshake.agent(key(1))
    sides = [a, s]  # who receives message 0, 1, 2, 3
    data, index, errors = s.initial(), 0, []
    while data:
        receiver = sides[index % 2]
        if index == message_index:
            data = bytearray(data)
            data[position] ^= bit
            data = bytes(data)
        try:
            data = receiver.receive(data)
        except TunnelProtocolError as exc:
            errors.append(exc)
            data = exc.reply  # the other side reads the rejection, as on a real stream
            if data:
                try:
                    sides[(index + 1) % 2].receive(data)
                except (TunnelProtocolError, TunnelKeyMismatch) as other:
                    errors.append(other)
            break
        except TunnelKeyMismatch as exc:
            errors.append(exc)
            if exc.reply:
                try:
                    sides[(index + 1) % 2].receive(exc.reply)
                except (TunnelProtocolError, TunnelKeyMismatch) as other:
                    errors.append(other)
            break
        index += 1
    for side in (s, a):
        if not errors and not side.done:  # waiting for bytes that never come: the stream ends
            try:
                side.eof()
            except TunnelProtocolError as exc:
                errors.append(exc)
    return s, a, errors


def test_a_bit_flipped_anywhere_in_the_handshake_fails_it():
    s, a = tc.Handshake.supervisor(key(1)), tc.Handshake.agent(key(1))
    sizes = [len(m) for _, m in run_handshake(s, a)]
    assert sizes == [43, 75, 42, 10]
    for message_index, size in enumerate(sizes):
        for position in range(size):
            for bit in (0x01, 0x80):
                s, a, errors = _tampered_run(message_index, position, bit)
                assert errors, (message_index, position)
                assert not s.done, (message_index, position)
                # an agent that sent OK cannot learn that the OK was damaged; its keys are right, but the
                # supervisor never uses them, so the session never starts
                if a.done:
                    assert message_index == 3
                assert all(isinstance(e, (TunnelProtocolError, TunnelKeyMismatch)) for e in errors)


def test_fuzzed_bytes_to_either_side_only_ever_raise_tunnel_errors():
    import random

    rng = random.Random(17)
    for trial in range(3000):
        side = tc.Handshake.agent(key(1)) if trial % 2 else tc.Handshake.supervisor(key(1))
        side.initial()
        prefix = tc.MAGIC + bytes([1, rng.choice([1, 2, 3, 4, 5, 9])]) if trial % 3 == 0 else b""
        data = prefix + rng.randbytes(rng.randrange(0, 120))
        try:
            side.receive(data)
            side.eof()
        except (TunnelProtocolError, TunnelKeyMismatch):
            pass
        assert not side.done
