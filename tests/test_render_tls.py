"""How ``netplay show`` draws a connection intercepted as TLS: from its start, or after a
plaintext upgrade (PostgreSQL's SSLRequest and ``S``), where the marker says TLS began."""

from __future__ import annotations

from pytest_netplayground.core.addressing import Endpoint
from pytest_netplayground.core.events import ConnectionOpened, Data, Direction, Outcome, TlsNote
from pytest_netplayground.core.render import render_connection

C2S, S2C = Direction.C2S, Direction.S2C
MARK = "TLS begins: what follows was said inside it"


def _opened() -> ConnectionOpened:
    return ConnectionOpened(0.0, 0, Endpoint("10.0.0.2", 40000), Endpoint("10.0.0.1", 5432), Outcome.ESTABLISHED)


def test_an_upgraded_connection_shows_where_tls_began():
    events = [
        Data(0.1, 0, C2S, bytes.fromhex("0000000804d2162f")),
        Data(0.2, 0, S2C, b"S"),
        Data(0.4, 0, C2S, b"select 1"),
    ]
    text = render_connection(0, _opened(), events, tls=TlsNote(0.3, 0, None, None))
    lines = text.splitlines()
    mark = next(i for i, line in enumerate(lines) if MARK in line)
    assert lines[mark].strip().startswith("0.300000s")
    assert lines[mark - 1].strip() == "S"  # after the server's answer, in the clear
    assert "select 1" in lines[mark + 2]


def test_tls_from_the_start_has_no_marker():
    events = [Data(0.4, 0, C2S, b"GET / HTTP/1.1\r\n\r\n")]
    text = render_connection(0, _opened(), events, tls=TlsNote(0.3, 0, "api", "http/1.1"))
    assert "TLS (intercepted, plaintext shown): SNI api, ALPN http/1.1" in text
    assert MARK not in text
