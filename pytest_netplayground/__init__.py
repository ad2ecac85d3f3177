"""Net Playground: run networked programs in a sandbox of network namespaces,
record their TCP conversations to cassettes and replay them."""

from __future__ import annotations

__version__ = "0.1.0"

from .core.addressing import ConnectionKey, Endpoint, Subnet
from .errors import (
    CassetteError,
    CassetteFormatError,
    CassetteMissing,
    ConfigError,
    NetplayError,
    NetplayTimeout,
    PermissionProblem,
    SandboxClosed,
    SandboxError,
    SubnetFull,
)

__all__ = [
    "__version__",
    "Sandbox",
    "Host",
    "Process",
    "Subnet",
    "Endpoint",
    "ConnectionKey",
    "NetplayError",
    "ConfigError",
    "SubnetFull",
    "PermissionProblem",
    "SandboxError",
    "SandboxClosed",
    "NetplayTimeout",
    "CassetteError",
    "CassetteFormatError",
    "CassetteMissing",
]


def __getattr__(name: str):
    # The runtime pulls in pyroute2; import it only when a sandbox is wanted.
    if name in ("Sandbox", "Host", "Process"):
        from .runtime import sandbox

        return getattr(sandbox, name)
    raise AttributeError(name)
