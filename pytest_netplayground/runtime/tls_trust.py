"""What a host needs to trust the sandbox CA: a CA bundle to show at the system's paths, and variables.

Programs find trusted CAs in a bundle file at a path their TLS library was
built with, or in a variable. A host has a mount namespace of its own (see
:mod:`hostfs`), so the bundle it sees can be the machine's plus the sandbox CA,
bound over each of the usual paths that exist here, while the machine's own
file never changes. The variables cover programs that read their own
(Python's requests, Node.js, git, curl builds with a bundle of their own).
"""

from __future__ import annotations

import os

import attrs

from ..errors import TlsError

# The usual places of the system's bundle: Debian/Ubuntu/Alpine/Arch, Fedora/RHEL, the
# file Fedora's links point to, Alpine's and BSD-style cert.pem, openSUSE.
BUNDLE_PATHS = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
)

# Variables naming a CA file, each honoured by some runtime. Not PGSSLROOTCERT: for libpq an
# existing root certificate turns sslmode=require into verify-ca, changing what a test checks.
ENVIRONMENT = (
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
)


@attrs.frozen
class TrustPlan:
    """The bundle each host should see, where, and the variables pointing at it.

    ``targets``: the existing files to bind ``bundle`` over (symbolic links resolved,
    each file once). ``environment``: variable name to the path of a file holding the
    bundle (or, with no system bundle at all, the CA's own certificate file).
    """

    bundle: bytes
    targets: tuple[str, ...]
    environment: dict[str, str] = attrs.field(converter=dict)

    def files(self) -> dict[str, bytes]:
        """Path to contents, as :class:`hostfs.HostFiles` takes them."""
        return {target: self.bundle for target in self.targets}


def trust_plan(
    ca_pem: bytes, ca_path: str | None = None, candidates: tuple[str, ...] = BUNDLE_PATHS
) -> TrustPlan:
    """The machine's bundle (the first candidate that exists) followed by ``ca_pem``.

    ``ca_path``: a file holding the CA certificate that hosts can read, named by the
    variables when the machine has no bundle to bind over.
    """
    if b"-----BEGIN CERTIFICATE-----" not in ca_pem:
        raise TlsError("the sandbox CA to trust is not a PEM certificate")
    targets: list[str] = []
    for candidate in candidates:
        if os.path.isfile(candidate):
            real = os.path.realpath(candidate)
            if real not in targets:
                targets.append(real)
    system = b""
    if targets:
        try:
            with open(targets[0], "rb") as f:
                system = f.read()
        except OSError as exc:
            raise TlsError(f"cannot read the system's CA bundle {targets[0]} ({exc.strerror})") from exc
    if system and not system.endswith(b"\n"):
        system += b"\n"
    bundle = system + b"# Net Playground sandbox CA, trusted only inside the sandbox's hosts\n" + ca_pem
    pointed = targets[0] if targets else ca_path
    environment = {name: pointed for name in ENVIRONMENT} if pointed else {}
    return TrustPlan(bundle, tuple(targets), environment)
