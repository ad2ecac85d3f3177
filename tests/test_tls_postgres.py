"""TLS after a plaintext upgrade: psql with ``sslmode=require`` (SSLRequest, ``S``, then TLS)
recorded as readable SQL, replayed with the server absent and present."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from tests.support import leaks, servers

pytestmark = pytest.mark.root

SERVER = "10.0.0.1"
QUERY = "select 'said inside TLS' as greeting"
SSL_REQUEST = bytes.fromhex("0000000804d2162f")


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pg-tls") / "ca"


def _sandbox(mode: str, cassette: Path, ca_dir: Path, **options):
    sb = leaks.running(mode, cassette, tls_ca_dir=str(ca_dir), **options)
    return sb


def _server_certificate(directory: Path) -> list[str]:
    """A certificate and key of the server's own (no relation to the sandbox CA), owned by
    the postgres user with mode 0600 as the server demands; the settings that turn TLS on."""
    from pytest_netplayground.runtime.tls_authority import CertificateAuthority

    own = CertificateAuthority.load_or_create(str(directory / "own-ca"))
    leaf = own.leaf("server")
    account = pwd.getpwnam("postgres")
    paths = {"cert": directory / "server.pem", "key": directory / "server-key.pem"}
    paths["cert"].write_bytes(leaf.chain_pem)
    paths["key"].write_bytes(leaf.key_pem)
    for path in paths.values():
        os.chown(path, account.pw_uid, account.pw_gid)
        os.chmod(path, 0o600)
    return ["ssl=on", f"ssl_cert_file={paths['cert']}", f"ssl_key_file={paths['key']}"]


def _psql(sb, ssl: str = "sslmode=require", bundle_as_root: bool = False) -> subprocess.CompletedProcess:
    """psql in the client host; ``bundle_as_root``: its root certificate for verify-ca/full is the
    host's own SSL_CERT_FILE (the sandbox's bundle), as docs/tls.rst advises."""
    env = {**os.environ, "PGPASSWORD": servers.POSTGRES_PASSWORD, "PGCONNECT_TIMEOUT": "20"}
    env.pop("PGSSLROOTCERT", None)
    conninfo = f"host={SERVER} port={servers.POSTGRES_PORT} user=postgres {ssl} gssencmode=disable"
    argv = [servers.require("psql"), "-X", "-At", "-c", QUERY, "-c", "select ssl from pg_stat_ssl "
            "where pid = pg_backend_pid()", conninfo]
    if bundle_as_root:
        argv = ["sh", "-c", 'PGSSLROOTCERT="$SSL_CERT_FILE" exec "$@"', "psql", *argv]
    try:
        return sb.host("client").run(argv, timeout=40, env=env)
    except subprocess.TimeoutExpired:
        sb.close("abort" if sb.is_recording else "commit")
        pytest.fail(f"psql did not end within 40 s: the {sb.mode} hung", pytrace=False)


def _records(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def _payload(record: dict) -> bytes:
    import base64

    return base64.b64decode(record["b64"]) if "b64" in record else record["text"].encode()


@pytest.fixture(params=["trust", "md5"])
def recording(request, tmp_path, ca_dir):
    """(auth, cassette, psql's output): psql with sslmode=require recorded against a fresh cluster with TLS on."""
    servers.postgres_bin("postgres")
    cassette = tmp_path / "pg-tls.netplay"
    with servers.postgres_directory() as directory:
        settings = _server_certificate(directory)
        with _sandbox("record", cassette, ca_dir, tls="intercept") as sb:
            sb.add_host("server")
            sb.add_host("client")
            servers.start_postgres(sb.host("server"), directory, auth=request.param, settings=settings)
            recorded = _psql(sb)
    assert recorded.returncode == 0, recorded.stderr
    # The server saw TLS (pg_stat_ssl says so): the proxy's own TLS to it.
    assert recorded.stdout == b"said inside TLS\nt\n", recorded.stderr
    assert sb.tls_notes == (), sb.tls_notes
    return request.param, cassette, recorded.stdout


def test_psql_with_sslmode_require_is_recorded_as_plaintext_sql(recording):
    _, cassette, _ = recording
    records = _records(cassette)
    (opened,) = [r["conn"] for r in records if r.get("ev") == "open"]
    data = [r for r in records if r.get("ev") == "data" and r["conn"] == opened]
    # The upgrade as it went, in the clear: SSLRequest, then the server's S.
    assert [(r["dir"], _payload(r)) for r in data[:2]] == [("c2s", SSL_REQUEST), ("s2c", b"S")]
    notes = [r for r in records if r.get("ev") == "tls"]
    assert [n["conn"] for n in notes] == [opened]
    assert notes[0]["t"] >= data[1]["t"]
    # Then the plaintext inside TLS: the startup message and the query as readable text.
    sent = b"".join(_payload(r) for r in data[2:] if r["dir"] == "c2s")
    answered = b"".join(_payload(r) for r in data[2:] if r["dir"] == "s2c")
    assert b"user\x00postgres\x00" in sent
    assert QUERY.encode() in sent
    assert b"said inside TLS" in answered
    assert not any(_payload(r)[:1] == b"\x16" for r in data[2:])  # no TLS record was recorded


@pytest.mark.timeout(180)
def test_psql_with_sslmode_require_replays_with_postgres_absent(recording, ca_dir):
    _, cassette, recorded = recording
    with _sandbox("replay", cassette, ca_dir, stall_timeout=2.0) as sb:
        sb.add_host("server")
        sb.add_host("client")
        replayed = _psql(sb)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == recorded
    assert sb.divergences.ok, sb.divergences.format()
    assert sb.tls_notes == (), sb.tls_notes


@pytest.mark.timeout(180)
def test_psql_with_sslmode_require_replays_with_postgres_present(recording, ca_dir):
    """The recorded SSLRequest goes to the new server, whose S opens the proxy's TLS to it; the
    recorded startup follows inside. psql gets the recorded answers; what the new server said
    differs and is reported: its BackendKeyData, and under md5 its salt (it then rejects the
    recorded password answer)."""
    auth, cassette, recorded = recording
    with servers.postgres_directory() as directory:
        settings = _server_certificate(directory)
        with _sandbox("replay", cassette, ca_dir, stall_timeout=2.0) as sb:
            sb.add_host("server")
            sb.add_host("client")
            servers.start_postgres(sb.host("server"), directory, auth=auth, settings=settings)
            replayed = _psql(sb)
    text = sb.divergences.format()
    assert replayed.returncode == 0, (replayed.stderr, text, sb.tls_notes)
    assert replayed.stdout == recorded
    assert "s2c: bytes differ" in text, text
    assert "TLS handshake" not in text, text
    if auth == "trust":
        assert "c2s" not in text, text  # under md5 the rejecting server may close before psql's Terminate
    assert sb.tls_notes == (), sb.tls_notes


def test_psql_verify_full_trusts_the_sandbox_ca_through_ssl_cert_file(tmp_path, ca_dir):
    """verify-full checks the proxy's certificate (for the server's address: libpq sends no
    SNI for an address) against the sandbox's bundle, named by the client host's SSL_CERT_FILE."""
    servers.postgres_bin("postgres")
    with servers.postgres_directory() as directory:
        settings = _server_certificate(directory)
        with _sandbox("live", None, ca_dir, tls="intercept") as sb:
            sb.add_host("server")
            sb.add_host("client")
            servers.start_postgres(sb.host("server"), directory, settings=settings)
            verified = _psql(sb, "sslmode=verify-full", bundle_as_root=True)
            # Without the sandbox's bundle the same check fails: the server's own CA is not the proxy's.
            refused = _psql(sb, f"sslmode=verify-full sslrootcert={directory / 'own-ca' / 'ca.pem'}")
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout == b"said inside TLS\nt\n"
    assert refused.returncode != 0
    assert b"certificate verify failed" in refused.stderr, refused.stderr
    assert any("refused the sandbox CA's certificate for 10.0.0.1" in note for note in sb.tls_notes), sb.tls_notes


@pytest.mark.timeout(180)
def test_psql_against_a_server_without_tls_goes_on_as_plain_bytes(tmp_path, ca_dir):
    """sslmode=prefer (libpq's default) against a server with ssl off: SSLRequest, N, then the
    startup in the clear; recorded without a tls note and replayed with the server absent."""
    servers.postgres_bin("postgres")
    cassette = tmp_path / "pg-plain.netplay"
    with servers.postgres_directory() as directory:
        with _sandbox("record", cassette, ca_dir, tls="intercept") as sb:
            sb.add_host("server")
            sb.add_host("client")
            servers.start_postgres(sb.host("server"), directory)
            recorded = _psql(sb, "sslmode=prefer")
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout == b"said inside TLS\nf\n"  # pg_stat_ssl: this session is not TLS
    records = _records(cassette)
    assert not [r for r in records if r.get("ev") == "tls"]
    data = [r for r in records if r.get("ev") == "data"]
    assert [(r["dir"], _payload(r)) for r in data[:2]] == [("c2s", SSL_REQUEST), ("s2c", b"N")]
    assert QUERY.encode() in b"".join(_payload(r) for r in data if r["dir"] == "c2s")
    with _sandbox("replay", cassette, ca_dir, stall_timeout=2.0) as sb:
        sb.add_host("server")
        sb.add_host("client")
        replayed = _psql(sb, "sslmode=prefer")
    assert (replayed.returncode, replayed.stdout) == (0, recorded.stdout), replayed.stderr
    assert sb.divergences.ok, sb.divergences.format()
