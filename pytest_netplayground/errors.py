"""One exception hierarchy for everything the product raises on purpose.

Callers catch :class:`NetplayError`; the subclasses say which part failed so
the plugin and the command line can print a message that names the thing and
says what to do.
"""

from __future__ import annotations


class NetplayError(Exception):
    """Base of every error Net Playground raises deliberately."""


class ConfigError(NetplayError, ValueError):
    """A value given by the user (subnet, mode, option) is malformed."""


class SubnetFull(ConfigError):
    """A sandbox was asked for more hosts than its subnet has addresses for."""


class PermissionProblem(NetplayError, PermissionError):
    """The sandbox cannot be built with the privileges this process has."""


class SandboxError(NetplayError):
    """The sandbox failed while running (supervisor died, host missing, ...)."""


class SandboxClosed(SandboxError):
    """An operation was attempted on a sandbox that is already torn down."""


class NetplayTimeout(NetplayError, TimeoutError):
    """Something the caller waited for did not happen in time."""


class CassetteError(NetplayError):
    """A cassette cannot be read or written."""


class CassetteFormatError(CassetteError):
    """A cassette is corrupt, truncated or of an unknown version.

    ``path`` and ``offset`` locate the problem so the message can name them.
    """

    def __init__(self, message: str, *, path: str | None = None, offset: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if offset is not None:
                where += f" at byte {offset}"
            where += ": "
        elif offset is not None:
            where = f"at byte {offset}: "
        super().__init__(where + message)
        self.path = path
        self.offset = offset
        self.reason = message

    def __reduce__(self):
        # Keep path and offset when the error crosses the control channel.
        return (_restore_format_error, (self.reason, self.path, self.offset))


def _restore_format_error(reason: str, path: str | None, offset: int | None) -> "CassetteFormatError":
    return CassetteFormatError(reason, path=path, offset=offset)


class CassetteMissing(CassetteError, FileNotFoundError):
    """Replay was asked for but the cassette file does not exist."""


class TlsError(NetplayError):
    """TLS failed: the sandbox CA cannot be read or made, or a handshake or record went wrong.

    The message names the file or the peer and says what to do.
    """


class TlsUntrusted(TlsError):
    """A TLS client aborted the handshake because it does not trust the sandbox CA.

    ``alert`` is the TLS alert it sent (``unknown_ca``, ``bad_certificate``, ...).
    """

    def __init__(self, message: str, *, alert: str | None = None):
        super().__init__(message)
        self.alert = alert

    def __reduce__(self):
        return (_restore_untrusted, (str(self), self.alert))


def _restore_untrusted(message: str, alert: str | None) -> "TlsUntrusted":
    return TlsUntrusted(message, alert=alert)


class CommandNotFound(SandboxError, FileNotFoundError):
    """A command to run in a host does not exist (or is not executable)."""


class CaptureError(NetplayError):
    """A packet capture cannot be imported: missing, not a capture, corrupt or cut short.

    The message names the file and, where it is known, the byte offset.
    """


class AgentError(SandboxError):
    """A remote host's agent cannot be reached, refuses a request, or went away.

    The message names the agent and its address, and says what to do.
    """


class AgentLost(AgentError):
    """An agent (or its machine) went away while its hosts were running."""


class TunnelError(NetplayError):
    """The tunnel to a remote agent failed: its key, its handshake or a message on it.

    ``reply`` holds bytes to write to the peer before closing the control stream
    (a rejection the peer turns into the same clear error); it is empty when there
    is nothing to tell.
    """

    def __init__(self, message: str, *, reply: bytes = b""):
        super().__init__(message)
        self.reply = reply

    def __reduce__(self):
        return (_restore_tunnel_error, (type(self), str(self), self.reply))


def _restore_tunnel_error(cls: type, message: str, reply: bytes) -> "TunnelError":
    return cls(message, reply=reply)


class TunnelKeyError(TunnelError, ConfigError):
    """A tunnel key file is missing, unreadable, malformed or readable by others."""


class TunnelKeyMismatch(TunnelError):
    """The two ends of a tunnel hold different keys (found during the handshake, on both ends)."""


class TunnelAuthError(TunnelError):
    """A control message failed authentication: forged, damaged or out of order; the stream must close."""


class TunnelProtocolError(TunnelError):
    """The peer does not speak the tunnel protocol (garbage, another version, an unexpected message)."""
