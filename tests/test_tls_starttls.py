"""SMTP and IMAP STARTTLS (the server speaks first; TLS begins in the middle of the conversation):
``openssl s_client -starttls smtp|imap`` against a small server, recorded with the commands
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

# A tiny SMTP or IMAP server (argv[3]): greeting, a capability list offering STARTTLS, STARTTLS,
# then inside TLS every command is answered until QUIT/LOGOUT. One connection at a time.
SERVER = textwrap.dedent(
    """
    import socket, ssl, sys
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[1], sys.argv[2])
    imap = sys.argv[3] == "imap"
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

    def plain(line):
        if imap:
            tag, verb = (line.split(b" ") + [b""])[:2]
            if verb.upper() == b"CAPABILITY":
                return b"* CAPABILITY IMAP4rev1 STARTTLS\\r\\n" + tag + b" OK done\\r\\n", False
            if verb.upper() == b"STARTTLS":
                return tag + b" OK begin TLS now\\r\\n", True
            return tag + b" BAD STARTTLS first\\r\\n", False
        verb = line.split(b" ")[0].upper()
        if verb == b"EHLO":
            return b"250-server greets you\\r\\n250 STARTTLS\\r\\n", False
        if verb == b"STARTTLS":
            return b"220 2.0.0 go ahead\\r\\n", True
        return b"503 STARTTLS first\\r\\n", False

    def inside(line):
        if imap:
            tag, verb = (line.split(b" ", 1) + [b""])[:2]
            if verb.upper() == b"LOGOUT":
                return b"* BYE\\r\\n" + tag + b" OK bye\\r\\n", True
            return tag + b" OK " + verb + b"\\r\\n", False
        if line.upper() == b"QUIT":
            return b"221 bye\\r\\n", True
        return b"250 ok " + line + b"\\r\\n", False

    def serve(raw):
        raw.sendall(b"* OK server IMAP ready\\r\\n" if imap else b"220 server ESMTP ready\\r\\n")
        for line, rest in lines(raw):
            answer, upgrade = plain(line)
            raw.sendall(answer)
            if upgrade:
                assert not rest
                break
        else:
            return
        conn = context.wrap_socket(raw, server_side=True)
        for line, _ in lines(conn):
            answer, last = inside(line)
            conn.sendall(answer)
            if last:
                conn.unwrap()
                return

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

# What s_client sends once TLS is up (it does the plaintext part itself), and what it prints.
SAID = {
    "smtp": ("NOOP said inside TLS\\nQUIT\\n", "NOOP said inside TLS\r\nQUIT\r\n",
             "250 ok NOOP said inside TLS\r\n221 bye\r\n"),
    "imap": ("a1 NOOP said inside TLS\\na2 LOGOUT\\n", "a1 NOOP said inside TLS\r\na2 LOGOUT\r\n",
             "a1 OK NOOP said inside TLS\r\n* BYE\r\na2 OK bye\r\n"),
}
# The plaintext the upgrade ends with: the request and the yes.
UPGRADE = {
    "smtp": [("c2s", "STARTTLS\r\n"), ("s2c", "220 2.0.0 go ahead\r\n")],
    "imap": [("c2s", ". STARTTLS\r\n"), ("s2c", ". OK begin TLS now\r\n")],
}


def _serve(server, files, protocol: str):  # noqa: F811
    script = files / "starttls.py"
    script.write_text(SERVER)
    argv = [sys.executable, str(script), str(files / "server.pem"), str(files / "server-key.pem"), protocol]
    process = server.spawn(argv)
    deadline = time.monotonic() + 10
    while not _listening(server):
        assert process.poll() is None and time.monotonic() < deadline, f"the {protocol} server did not start"
        time.sleep(0.05)


def _s_client(client, protocol: str) -> subprocess.CompletedProcess:
    command = (
        f"printf '{SAID[protocol][0]}' | openssl s_client -connect server:{PORT} -starttls {protocol} "
        "-crlf -quiet -verify_return_error -servername server"
    )
    return client.run(["sh", "-c", command], timeout=30, text=True)


@pytest.mark.needs("openssl", "ss")
@NEEDS_BUNDLE
@pytest.mark.parametrize("protocol", ["smtp", "imap"])
def test_starttls_recorded_as_plaintext_and_replayed(files, tmp_path, protocol):  # noqa: F811
    _, sent, expected = SAID[protocol]
    cassette = tmp_path / f"{protocol}.netplay"
    with _sandbox(files, tls="intercept", mode="record", cassette=cassette) as sandbox:
        server, client = _hosts(sandbox)
        _serve(server, files, protocol)
        recorded = _s_client(client, protocol)
    assert (recorded.returncode, recorded.stdout) == (0, expected), recorded.stderr
    assert sandbox.tls_notes == ()
    with open(cassette) as f:
        records = [json.loads(line) for line in f]
    (note,) = [r for r in records if r.get("ev") == "tls"]
    assert note["sni"] == "server"
    said = [(r["t"], r["dir"], r["text"]) for r in records if r.get("ev") == "data"]
    before = [(d, text) for t, d, text in said if t <= note["t"]]
    after = [(d, text) for t, d, text in said if t > note["t"]]
    # The plaintext start as it went, the request and the yes last; then what was said inside TLS.
    assert before[0][0] == "s2c" and "server" in before[0][1]
    assert before[-2:] == UPGRADE[protocol], before
    assert "".join(text for d, text in after if d == "c2s") == sent, after
    assert "".join(text for d, text in after if d == "s2c") == expected, after

    for present in (False, True):
        with _sandbox(files, mode="replay", cassette=cassette) as sandbox:
            server, client = _hosts(sandbox)
            if present:
                _serve(server, files, protocol)
            replayed = _s_client(client, protocol)
        assert (replayed.returncode, replayed.stdout) == (0, expected), (present, replayed.stderr)
        assert sandbox.divergences.ok, (present, sandbox.divergences.format(), sandbox.tls_notes)
