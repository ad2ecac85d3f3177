"""Tunnel key files on disk: made once with mode 0600, never overwritten, read only if private.

The key lets whoever holds it inject packets into a sandbox and run commands on
an agent's machine, so a new file is created exclusively (an existing one, even
a symlink, is left alone) and a file that others can read is refused, as ssh
refuses a private key that is.
"""

from __future__ import annotations

import os
import stat

from ..core.tunnel_crypto import make_key_text, parse_key
from ..errors import TunnelKeyError

__all__ = ["read_key_file", "write_key_file"]


def write_key_file(path: str | os.PathLike) -> str:
    """Write a fresh key to ``path`` (mode 0600); refuse if anything is there already. Returns the path."""
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError as exc:
        raise TunnelKeyError(
            f"{path} exists already: a key file is never overwritten (remove it first if you mean to "
            "replace the key, and copy the new one to every machine)"
        ) from exc
    except OSError as exc:
        raise TunnelKeyError(f"cannot create the key file {path}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, make_key_text())
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        os.unlink(path)
        raise TunnelKeyError(f"cannot write the key file {path}: {exc.strerror}") from exc
    os.close(fd)
    return path


def read_key_file(path: str | os.PathLike, *, require_private: bool = True) -> bytes:
    """The 32-byte key in ``path``; refuses a file group or others may read unless ``require_private`` is off."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            text = handle.read(64 << 10)
    except FileNotFoundError as exc:
        raise TunnelKeyError(
            f"the key file {path} does not exist: make one with `netplay agent --make-key {path}` "
            "and copy it to both machines"
        ) from exc
    except OSError as exc:
        raise TunnelKeyError(f"cannot read the key file {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(mode):
        raise TunnelKeyError(f"the key file {path} is not a regular file")
    if require_private and mode & 0o077:
        raise TunnelKeyError(
            f"the key file {path} can be read by others (mode {stat.S_IMODE(mode):04o}): "
            f"run `chmod 600 {path}`"
        )
    return parse_key(text, path)
