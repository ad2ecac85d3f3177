"""TLS recognition: real ClientHellos from Python's ssl module, split every way; junk never raises."""

from __future__ import annotations

import ssl
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_netplayground.core.tls_hello import (
    NEED_MORE,
    NOT_TLS,
    PG_SSL_REQUEST,
    Alert,
    ClientHello,
    Upgrade,
    parse_alert,
    parse_client_hello,
    parse_upgrade_request,
    upgrade_accepted,
)


def client_hello(server_hostname: str | None, alpn=(), maximum=ssl.TLSVersion.TLSv1_3) -> bytes:
    """The bytes a Python TLS client sends first, made in memory (no socket)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = maximum
    if alpn:
        context.set_alpn_protocols(list(alpn))
    outgoing = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def refragment(hello: bytes, sizes: list[int]) -> bytes:
    """The same handshake message carried in several records of the given sizes."""
    body = hello[5:]
    records = b""
    while body:
        size = sizes.pop(0) if sizes else len(body)
        size = max(1, min(size, len(body)))
        records += bytes([0x16, 3, 1]) + struct.pack("!H", size) + body[:size]
        body = body[size:]
    return records


HELLO = client_hello("api.example.test", alpn=("h2", "http/1.1"))


def test_sni_alpn_and_versions_from_a_real_client_hello():
    parsed = parse_client_hello(HELLO)
    assert parsed == ClientHello(
        server_name="api.example.test",
        alpn=("h2", "http/1.1"),
        versions=((3, 4), (3, 3)),
        length=len(HELLO),
    )


def test_a_tls12_client_without_alpn():
    hello = client_hello("db.internal", maximum=ssl.TLSVersion.TLSv1_2)
    parsed = parse_client_hello(hello)
    assert isinstance(parsed, ClientHello)
    assert (parsed.server_name, parsed.alpn) == ("db.internal", ())
    assert parsed.versions[0] == (3, 3)


def test_an_ip_address_sends_no_sni():
    parsed = parse_client_hello(client_hello("10.0.0.1", alpn=("postgresql",)))
    assert isinstance(parsed, ClientHello)
    assert parsed.server_name is None and parsed.alpn == ("postgresql",)


def test_every_proper_prefix_needs_more_and_the_whole_is_a_hello():
    for cut in range(len(HELLO)):
        assert parse_client_hello(HELLO[:cut]) is NEED_MORE, cut
    assert isinstance(parse_client_hello(HELLO), ClientHello)


def test_bytes_after_the_hello_do_not_matter():
    parsed = parse_client_hello(HELLO + b"\x17\x03\x03junk")
    assert isinstance(parsed, ClientHello) and parsed.length == len(HELLO)


@given(st.lists(st.integers(min_value=1, max_value=300), max_size=40))
@settings(max_examples=60, deadline=None)
def test_a_hello_split_over_records_parses_the_same(sizes):
    records = refragment(HELLO, list(sizes))
    parsed = parse_client_hello(records)
    assert isinstance(parsed, ClientHello)
    assert (parsed.server_name, parsed.alpn, parsed.length) == (
        "api.example.test",
        ("h2", "http/1.1"),
        len(records),
    )
    # And a prefix of the records is never taken for a whole hello.
    assert parse_client_hello(records[: len(records) - 1]) is NEED_MORE


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"*1\r\n$4\r\nPING\r\n",
        PG_SSL_REQUEST,
        b"\x16\x02",  # not TLS's major version
        b"\x16\x03\x09",  # no such minor version
        b"\x16\x03\x01\x00\x00",  # an empty record
        b"\x16\x03\x01\xff\xff",  # longer than a record may be
        b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00",  # a ServerHello, not a ClientHello
        b"\x16\x03\x01\x00\x05\x01\x00\x00\x01",  # a hello too short to hold a random
        b"\x15\x03\x03\x00\x02\x02\x30",  # an alert
    ],
)
def test_other_protocols_and_bad_lengths_are_not_tls(data):
    assert parse_client_hello(data) is NOT_TLS


def test_lengths_that_disagree_inside_the_hello_are_not_tls():
    body = bytearray(HELLO)
    # The session id's length byte sits after record (5), handshake header (4), version (2), random (32).
    body[43] = 200
    assert parse_client_hello(bytes(body)) is NOT_TLS
    # The handshake claims one byte more than its extensions fill: the next record is not a handshake.
    longer = bytearray(HELLO)
    length = int.from_bytes(longer[6:9], "big") + 1
    longer[6:9] = length.to_bytes(3, "big")
    assert parse_client_hello(bytes(longer)) is NEED_MORE
    assert parse_client_hello(bytes(longer) + b"\x17\x03\x03\x00\x01x") is NOT_TLS


@given(st.binary(max_size=2000))
@settings(max_examples=400, deadline=None)
def test_arbitrary_bytes_never_raise(data):
    for parse in (parse_client_hello, parse_alert, parse_upgrade_request):
        assert parse(data) is not None
    for upgrade in (Upgrade("postgres", 8), Upgrade("smtp", 10), Upgrade("imap", 12, tag=b"a1")):
        assert upgrade_accepted(upgrade, data) in (NEED_MORE, True, False)


@given(st.integers(min_value=0, max_value=len(HELLO) - 1), st.integers(min_value=0, max_value=255))
@settings(max_examples=400, deadline=None)
def test_a_corrupted_real_hello_never_raises(position, value):
    data = bytearray(HELLO)
    data[position] = value
    result = parse_client_hello(bytes(data))
    assert result in (NOT_TLS, NEED_MORE) or isinstance(result, ClientHello)


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"\x15\x03\x03\x00\x02\x02\x30", Alert(2, 48)),
        (b"\x15\x03\x01\x00\x02\x02\x2a", Alert(2, 42)),
        (b"\x15\x03\x03\x00\x02\x02\x2e\x16", Alert(2, 46)),
        (b"\x15\x03\x03\x00\x02\x02", NEED_MORE),
        (b"\x15", NEED_MORE),
        (b"\x15\x03\x03\x00\x03\x02\x30\x00", NOT_TLS),
        (b"\x15\x03\x03\x00\x02\x07\x30", NOT_TLS),
        (b"\x17\x03\x03\x00\x02\x02\x30", NOT_TLS),
    ],
)
def test_alerts(data, expected):
    assert parse_alert(data) == expected


def test_alert_names_say_when_the_certificate_was_refused():
    assert parse_alert(b"\x15\x03\x03\x00\x02\x02\x30").name == "unknown_ca"
    assert parse_alert(b"\x15\x03\x03\x00\x02\x02\x30").distrusts_certificate
    assert parse_alert(b"\x15\x03\x03\x00\x02\x02\x2e").distrusts_certificate
    assert not parse_alert(b"\x15\x03\x03\x00\x02\x01\x00").distrusts_certificate  # close_notify


def test_a_postgres_ssl_request_then_s_starts_tls():
    for cut in range(8):
        assert parse_upgrade_request(PG_SSL_REQUEST[:cut]) is NEED_MORE
    upgrade = parse_upgrade_request(PG_SSL_REQUEST)
    assert upgrade == Upgrade("postgres", 8)
    assert upgrade_accepted(upgrade, b"S") is True
    assert upgrade_accepted(upgrade, b"N") is False
    assert upgrade_accepted(upgrade, b"") is NEED_MORE
    assert upgrade_accepted(upgrade, b"EFATAL...") is False


def test_other_postgres_requests_are_not_upgrades():
    startup = struct.pack("!II", 41, 196608) + b"user\x00postgres\x00database\x00x\x00\x00"
    assert parse_upgrade_request(startup) is NOT_TLS
    gss = b"\x00\x00\x00\x08\x04\xd2\x16\x30"
    assert parse_upgrade_request(gss) is NOT_TLS
    assert parse_upgrade_request(PG_SSL_REQUEST + b"x") is NOT_TLS


def test_smtp_starttls():
    assert parse_upgrade_request(b"STARTT") is NEED_MORE
    upgrade = parse_upgrade_request(b"starttls\r\n")
    assert upgrade == Upgrade("smtp", 10)
    assert upgrade_accepted(upgrade, b"220 2.0.0 Ready to start TLS\r\n") is True
    assert upgrade_accepted(upgrade, b"220 2.0.0 Ready") is NEED_MORE
    assert upgrade_accepted(upgrade, b"220-wait\r\n") is NEED_MORE
    assert upgrade_accepted(upgrade, b"454 4.7.0 TLS not available\r\n") is False
    assert parse_upgrade_request(b"EHLO client\r\n") is NOT_TLS


def test_imap_starttls_waits_for_its_tagged_answer():
    upgrade = parse_upgrade_request(b"a002 STARTTLS\r\n")
    assert upgrade == Upgrade("imap", 15, tag=b"a002")
    assert upgrade_accepted(upgrade, b"* OK still here\r\n") is NEED_MORE
    assert upgrade_accepted(upgrade, b"* OK still here\r\na002 OK Begin TLS now\r\n") is True
    assert upgrade_accepted(upgrade, b"a002 NO not now\r\n") is False
    assert parse_upgrade_request(b"a002 LOGIN x y\r\n") is NOT_TLS
