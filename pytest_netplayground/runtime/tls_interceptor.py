"""What every intercepted connection of a sandbox shares: the CA, the contexts toward
the real servers, the clients that refused the CA, and the end-of-run report.

:func:`interception` builds it from the sandbox's TLS settings (with the files
and environment that make every host trust the CA); :class:`Interceptor.wrap`
puts a :class:`~.tls_tap.TlsTap` around each connection's tap.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

import attrs

from ..core.addressing import Endpoint
from .pipes import Pipe, Tap
from .tls_authority import CertificateAuthority
from .tls_bridge import client_context
from .tls_trust import trust_plan


@attrs.define(eq=False)
class Interceptor:
    """What every intercepted connection of a sandbox shares: the CA, the contexts toward real
    servers, the clients that refused the CA, and what to tell at the end of the run.

    ``server_ca``: a CA file the real servers' certificates must verify against; None
    (the default): they are not verified, since they are the test's own servers.
    ``host_name``: the name of the host with an address, for the report.
    """

    authority: CertificateAuthority
    loop: object
    server_ca: str | None = None
    host_name: Callable[[str], str] = lambda address: ""
    untrusted: dict[tuple[str, Endpoint], list] = attrs.field(factory=dict)
    problems: list[str] = attrs.field(factory=list)
    intercepted: int = 0
    _contexts: dict[tuple[str, ...], ssl.SSLContext] = attrs.field(factory=dict, repr=False)

    def wrap(self, inner: Tap, pipe: Pipe, session) -> Tap:
        """``inner``, wrapped to intercept TLS, unless this connection cannot be TLS worth looking at."""
        if not session.expects_tls(pipe.client, pipe.server):
            return inner
        from .tls_tap import TlsTap  # the tap module builds on this one

        return TlsTap(self, inner, session.recorded_alpn(pipe.client, pipe.server))

    def upstream_context(self, alpn: tuple[str, ...]) -> ssl.SSLContext:
        """The client context toward real servers offering ``alpn``, made once per list."""
        context = self._contexts.get(alpn)
        if context is None:
            if self.server_ca is None:
                context = client_context(verify=False, alpn=alpn)
            else:
                context = client_context(cafile=self.server_ca, alpn=alpn)
                context.check_hostname = False  # the name may be an address the certificate does not hold
            self._contexts[alpn] = context
        return context

    def _who(self, address: str) -> str:
        name = self.host_name(address)
        return f"{name} ({address})" if name else address

    def refused(self, client: Endpoint, server: Endpoint, name: str, alert: str | None) -> None:
        """The client at ``client`` refused the sandbox CA's certificate for ``name``."""
        key = (client.host, server)
        if key not in self.untrusted:
            self.untrusted[key] = [name, alert, 0]

    def passed(self, client: Endpoint, server: Endpoint) -> bool:
        """Whether the client refused the CA before: then this connection passes as bytes."""
        entry = self.untrusted.get((client.host, server))
        if entry is None:
            return False
        entry[2] += 1
        return True

    def problem(self, text: str) -> None:
        if text not in self.problems and len(self.problems) < 50:
            self.problems.append(text)

    def report(self) -> list[str]:
        """What a user must know at the end of the run, in plain words."""
        lines = []
        for (client, server), (name, alert, later) in self.untrusted.items():
            why = f"TLS alert {alert}" if alert else "it closed the connection during the handshake"
            after = (
                f"; its {later} later connection{'s' if later != 1 else ''} to {server} passed through "
                "untouched, as TLS bytes"
                if later
                else "; its later connections to that server will pass through untouched, as TLS bytes"
            )
            lines.append(
                f"TLS: client {self._who(client)} refused the sandbox CA's certificate for {name} "
                f"on its connection to {self._who(server.host)} port {server.port} ({why}): it does not "
                "trust the sandbox CA: it pins certificates or uses its own trust store (see docs/tls.rst)"
                + after
            )
        return lines + [f"TLS: {text}" for text in self.problems]


def interception(tls: dict | None, loop, hosts: list) -> tuple[dict, dict, Interceptor | None]:
    """What a sandbox intercepting TLS needs: the files every host sees (a CA bundle that trusts
    the sandbox CA), the variables every process gets, and the interceptor (nothing without ``tls``).

    ``tls``: ``authority`` (the CA) and ``server_ca`` (see :class:`Interceptor`); ``hosts``:
    the name table's (address, name, address6) entries, for the report.
    """
    if tls is None:
        return {}, {}, None
    authority = tls["authority"]
    plan = trust_plan(authority.cert_pem, authority.cert_path)

    def host_name(address: str) -> str:
        return next((name for v4, name, v6 in hosts if address in (v4, v6)), "")

    interceptor = Interceptor(authority, loop, tls.get("server_ca"), host_name=host_name)
    return plan.files(), plan.environment, interceptor


def report(interceptor: Interceptor | None) -> dict:
    """The end-of-run result's part about TLS: ``{"tls": [lines]}``, or nothing."""
    return {} if interceptor is None else {"tls": interceptor.report()}
