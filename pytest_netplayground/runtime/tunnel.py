"""The tunnel's crypto as the runtime uses it, and reading a key file.

The one place the runtime imports the sans-io crypto from, so the agent and
the supervisor always agree on it.
"""

from __future__ import annotations

from ..core.tunnel_standin import (  # noqa: F401
    DatagramChannel,
    Handshake,
    TunnelKeyError,
    TunnelKeyMismatch,
    make_key_text,
    parse_key,
)


def load_key(path: str) -> bytes:
    """The 32-byte key in ``path``; a :class:`TunnelKeyError` naming the file otherwise."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as exc:
        raise TunnelKeyError(
            f"cannot read the tunnel key file {path} ({exc.strerror}): make one with "
            f"'netplay agent --make-key {path}' and copy it to both machines"
        ) from exc
    return parse_key(text, path)


def agent_options(agents: object, key_file: object) -> dict | None:
    """What the supervisor needs to reach ``agents`` (``{name: "ADDR:PORT"}``): their addresses and the key.

    Checked in the caller, so a bad address or key file fails before any sandbox is built.
    """
    import os

    from ..core.agent_protocol import parse_agents
    from ..errors import ConfigError

    addresses = parse_agents(agents)
    if not addresses:
        return None
    if key_file is None:
        raise ConfigError(
            "remote hosts need the tunnel's shared key: give key_file (--key-file), the file the agent uses"
        )
    return {"addresses": addresses, "key": load_key(os.fspath(key_file))}
