"""TLS interception end to end: HTTPS recorded as plaintext, replayed with the server absent and present,
a client that does not trust the sandbox CA reported and let through, ``tls="off"`` unchanged."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import textwrap
import time

import pytest

from pytest_netplayground import Sandbox
from pytest_netplayground.errors import ConfigError
from pytest_netplayground.runtime.tls_trust import BUNDLE_PATHS

NEEDS_BUNDLE = pytest.mark.skipif(
    not any(os.path.isfile(p) for p in BUNDLE_PATHS),
    reason="no system CA bundle (apt-get install ca-certificates)",
)
PORT = 8443
BODY = "hello from inside TLS\n"

# A tiny HTTPS server with a fixed answer (http.server's carries the date, which a replay
# against the live server would report as a difference). One request per connection.
SERVER = textwrap.dedent(
    """
    import socket, ssl, sys
    cert, key, body = sys.argv[1], sys.argv[2], sys.argv[3].encode()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    listener = socket.create_server(("::", %d), family=socket.AF_INET6, dualstack_ipv6=True)
    def answer(conn):
        data = b""
        while b"\\r\\n\\r\\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return  # the client went away without asking
            data += chunk
        head = b"HTTP/1.1 200 OK\\r\\nContent-Length: %%d\\r\\nConnection: close\\r\\n\\r\\n" %% len(body)
        conn.sendall(head + body)
        conn.unwrap()

    while True:
        raw, _ = listener.accept()
        try:
            answer(context.wrap_socket(raw, server_side=True))
        except OSError:  # ssl.SSLError too: a client that gave up is the next one's business
            pass
        finally:
            raw.close()
    """
    % PORT
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The server's own self-signed certificate (no relation to the sandbox CA), and the server script."""
    from pytest_netplayground.runtime.tls_authority import CertificateAuthority

    directory = tmp_path_factory.mktemp("tls-intercept")
    own = CertificateAuthority.load_or_create(str(directory / "server-ca"))
    leaf = own.leaf("server")
    (directory / "server.pem").write_bytes(leaf.chain_pem)
    (directory / "server-key.pem").write_bytes(leaf.key_pem)
    (directory / "other-ca.pem").write_bytes(own.cert_pem)
    (directory / "server.py").write_text(SERVER)
    return directory


def _sandbox(files, **kwargs) -> Sandbox:
    return Sandbox(tls_ca_dir=str(files / "ca"), **kwargs)


def _serve(host, files):
    process = host.spawn(
        [sys.executable, str(files / "server.py"), str(files / "server.pem"), str(files / "server-key.pem"), BODY]
    )
    deadline = time.monotonic() + 10
    while not _listening(host):
        assert process.poll() is None, "the HTTPS server exited"
        assert time.monotonic() < deadline, "the HTTPS server never listened"
        time.sleep(0.05)
    return process


def _listening(host) -> bool:
    result = host.run(["ss", "-Hltn", f"sport = :{PORT}"], timeout=10)
    return bool(result.stdout.strip())


def _curl(host, *extra: str) -> subprocess.CompletedProcess:
    return host.run(["curl", "-sS", "--max-time", "10", *extra, f"https://server:{PORT}/"], timeout=30, text=True)


def _records(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def _hosts(sandbox):
    return sandbox.add_host("server"), sandbox.add_host("client")


# -- settings -----------------------------------------------------------------------


def test_a_bad_tls_value_is_refused_naming_it():
    with pytest.raises(ConfigError, match="tls: expected one of off, intercept, got 'yes-please'"):
        Sandbox(tls="yes-please")


# -- end to end -----------------------------------------------------------------------


@pytest.mark.root
@pytest.mark.needs("curl", "ss")
@NEEDS_BUNDLE
def test_https_recorded_as_plaintext_and_replayed_with_the_server_absent_and_present(files, tmp_path):
    cassette = tmp_path / "https.netplay"
    with _sandbox(files, tls="intercept", mode="record", cassette=cassette) as sandbox:
        server, client = _hosts(sandbox)
        _serve(server, files)
        got = _curl(client)
        python = client.run(
            [sys.executable, "-c", f"import urllib.request; print(urllib.request.urlopen('https://server:{PORT}/').read())"],
            timeout=30,
            text=True,
        )
    assert got.returncode == 0, got.stderr
    assert got.stdout == BODY
    assert python.returncode == 0, python.stderr
    assert BODY.strip() in python.stdout
    assert sandbox.tls_notes == ()
    records = _records(cassette)
    assert records[0]["tls"] == "intercept"
    notes = [r for r in records if r.get("ev") == "tls"]
    assert [n["sni"] for n in notes] == ["server", "server"]
    sent = [r["text"] for r in records if r.get("ev") == "data" and r["dir"] == "c2s"]
    answers = [r["text"] for r in records if r.get("ev") == "data" and r["dir"] == "s2c"]
    assert sent[0].startswith("GET / HTTP/1.1\r\nHost: server:8443\r\n")
    assert all(answer.endswith(BODY) for answer in answers) and len(answers) == 2

    # Replay, nothing running in the server's host: the cassette answers inside a fresh handshake.
    # tls is left "off": the cassette says it was intercepted, so the replay intercepts.
    with _sandbox(files, mode="replay", cassette=cassette) as sandbox:
        server, client = _hosts(sandbox)
        absent = _curl(client)
    assert absent.returncode == 0, absent.stderr
    assert absent.stdout == BODY
    report = sandbox.divergences
    # The urllib connection is recorded but not made this time.
    assert [type(item).__name__ for item in report.items] == ["UnusedRecording"], (report.format(), sandbox.tls_notes)

    # Replay with the server running: the recorded request goes to it over the proxy's own TLS.
    with _sandbox(files, mode="replay", cassette=cassette) as sandbox:
        server, client = _hosts(sandbox)
        _serve(server, files)
        present = _curl(client)
    assert present.returncode == 0, present.stderr
    assert present.stdout == BODY
    kinds = [type(item).__name__ for item in sandbox.divergences.items]
    assert kinds == ["UnusedRecording"], (sandbox.divergences.format(), sandbox.tls_notes)


@pytest.mark.root
@pytest.mark.needs("curl", "ss")
@NEEDS_BUNDLE
def test_a_changed_https_request_is_reported_as_plaintext(files, tmp_path):
    cassette = tmp_path / "changed.netplay"
    with _sandbox(files, tls="intercept", mode="record", cassette=cassette) as sandbox:
        server, client = _hosts(sandbox)
        _serve(server, files)
        assert _curl(client, "-H", "X-Run: first").returncode == 0
    with _sandbox(files, tls="intercept", mode="replay", cassette=cassette) as sandbox:
        server, client = _hosts(sandbox)
        got = _curl(client, "-H", "X-Run: other")
    assert got.stdout == BODY
    text = sandbox.divergences.format()
    assert not sandbox.divergences.ok
    assert "X-Run: other" in text or "other" in text, text
    assert "TLS handshake" not in text
    # Reported where the plaintext request differs: the first byte of the header's value.
    recorded = next(r["text"] for r in _records(cassette) if r.get("ev") == "data" and r["dir"] == "c2s")
    (mismatch,) = [item for item in sandbox.divergences.items if type(item).__name__ == "ByteMismatch"]
    assert (mismatch.direction.value, mismatch.offset) == ("c2s", recorded.index("X-Run: first") + len("X-Run: "))
    assert f"c2s: bytes differ at offset {mismatch.offset}" in text


@pytest.mark.root
@pytest.mark.needs("curl", "ss")
@NEEDS_BUNDLE
def test_a_client_that_does_not_trust_the_ca_is_reported_and_then_let_through(files, tmp_path):
    cassette = tmp_path / "untrusted.netplay"
    with _sandbox(files, tls="intercept", mode="record", cassette=cassette) as sandbox:
        server, client = _hosts(sandbox)
        _serve(server, files)
        # It trusts only the server's own CA: the sandbox's certificate is refused.
        started = time.monotonic()
        refused = _curl(client, "--cacert", str(files / "other-ca.pem"))
        assert time.monotonic() - started < 15  # bounded by curl's own --max-time, never hung
        again = _curl(client, "--cacert", str(files / "other-ca.pem"))
    assert refused.returncode != 0
    assert again.returncode == 0, again.stderr
    assert again.stdout == BODY
    (note,) = sandbox.tls_notes
    assert "refused the sandbox CA's certificate for server" in note
    assert "TLS alert unknown_ca" in note
    assert "does not trust the sandbox CA: it pins certificates or uses its own trust store" in note
    assert "its 1 later connection" in note
    # The connection let through holds the TLS bytes as they went.
    records = _records(cassette)
    opened = [r["conn"] for r in records if r.get("ev") == "open"]
    tls = {r["conn"] for r in records if r.get("ev") == "tls"}
    assert len(opened) == 2 and tls == {opened[0]}
    through = [r for r in records if r.get("ev") == "data" and r["conn"] == opened[1] and r["dir"] == "c2s"]
    assert "b64" in through[0]


@pytest.mark.root
@pytest.mark.needs("curl", "ss")
@NEEDS_BUNDLE
def test_tls_off_keeps_the_ciphertext(files, tmp_path):
    import base64

    cassette = tmp_path / "off.netplay"
    with _sandbox(files, mode="record", cassette=cassette) as sandbox:
        server, client = _hosts(sandbox)
        _serve(server, files)
        got = _curl(client, "--cacert", str(files / "other-ca.pem"))
    assert got.stdout == BODY, got.stderr
    records = _records(cassette)
    assert "tls" not in records[0]
    assert not [r for r in records if r.get("ev") == "tls"]
    first = next(r for r in records if r.get("ev") == "data" and r["dir"] == "c2s")
    assert base64.b64decode(first["b64"])[:1] == b"\x16"  # a TLS handshake record, as it went


@pytest.mark.root
@pytest.mark.needs("ss")
@NEEDS_BUNDLE
def test_the_test_code_gets_a_context_that_trusts_the_sandbox_ca(files):
    with _sandbox(files, tls="intercept") as sandbox:
        server, client = _hosts(sandbox)
        _serve(server, files)
        context = sandbox.tls_client_context()
        with client.connect((server.address, PORT), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="server") as conn:
                conn.sendall(b"GET / HTTP/1.1\r\nHost: server\r\n\r\n")
                data = b""
                while True:
                    try:
                        chunk = conn.recv(4096)
                    except ssl.SSLError:
                        break
                    if not chunk:
                        break
                    data += chunk
                issuer = dict(item[0] for item in conn.getpeercert()["issuer"])
    assert data.endswith(BODY.encode())
    assert issuer["commonName"].startswith("Net Playground sandbox CA")


@pytest.mark.root
@pytest.mark.needs("curl", "ss")
@NEEDS_BUNDLE
def test_netplay_records_with_tls_intercept_and_show_marks_the_connection(files, tmp_path):
    cassette = tmp_path / "cli.netplay"
    server = " ".join(
        [sys.executable, str(files / "server.py"), str(files / "server.pem"), str(files / "server-key.pem"), "'cli body'"]
    )
    client = f"sleep 1; curl -sS --max-time 10 https://server:{PORT}/"
    netplay = [sys.executable, "-m", "pytest_netplayground"]
    env = dict(os.environ, NETPLAY_CA_DIR=str(files / "ca"))
    recorded = subprocess.run(
        [*netplay, "record", "--tls", "intercept", "--names", "server,client", "--exit-code-from", "client",
         "-f", str(cassette), server, client],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert recorded.returncode == 0, recorded.stderr
    assert "cli body" in recorded.stdout
    shown = subprocess.run([*netplay, "show", str(cassette)], capture_output=True, text=True, timeout=60)
    assert "TLS (intercepted, plaintext shown): SNI server, ALPN http/1.1" in shown.stdout
    assert "GET / HTTP/1.1" in shown.stdout and "cli body" in shown.stdout


NGINX = """
daemon off; user root; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;
events {{}}
http {{
    access_log off;
    client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};
    server {{
        listen {port} ssl http2;
        ssl_certificate {d}/server.pem; ssl_certificate_key {d}/server-key.pem;
        location / {{ return 200 "over h2\\n"; }}
    }}
}}
"""


@pytest.mark.root
@pytest.mark.needs("curl", "ss", "nginx")
@NEEDS_BUNDLE
def test_http2_over_tls_is_recorded_with_its_alpn_and_replayed(files, tmp_path):
    for name in ("server.pem", "server-key.pem"):
        (tmp_path / name).write_bytes((files / name).read_bytes())
    (tmp_path / "nginx.conf").write_text(NGINX.format(d=tmp_path, port=PORT))
    cassette = tmp_path / "h2.netplay"
    with _sandbox(files, tls="intercept", mode="record", cassette=cassette) as sandbox:
        server, client = _hosts(sandbox)
        nginx = server.spawn(["nginx", "-c", str(tmp_path / "nginx.conf")])
        deadline = time.monotonic() + 10
        while not _listening(server):
            assert nginx.poll() is None and time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.05)
        got = _curl(client, "--http2", "-w", "%{http_version}")
    assert got.returncode == 0, got.stderr
    assert got.stdout == "over h2\n2"
    notes = [r for r in _records(cassette) if r.get("ev") == "tls"]
    assert [(n["sni"], n["alpn"]) for n in notes] == [("server", "h2")]
    with _sandbox(files, mode="replay", cassette=cassette) as sandbox:
        server, client = _hosts(sandbox)
        again = _curl(client, "--http2", "-w", "%{http_version}")
    assert again.returncode == 0, again.stderr
    assert again.stdout == "over h2\n2"
    assert sandbox.divergences.ok, sandbox.divergences.format()


REQUESTS = (
    "import requests, sys; r = requests.get(f'https://server:{%d}/', timeout=10); "
    "print(r.status_code, r.headers['Content-Length'], r.text, sep='|', end='')" % PORT
)


@pytest.mark.root
@pytest.mark.needs("ss")
@NEEDS_BUNDLE
def test_python_requests_is_recorded_and_replayed_with_the_server_absent_and_present(files, tmp_path):
    pytest.importorskip("requests", reason="requests is not installed in this Python")
    cassette = tmp_path / "requests.netplay"

    def get(sandbox, serve: bool) -> subprocess.CompletedProcess:
        server, client = _hosts(sandbox)
        if serve:
            _serve(server, files)
        # requests trusts REQUESTS_CA_BUNDLE, which the sandbox points at its bundle.
        return client.run([sys.executable, "-c", REQUESTS], timeout=30, text=True)

    with _sandbox(files, tls="intercept", mode="record", cassette=cassette) as sandbox:
        recorded = get(sandbox, serve=True)
    assert (recorded.returncode, recorded.stdout) == (0, f"200|{len(BODY)}|{BODY}"), recorded.stderr
    records = _records(cassette)
    assert [r["sni"] for r in records if r.get("ev") == "tls"] == ["server"]
    sent = next(r["text"] for r in records if r.get("ev") == "data" and r["dir"] == "c2s")
    assert sent.startswith("GET / HTTP/1.1\r\n") and "User-Agent: python-requests/" in sent
    for serve in (False, True):
        with _sandbox(files, mode="replay", cassette=cassette) as sandbox:
            replayed = get(sandbox, serve)
        assert (replayed.returncode, replayed.stdout) == (0, recorded.stdout), (serve, replayed.stderr)
        assert sandbox.divergences.ok, (serve, sandbox.divergences.format(), sandbox.tls_notes)


# s_client verifies the sandbox's certificate (-verify_return_error: a failure ends it): from the
# bundle SSL_CERT_FILE names, or from OpenSSL's default paths, which the sandbox's bundle covers.
S_CLIENT = (
    "printf 'hello from s_client\\nCLOSE\\n' | openssl s_client -connect server:%d -servername server "
    "-quiet -verify_return_error {trust}" % PORT
)


@pytest.mark.root
@pytest.mark.needs("openssl", "ss")
@NEEDS_BUNDLE
def test_openssl_s_client_and_s_server_recorded_and_replayed(files, tmp_path):
    cassette = tmp_path / "openssl.netplay"
    s_server = [
        "openssl", "s_server", "-accept", str(PORT), "-cert", str(files / "server.pem"),
        "-key", str(files / "server-key.pem"), "-rev", "-quiet",
    ]

    def s_client(client, trust: str) -> subprocess.CompletedProcess:
        return client.run(["sh", "-c", S_CLIENT.format(trust=trust)], timeout=30, text=True)

    def serve(server):
        process = server.spawn(s_server)
        deadline = time.monotonic() + 10
        while not _listening(server):
            assert process.poll() is None and time.monotonic() < deadline, "s_server did not start"
            time.sleep(0.05)

    with _sandbox(files, tls="intercept", mode="record", cassette=cassette) as sandbox:
        server, client = _hosts(sandbox)
        serve(server)
        recorded = s_client(client, '-CAfile "$SSL_CERT_FILE"')
    assert (recorded.returncode, recorded.stdout) == (0, "tneilc_s morf olleh\n"), recorded.stderr
    records = _records(cassette)
    assert [r["sni"] for r in records if r.get("ev") == "tls"] == ["server"]
    said = [(r["dir"], r["text"]) for r in records if r.get("ev") == "data"]
    assert ("c2s", "hello from s_client\n") in said or ("c2s", "hello from s_client\nCLOSE\n") in said, said
    assert ("s2c", "tneilc_s morf olleh\n") in said, said

    for present in (False, True):
        with _sandbox(files, mode="replay", cassette=cassette) as sandbox:
            server, client = _hosts(sandbox)
            if present:
                serve(server)
            replayed = s_client(client, "")  # OpenSSL's default verify paths this time
        assert (replayed.returncode, replayed.stdout) == (0, recorded.stdout), (present, replayed.stderr)
        assert sandbox.divergences.ok, (present, sandbox.divergences.format(), sandbox.tls_notes)


# A client that connects, says nothing for longer than the proxy waits for a ClientHello
# (as a connection pool does), then speaks TLS.
LATE_CLIENT = """
import socket, ssl, sys, time
raw = socket.create_connection(("server", %d), timeout=10)
time.sleep(1.5)
with ssl.create_default_context().wrap_socket(raw, server_hostname="server") as conn:
    conn.sendall(b"GET /late HTTP/1.1\\r\\nHost: server\\r\\n\\r\\n")
    data = b""
    while True:
        try:
            chunk = conn.recv(4096)
        except ssl.SSLError:
            break
        if not chunk:
            break
        data += chunk
sys.stdout.write(data.decode())
""" % PORT


@pytest.mark.root
@pytest.mark.needs("ss")
@NEEDS_BUNDLE
def test_a_client_that_starts_tls_late_is_still_intercepted(files, tmp_path):
    cassette = tmp_path / "late.netplay"

    def late(sandbox, serve: bool) -> subprocess.CompletedProcess:
        server, client = _hosts(sandbox)
        if serve:
            _serve(server, files)
        return client.run([sys.executable, "-c", LATE_CLIENT], timeout=30, text=True)

    with _sandbox(files, tls="intercept", mode="record", cassette=cassette) as sandbox:
        recorded = late(sandbox, serve=True)
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout.endswith(BODY)
    records = _records(cassette)
    assert [r["sni"] for r in records if r.get("ev") == "tls"] == ["server"]
    sent = [r["text"] for r in records if r.get("ev") == "data" and r["dir"] == "c2s"]
    assert sent == ["GET /late HTTP/1.1\r\nHost: server\r\n\r\n"]
    for serve in (False, True):
        with _sandbox(files, mode="replay", cassette=cassette) as sandbox:
            replayed = late(sandbox, serve)
        assert (replayed.returncode, replayed.stdout) == (0, recorded.stdout), (serve, replayed.stderr)
        assert sandbox.divergences.ok, (serve, sandbox.divergences.format(), sandbox.tls_notes)
