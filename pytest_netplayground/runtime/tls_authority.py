"""The sandbox's certificate authority: made once per user, kept on disk, trusted only inside sandboxes.

To read a TLS connection as plaintext the proxy must answer the client as the
server, with a certificate the client accepts. The CA signs such certificates
(leaves) on demand, one per name the clients ask for. Its private key lives in
a directory only its owner can read (0700, key 0600) and is reused by every run,
so a bundle or a browser trusting it keeps working; delete the directory to
rotate it.

Where it lives: the ``directory`` argument, else ``$NETPLAY_CA_DIR``, else
``$XDG_DATA_HOME/netplayground/ca``, else ``~/.local/share/netplayground/ca``.
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import os
import socket
import ssl
import tempfile

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import TlsError

ENV_DIR = "NETPLAY_CA_DIR"
CERT_FILE = "ca.pem"
KEY_FILE = "ca-key.pem"
LOCK_FILE = ".lock"

# Long enough to trust once and forget; short enough that a forgotten copy dies.
CA_DAYS = 3650
# Leaves are minted per run; clients (Apple's, browsers) refuse leaves valid over 398 days.
LEAF_DAYS = 90
# Clock skew between the sandbox and a client's idea of now.
BACKDATE = datetime.timedelta(days=1)


def default_directory() -> str:
    """Where the CA lives when no directory is given (see the module docstring)."""
    chosen = os.environ.get(ENV_DIR)
    if chosen:
        return os.path.abspath(os.path.expanduser(chosen))
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(os.path.abspath(data), "netplayground", "ca")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@attrs.frozen
class Leaf:
    """A certificate for one name, signed by the CA, with its private key (both PEM)."""

    name: str
    cert_pem: bytes
    key_pem: bytes

    @property
    def chain_pem(self) -> bytes:
        """The leaf then the key: what :func:`load_chain` reads."""
        return self.cert_pem + self.key_pem


def normalize_name(name: str) -> str:
    """The form a certificate is minted and cached under: an IP address's canonical text,
    or a lower-case DNS name without its final dot. Raises TlsError on anything else."""
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    text = name.rstrip(".").lower()
    try:
        text = text.encode("idna").decode("ascii") if not text.isascii() else text
    except UnicodeError as exc:
        raise TlsError(f"cannot make a certificate for {name!r}: not a host name or an IP address") from exc
    labels = text.split(".")
    if not text or len(text) > 253 or not all(_label_ok(label) for label in labels):
        raise TlsError(f"cannot make a certificate for {name!r}: not a host name or an IP address")
    return text


def _label_ok(label: str) -> bool:
    return 0 < len(label) <= 63 and all(c.isalnum() or c in "-_" for c in label) and label.isascii()


def load_chain(context: ssl.SSLContext, pem: bytes) -> None:
    """Load a certificate chain and key held in memory into ``context``.

    ``load_cert_chain`` reads only paths, so the PEM goes into an anonymous
    memory file (memfd): it has no name on disk and vanishes when closed.
    """
    fd = os.memfd_create("netplay-leaf", os.MFD_CLOEXEC)
    try:
        os.write(fd, pem)
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot load a certificate into a TLS context: {exc}") from exc
    finally:
        os.close(fd)


@attrs.define
class CertificateAuthority:
    """The CA's key and certificate, and the leaves minted from it in this process.

    Make it with :meth:`load_or_create`. Leaves and server contexts are cached
    per name (and ALPN list): minting costs about a millisecond, a context a bit more.
    """

    directory: str
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey = attrs.field(repr=False)
    _leaf_key: ec.EllipticCurvePrivateKey = attrs.field(init=False, repr=False)
    _leaves: dict[str, Leaf] = attrs.field(init=False, factory=dict, repr=False)
    _servers: dict[tuple, ssl.SSLContext] = attrs.field(init=False, factory=dict, repr=False)

    def __attrs_post_init__(self) -> None:
        # One key for every leaf of this run: the CA's signature is what is trusted, and
        # sharing the key saves a key generation per name.
        self._leaf_key = ec.generate_private_key(ec.SECP256R1())

    # -- on disk ------------------------------------------------------------------

    @property
    def cert_path(self) -> str:
        return os.path.join(self.directory, CERT_FILE)

    @property
    def key_path(self) -> str:
        return os.path.join(self.directory, KEY_FILE)

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def load_or_create(cls, directory: str | None = None) -> "CertificateAuthority":
        """The CA in ``directory`` (see :func:`default_directory`), made there first if absent.

        Concurrent callers (parallel test workers) agree on one CA: creation
        happens under a lock, and each file appears whole (written aside, then renamed).
        """
        directory = os.path.abspath(directory) if directory else default_directory()
        _make_private_directory(directory)
        lock_path = os.path.join(directory, LOCK_FILE)
        try:
            lock = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise TlsError(
                f"cannot open {lock_path} ({exc.strerror}): check the CA directory's owner"
            ) from exc
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            cert_path, key_path = (os.path.join(directory, n) for n in (CERT_FILE, KEY_FILE))
            present = [os.path.lexists(p) for p in (cert_path, key_path)]
            if not any(present):
                key, cert = _new_ca()
                _write_private(
                    key_path,
                    key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    ),
                    0o600,
                )
                _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
                return cls(directory, cert, key)
            if not all(present):
                missing = cert_path if not present[0] else key_path
                raise TlsError(
                    f"the sandbox CA in {directory} is incomplete: {missing} is missing; "
                    f"delete {directory} to make a new CA (and trust the new one where you trusted the old)"
                )
            return cls(directory, *_read_ca(cert_path, key_path))
        finally:
            os.close(lock)

    # -- leaves -------------------------------------------------------------------

    def leaf(self, name: str) -> Leaf:
        """A certificate for ``name`` (a DNS name, as in SNI, or an IP address), cached."""
        name = normalize_name(name)
        leaf = self._leaves.get(name)
        if leaf is None:
            leaf = self._leaves[name] = self._mint(name)
        return leaf

    def _mint(self, name: str) -> Leaf:
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
        except ValueError:
            san = x509.DNSName(name)
        now = _now()
        not_after = min(now + datetime.timedelta(days=LEAF_DAYS), self.certificate.not_valid_after_utc)
        public = self._leaf_key.public_key()
        ca_ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.certificate.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        key_pem = self._leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return Leaf(name, cert.public_bytes(serialization.Encoding.PEM), key_pem)

    # -- contexts -----------------------------------------------------------------

    def server_context(self, name: str, alpn: tuple[str, ...] | list[str] = ()) -> ssl.SSLContext:
        """A server-side context presenting the leaf for ``name`` (cached per name and ALPN list).

        ``alpn``: the protocols to accept, in order of preference; empty: no ALPN.
        """
        key = (normalize_name(name), tuple(alpn))
        context = self._servers.get(key)
        if context is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            load_chain(context, self.leaf(name).chain_pem + self.cert_pem)
            if alpn:
                context.set_alpn_protocols(list(alpn))
            self._servers[key] = context
        return context

    def client_context(self, alpn: tuple[str, ...] | list[str] = ()) -> ssl.SSLContext:
        """A client-side context that trusts this CA (and nothing else), for a test's own code."""
        context = ssl.create_default_context(cadata=self.cert_pem.decode("ascii"))
        if alpn:
            context.set_alpn_protocols(list(alpn))
        return context


def _key_usage(digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _new_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        owner = f"{os.getlogin()}@{socket.gethostname()}"
    except OSError:
        owner = f"uid {os.getuid()}@{socket.gethostname()}"
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Net Playground"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Net Playground sandbox CA ({owner})"[:64]),
        ]
    )
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(digital_signature=True, cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _read_ca(cert_path: str, key_path: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Load and check the stored CA; every failure names the file and the way out."""
    remedy = f"delete {os.path.dirname(cert_path)} to make a new CA (and trust the new one where you trusted the old)"
    try:
        mode = os.stat(key_path).st_mode
        with open(cert_path, "rb") as f:
            cert_data = f.read()
        with open(key_path, "rb") as f:
            key_data = f.read()
    except OSError as exc:
        raise TlsError(f"cannot read the sandbox CA {exc.filename} ({exc.strerror}): {remedy}") from exc
    if mode & 0o077:
        raise TlsError(
            f"the sandbox CA's private key {key_path} is readable by others (mode {mode & 0o777:o}): "
            f"anyone who can read it can impersonate any server to whoever trusts the CA; "
            f"run chmod 600 {key_path} if it was never exposed, else {remedy}"
        )
    try:
        cert = x509.load_pem_x509_certificate(cert_data)
    except ValueError as exc:
        raise TlsError(f"the sandbox CA certificate {cert_path} is corrupt ({exc}): {remedy}") from exc
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError) as exc:
        raise TlsError(f"the sandbox CA key {key_path} is corrupt or encrypted ({exc}): {remedy}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise TlsError(
            f"the sandbox CA key {key_path} does not belong to the certificate {cert_path}: {remedy}"
        )
    if cert.not_valid_after_utc <= _now() + datetime.timedelta(days=1):
        raise TlsError(
            f"the sandbox CA certificate {cert_path} expired (or expires within a day) on "
            f"{cert.not_valid_after_utc:%Y-%m-%d}: {remedy}"
        )
    return cert, key


def _make_private_directory(directory: str) -> None:
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        info = os.stat(directory)
    except OSError as exc:
        raise TlsError(
            f"cannot make the sandbox CA directory {directory} ({exc.strerror}): "
            f"choose another with ${ENV_DIR}"
        ) from exc
    if info.st_uid != os.geteuid():
        raise TlsError(
            f"the sandbox CA directory {directory} belongs to uid {info.st_uid}, not to this user "
            f"(uid {os.geteuid()}): choose a directory of your own with ${ENV_DIR}"
        )
    if info.st_mode & 0o077:
        os.chmod(directory, 0o700)


def _write_private(path: str, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` whole or not at all: a temporary file beside it, then rename."""
    directory = os.path.dirname(path)
    fd, temporary = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(temporary, path)
    except OSError as exc:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise TlsError(
            f"cannot write {path} ({exc.strerror}): choose another directory with ${ENV_DIR}"
        ) from exc
