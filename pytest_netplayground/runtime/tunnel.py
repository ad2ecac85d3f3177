"""The tunnel's crypto as the runtime uses it, and what a sandbox needs to reach its agents.

The one place the runtime imports the sans-io crypto from, so the agent and
the supervisor always agree on it.
"""

from __future__ import annotations

import os

from ..core.tunnel_crypto import Handshake  # noqa: F401
from ..errors import TunnelError, TunnelKeyMismatch  # noqa: F401
from .keyfile import read_key_file, write_key_file  # noqa: F401


def agent_options(
    agents: object, key_file: object, insecure_plaintext: bool = False, tunnel_mtu: object = None
) -> dict | None:
    """What the supervisor needs to reach ``agents`` (``{name: "ADDR:PORT"}``): their addresses, the key,
    and whether the tunnel carries packets in clear (authenticated still; for debugging).

    Checked in the caller, so a bad address or key file fails before any sandbox is built.
    """
    from ..core.agent_protocol import parse_agents
    from ..core.agent_protocol import tunnel_mtu as to_tunnel_mtu
    from ..errors import ConfigError

    addresses = parse_agents(agents)
    if not addresses:
        return None
    if key_file is None:
        raise ConfigError(
            "remote hosts need the tunnel's shared key: give key_file (--key-file), the file the agent uses"
        )
    key = read_key_file(os.fspath(key_file))
    return {
        "addresses": addresses,
        "key": key,
        "plaintext": bool(insecure_plaintext),
        "tunnel_mtu": to_tunnel_mtu(tunnel_mtu),
    }
