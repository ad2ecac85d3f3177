"""Trusting the sandbox CA inside hosts: the bundle, its paths, and a host that verifies a leaf."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from pytest_netplayground.errors import TlsError
from pytest_netplayground.runtime.tls_authority import CertificateAuthority
from pytest_netplayground.runtime.tls_trust import BUNDLE_PATHS, ENVIRONMENT, trust_plan

NEEDS_BUNDLE = pytest.mark.skipif(
    not any(os.path.isfile(p) for p in BUNDLE_PATHS),
    reason="no system CA bundle (apt-get install ca-certificates)",
)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def authority(tmp_path_factory):
    return CertificateAuthority.load_or_create(str(tmp_path_factory.mktemp("tls") / "ca"))


def test_the_bundle_is_the_systems_then_the_ca_over_each_real_file_once(tmp_path, authority):
    system = tmp_path / "debian.crt"
    system.write_bytes(b"-----BEGIN CERTIFICATE-----\nsystem\n-----END CERTIFICATE-----")
    link = tmp_path / "cert.pem"
    link.symlink_to(system)
    other = tmp_path / "fedora.crt"
    other.write_bytes(b"other")
    plan = trust_plan(
        authority.cert_pem, candidates=(str(tmp_path / "absent.crt"), str(system), str(link), str(other))
    )
    assert plan.targets == (str(system), str(other))
    assert plan.bundle.startswith(system.read_bytes() + b"\n")
    assert plan.bundle.endswith(authority.cert_pem)
    assert plan.files() == {str(system): plan.bundle, str(other): plan.bundle}
    assert plan.environment == {name: str(system) for name in ENVIRONMENT}
    assert "SSL_CERT_FILE" in plan.environment and "NODE_EXTRA_CA_CERTS" in plan.environment


def test_without_a_system_bundle_the_variables_name_the_ca_file(tmp_path, authority):
    plan = trust_plan(authority.cert_pem, ca_path=authority.cert_path, candidates=(str(tmp_path / "none"),))
    assert plan.targets == ()
    assert plan.bundle.endswith(authority.cert_pem)
    assert set(plan.environment.values()) == {authority.cert_path}
    assert trust_plan(authority.cert_pem, candidates=()).environment == {}


def test_something_that_is_not_a_certificate_is_refused():
    with pytest.raises(TlsError, match="not a PEM certificate"):
        trust_plan(b"hello")


# A host made the way the supervisor makes them (its own mount namespace, the
# extra files bound over the machine's), running a command inside.
IN_A_HOST = textwrap.dedent(
    """
    import subprocess, sys
    from pytest_netplayground.runtime import hostfs
    from pytest_netplayground.runtime.tls_trust import trust_plan

    plan = trust_plan(open(sys.argv[1], "rb").read())
    files = hostfs.HostFiles(files=plan.files())
    files.add("tlshost", "")
    try:
        with files.entered(0):
            result = subprocess.run(sys.argv[2:])
    finally:
        files.close()
    sys.exit(result.returncode)
    """
)

# Verifies, with the default trust of Python's ssl, a handshake with a server presenting the leaf.
VERIFY_WITH_DEFAULT_TRUST = textwrap.dedent(
    """
    import ssl, sys
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(sys.argv[1], sys.argv[2])
    client = ssl.create_default_context()
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname="web.test")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    try:
        for _ in range(6):
            for side in (c, s):
                try:
                    side.do_handshake()
                except ssl.SSLWantReadError:
                    pass
            s_in.write(c_out.read())
            c_in.write(s_out.read())
    except ssl.SSLCertVerificationError as exc:
        print("refused:", exc.verify_message)
        sys.exit(3)
    print("trusted", c.version())
    """
)


@pytest.fixture
def leaf_files(authority, tmp_path):
    leaf = authority.leaf("web.test")
    (tmp_path / "leaf.pem").write_bytes(leaf.cert_pem)
    (tmp_path / "leaf-key.pem").write_bytes(leaf.key_pem)
    (tmp_path / "ca.pem").write_bytes(authority.cert_pem)
    return tmp_path


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("SSL_CERT_FILE", None)
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, **kwargs)


@pytest.mark.root
@NEEDS_BUNDLE
def test_a_host_trusts_the_sandbox_ca_and_the_machine_does_not(leaf_files):
    leaf, key = str(leaf_files / "leaf.pem"), str(leaf_files / "leaf-key.pem")
    check = [sys.executable, "-c", VERIFY_WITH_DEFAULT_TRUST, leaf, key]
    outside = _run(check)
    assert outside.returncode == 3, outside.stdout + outside.stderr
    inside = _run([sys.executable, "-c", IN_A_HOST, str(leaf_files / "ca.pem"), *check])
    assert inside.returncode == 0, inside.stdout + inside.stderr
    assert inside.stdout.startswith("trusted TLSv1.3")
    # The machine's bundle is as it was.
    assert _run(check).returncode == 3


@pytest.mark.root
@pytest.mark.needs("openssl")
@NEEDS_BUNDLE
def test_openssl_in_a_host_verifies_a_leaf_with_its_default_bundle(leaf_files):
    check = ["openssl", "verify", str(leaf_files / "leaf.pem")]
    assert _run(check).returncode != 0
    inside = _run([sys.executable, "-c", IN_A_HOST, str(leaf_files / "ca.pem"), *check])
    assert inside.returncode == 0, inside.stdout + inside.stderr
    assert "OK" in inside.stdout
