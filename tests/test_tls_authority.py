"""The sandbox CA: made once with private permissions, reused, refused with a clear error when broken."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import stat
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pytest_netplayground.errors import NetplayError, TlsError
from pytest_netplayground.runtime import tls_authority
from pytest_netplayground.runtime.tls_authority import CertificateAuthority, default_directory, normalize_name


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str | None) -> ssl.SSLObject:
    """Run a TLS handshake between two contexts in memory; the client's object, handshake done."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_side = client.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for tls in (client_side, server_side):
            try:
                tls.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    assert client_side.version() is not None
    return client_side


def test_made_once_with_private_permissions_and_reused(tmp_path):
    directory = tmp_path / "nested" / "ca"
    first = CertificateAuthority.load_or_create(str(directory))
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(first.key_path).st_mode) == 0o600
    assert sorted(p for p in os.listdir(directory) if not p.startswith(".")) == ["ca-key.pem", "ca.pem"]
    assert not [p for p in os.listdir(directory) if p.startswith(".tmp")]
    again = CertificateAuthority.load_or_create(str(directory))
    assert again.cert_pem == first.cert_pem
    assert again.key.private_numbers() == first.key.private_numbers()


def test_the_ca_certificate_is_a_ca_that_only_signs(tmp_path):
    cert = CertificateAuthority.load_or_create(str(tmp_path / "ca")).certificate
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.not_valid_after_utc > datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
        days=3000
    )


def test_parallel_callers_agree_on_one_ca(tmp_path):
    results: list[bytes] = []
    errors: list[BaseException] = []

    def make():
        try:
            results.append(CertificateAuthority.load_or_create(str(tmp_path / "ca")).cert_pem)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert len(results) == 6 and len(set(results)) == 1


def test_default_place_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NETPLAY_CA_DIR", str(tmp_path / "chosen"))
    assert default_directory() == str(tmp_path / "chosen")
    monkeypatch.delenv("NETPLAY_CA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_directory() == str(tmp_path / "data" / "netplayground" / "ca")
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_directory() == str(tmp_path / "home" / ".local" / "share" / "netplayground" / "ca")
    monkeypatch.setenv("NETPLAY_CA_DIR", str(tmp_path / "env"))
    made = CertificateAuthority.load_or_create()
    assert made.directory == str(tmp_path / "env") and os.path.exists(made.key_path)


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda ca: open(ca.cert_path, "w").write("not a certificate"), "corrupt"),
        (lambda ca: open(ca.key_path, "w").write("not a key"), "corrupt"),
        (lambda ca: os.unlink(ca.key_path), "incomplete"),
        (lambda ca: os.chmod(ca.key_path, 0o644), "readable by others"),
    ],
)
def test_a_broken_ca_is_refused_naming_the_file(tmp_path, damage, words):
    made = CertificateAuthority.load_or_create(str(tmp_path / "ca"))
    damage(made)
    with pytest.raises(TlsError, match=words) as caught:
        CertificateAuthority.load_or_create(str(tmp_path / "ca"))
    assert str(tmp_path / "ca") in str(caught.value)
    assert isinstance(caught.value, NetplayError)


def test_a_key_of_another_ca_is_refused(tmp_path):
    one = CertificateAuthority.load_or_create(str(tmp_path / "one"))
    other = CertificateAuthority.load_or_create(str(tmp_path / "other"))
    with open(other.key_path, "rb") as f:
        key = f.read()
    with open(one.key_path, "wb") as f:
        f.write(key)
    with pytest.raises(TlsError, match="does not belong"):
        CertificateAuthority.load_or_create(str(tmp_path / "one"))


def test_an_expired_ca_is_refused(tmp_path):
    made = CertificateAuthority.load_or_create(str(tmp_path / "ca"))
    now = datetime.datetime.now(datetime.timezone.utc)
    old = (
        x509.CertificateBuilder()
        .subject_name(made.certificate.subject)
        .issuer_name(made.certificate.subject)
        .public_key(made.key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=30))
        .not_valid_after(now - datetime.timedelta(days=1))
        .sign(made.key, hashes.SHA256())
    )
    with open(made.cert_path, "wb") as f:
        f.write(old.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(TlsError, match="expired") as caught:
        CertificateAuthority.load_or_create(str(tmp_path / "ca"))
    assert made.cert_path in str(caught.value)


def test_a_directory_that_cannot_be_made_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(TlsError, match="NETPLAY_CA_DIR") as caught:
        CertificateAuthority.load_or_create(str(blocker / "ca"))
    assert str(blocker) in str(caught.value)


def test_leaves_carry_the_right_kind_of_name_and_are_cached(authority):
    dns = x509.load_pem_x509_certificate(authority.leaf("API.Example.test.").cert_pem)
    names = dns.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["api.example.test"]
    assert dns.issuer == authority.certificate.subject
    ip = x509.load_pem_x509_certificate(authority.leaf("10.0.0.1").cert_pem)
    names = ip.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.1")]
    assert names.get_values_for_type(x509.DNSName) == []
    assert authority.leaf("api.example.test") is authority.leaf("API.EXAMPLE.TEST")
    assert authority.server_context("x.test", ("h2",)) is authority.server_context("X.test", ["h2"])


@pytest.mark.parametrize("name", ["", "a b", "-" * 64 + ".test", "x..y", "ex/ample"])
def test_names_that_are_not_host_names_are_refused(name):
    with pytest.raises(TlsError, match="not a host name"):
        normalize_name(name)


@pytest.mark.parametrize("name", ["server.test", "db", "fd00::1", "10.1.2.3"])
def test_a_client_trusting_the_ca_accepts_its_leaves(authority, name):
    client = handshake(authority.server_context(name), authority.client_context(), server_hostname=name)
    kind, value = client.getpeercert()["subjectAltName"][0]
    if kind == "IP Address":
        assert ipaddress.ip_address(value.strip()) == ipaddress.ip_address(name)
    else:
        assert (kind, value) == ("DNS", name)


def test_a_leaf_for_one_name_does_not_pass_for_another(authority):
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch|IP address mismatch"):
        handshake(
            authority.server_context("one.test"), authority.client_context(), server_hostname="two.test"
        )


def test_a_client_trusting_only_the_system_refuses_the_leaf(authority):
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer|self.signed"):
        handshake(
            authority.server_context("one.test"), ssl.create_default_context(), server_hostname="one.test"
        )


def test_no_file_is_left_when_contexts_are_made(authority, tmp_path, monkeypatch):
    monkeypatch.setattr(tls_authority.tempfile, "tempdir", str(tmp_path))
    before = set(os.listdir(authority.directory))
    authority.server_context("fresh-name.test")
    assert set(os.listdir(authority.directory)) == before
    assert os.listdir(tmp_path) == []
    assert not [fd for fd in os.listdir("/proc/self/fd") if "netplay-leaf" in _link(fd)]


def _link(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


@pytest.fixture(scope="module")
def authority(tmp_path_factory):
    return CertificateAuthority.load_or_create(str(tmp_path_factory.mktemp("tls") / "ca"))
