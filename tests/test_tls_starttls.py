"""SMTP STARTTLS (the server speaks first; TLS begins in the middle of the conversation):
``openssl s_client -starttls smtp`` against a small SMTP server, recorded with the commands
inside TLS as plaintext, replayed with the server absent and present."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from tests.test_tls_intercept import NEEDS_BUNDLE, _hosts, _listening, _sandbox, files  # noqa: F401

pytestmark = pytest.mark.root

PORT = 8443  # the port _listening looks at

# A tiny SMTP server: greeting, EHLO offering STARTTLS, STARTTLS, then inside TLS every
# command is answered "250 ok <command>" until QUIT. One connection at a time.
SMTP_SERVER = textwrap.dedent(
    """
    import socket, ssl, sys
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[1], sys.argv[2])
    listener = socket.create_server(("::", %d), family=socket.AF_INET6, dualstack_ipv6=True)

    def lines(conn):
        data = b""
        while True:
            while b"\\r\\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            line, data = data.split(b"\\r\\n", 1)
            yield line, data

    def serve(raw):
        raw.sendall(b"220 server ESMTP ready\\r\\n")
        conn = raw
        for line, rest in lines(raw):
            verb = line.split(b" ")[0].upper()
            if verb == b"EHLO":
                raw.sendall(b"250-server greets you\\r\\n250 STARTTLS\\r\\n")
            elif verb == b"STARTTLS":
                assert not rest
                raw.sendall(b"220 2.0.0 go ahead\\r\\n")
                conn = context.wrap_socket(raw, server_side=True)
                break
            else:
                raw.sendall(b"503 STARTTLS first\\r\\n")
        else:
            return
        for line, _ in lines(conn):
            if line.upper() == b"QUIT":
                conn.sendall(b"221 bye\\r\\n")
                conn.unwrap()
                return
            conn.sendall(b"250 ok " + line + b"\\r\\n")

    while True:
        raw, _ = listener.accept()
        try:
            serve(raw)
        except OSError:
            pass
        finally:
            raw.close()
    """
    % PORT
)

S_CLIENT = (
    "printf 'NOOP said inside TLS\\nQUIT\\n' | openssl s_client -connect server:%d -starttls smtp "
    "-crlf -quiet -verify_return_error -servername server" % PORT
)
EXPECTED = "250 ok NOOP said inside TLS\r\n221 bye\r\n"


def _serve(server, files):  # noqa: F811
    script = files / "smtp.py"
    script.write_text(SMTP_SERVER)
    process = server.spawn([sys.executable, str(script), str(files / "server.pem"), str(files / "server-key.pem")])
    deadline = time.monotonic() + 10
    while not _listening(server):
        assert process.poll() is None and time.monotonic() < deadline, "the SMTP server did not start"
        time.sleep(0.05)


def _s_client(client) -> subprocess.CompletedProcess:
    return client.run(["sh", "-c", S_CLIENT], timeout=30, text=True)


@pytest.mark.needs("openssl", "ss")
@NEEDS_BUNDLE
def test_smtp_starttls_recorded_as_plaintext_and_replayed(files, tmp_path):  # noqa: F811
    cassette = tmp_path / "smtp.netplay"
    with _sandbox(files, tls="intercept", mode="record", cassette=cassette) as sandbox:
        server, client = _hosts(sandbox)
        _serve(server, files)
        recorded = _s_client(client)
    assert (recorded.returncode, recorded.stdout) == (0, EXPECTED), recorded.stderr
    assert sandbox.tls_notes == ()
    with open(cassette) as f:
        records = [json.loads(line) for line in f]
    (note,) = [r for r in records if r.get("ev") == "tls"]
    said = [(r["t"], r["dir"], r["text"]) for r in records if r.get("ev") == "data"]
    before = [(d, text) for t, d, text in said if t <= note["t"]]
    after = [(d, text) for t, d, text in said if t > note["t"]]
    # The plaintext start as it went, STARTTLS and its 220 last.
    assert before[0] == ("s2c", "220 server ESMTP ready\r\n")
    assert before[-2:] == [("c2s", "STARTTLS\r\n"), ("s2c", "220 2.0.0 go ahead\r\n")]
    # Then what was said inside TLS, readable.
    assert "".join(text for d, text in after if d == "c2s") == "NOOP said inside TLS\r\nQUIT\r\n", after
    assert "".join(text for d, text in after if d == "s2c") == EXPECTED, after
    assert note["sni"] == "server"

    for present in (False, True):
        with _sandbox(files, mode="replay", cassette=cassette) as sandbox:
            server, client = _hosts(sandbox)
            if present:
                _serve(server, files)
            replayed = _s_client(client)
        assert (replayed.returncode, replayed.stdout) == (0, EXPECTED), (present, replayed.stderr)
        assert sandbox.divergences.ok, (present, sandbox.divergences.format(), sandbox.tls_notes)
