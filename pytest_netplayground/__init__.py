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
    "drive",
    "drive_hosts",
    "DriveOptions",
    "DriveReport",
]


def __getattr__(name: str):
    # The runtime pulls in pyroute2; import it only when a sandbox is wanted.
    if name in ("Sandbox", "Host", "Process"):
        from .runtime import sandbox

        return getattr(sandbox, name)
    if name in ("drive", "drive_hosts"):
        from .runtime import drive

        return getattr(drive, name)
    if name in ("DriveOptions", "DriveReport"):
        from .core import drive_plan, drive_report

        return getattr(drive_plan if name == "DriveOptions" else drive_report, name)
    raise AttributeError(name)
