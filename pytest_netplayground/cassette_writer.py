"""Writing a cassette crash-safely.

A recording goes to ``<path>.partial`` and is renamed onto ``<path>`` only
when it finishes cleanly, so an interrupted or failed run never damages the
cassette a previous run left. Each record reaches the kernel in one unbuffered
write loop, so a killed recorder leaves whole lines and at most one partial
one.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from .core import codec
from .core.codec import encode_data_parts, encode_end, encode_header
from .core.events import Event, Header
from .core.noise import LearnedNoise
from .errors import CassetteError

__all__ = ["CassetteWriter", "io_error", "partial_path_for"]


def partial_path_for(path: str | os.PathLike) -> Path:
    """Where a recording of *path* lives until it is committed."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


def io_error(action: str, path: Path, exc: OSError) -> CassetteError:
    """A failed read or write of a cassette, with the OS reason and what to do about it."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = "free some disk space or record the cassette to another directory"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = f"make {path.parent} writable by this user or record the cassette elsewhere"
    elif exc.errno == errno.ENOENT:
        advice = f"check that {path.parent} exists and is not removed while recording"
    elif exc.errno == errno.EISDIR:
        advice = "a directory is in the way; remove it or choose another cassette path"
    else:
        advice = "check the file system holding the cassette"
    return CassetteError(f"cannot {action} cassette {path}: {reason}; {advice}")


def _fsync_directory(directory: Path) -> None:
    # Makes the rename durable. Some file systems refuse to sync a directory: not worth failing for.
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class CassetteWriter:
    """Writes one recording; only :meth:`commit` makes it the cassette at ``path``.

    Leaving the ``with`` block without committing aborts: the ``.partial``
    file stays for inspection and any existing cassette is untouched.
    """

    def __init__(self, path: str | os.PathLike, header: Header):
        self.path = Path(path)
        self.partial_path = partial_path_for(self.path)
        self._fd: int | None = None
        self._state = "open"
        directory = self.path.parent
        if self.path.is_dir():
            raise CassetteError(
                f"cannot record cassette {self.path}: it is a directory; choose a file name for the cassette"
            )
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CassetteError(
                f"cannot create the cassette directory {directory}: {exc.strerror or exc}; "
                "create it yourself or choose another cassette path"
            ) from exc
        if not os.access(directory, os.W_OK | os.X_OK):
            raise CassetteError(
                f"cannot record cassette {self.path}: directory {directory} is not writable by this user; "
                "make it writable or choose another cassette path"
            )
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        try:
            self._fd = os.open(self.partial_path, flags, 0o666)
        except OSError as exc:
            self._state = "failed"
            raise io_error("create", self.partial_path, exc) from exc
        self._write(encode_header(header))

    @property
    def state(self) -> str:
        """One of ``open``, ``committed``, ``aborted``, ``kept`` or ``failed``."""
        return self._state

    def _write(self, data: bytes) -> None:
        if self._state != "open" or self._fd is None:
            raise CassetteError(
                f"cannot write to cassette {self.partial_path}: the recording is {self._state}"
            )
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            self._fail()
            raise io_error("write", self.partial_path, exc) from exc

    def _fail(self) -> None:
        self._state = "failed"
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError:
                pass

    def _finish_file(self, t_end: float | None) -> None:
        if t_end is not None:
            self._write(encode_end(t_end))
        try:
            os.fsync(self._fd)  # type: ignore[arg-type]
        except OSError as exc:
            self._fail()
            raise io_error("sync", self.partial_path, exc) from exc
        self._close()

    def write(self, event: Event | LearnedNoise) -> None:
        """Append one event (or, after them, a noise record)."""
        self._write(codec.encode_record(event))

    def write_data(self, t: float, conn: int, direction, data) -> None:
        """Append a Data event straight from a buffer, with one ``writev``."""
        parts = encode_data_parts(t, conn, direction, data)
        if len(parts) == 1:
            self._write(parts[0])
            return
        if self._state != "open" or self._fd is None:
            raise CassetteError(
                f"cannot write to cassette {self.partial_path}: the recording is {self._state}"
            )
        total = sum(len(p) for p in parts)
        try:
            written = os.writev(self._fd, parts)
        except OSError as exc:
            self._fail()
            raise io_error("write", self.partial_path, exc) from exc
        if written != total:
            self._write(b"".join(parts)[written:])

    def commit(self, t_end: float) -> Path:
        """Write the end marker and atomically replace ``path`` with the recording."""
        if self._state != "open":
            raise CassetteError(f"cannot commit cassette {self.path}: the recording is {self._state}")
        self._finish_file(t_end)
        try:
            os.replace(self.partial_path, self.path)
        except OSError as exc:
            self._state = "failed"
            raise io_error("replace", self.path, exc) from exc
        self._state = "committed"
        _fsync_directory(self.path.parent)
        return self.path

    def abort(self) -> Path | None:
        """Stop recording, keeping the ``.partial`` file; returns its path (None once committed or kept)."""
        if self._state in ("committed", "kept"):
            return None
        self._close()
        if self._state == "open":
            self._state = "aborted"
        return self.partial_path

    def keep_as(self, other_path: str | os.PathLike, t_end: float | None = None) -> Path:
        """Move the recording to *other_path* instead of ``path``, e.g. beside a good cassette.

        With *t_end*, a still-open recording first gets its end marker, so the
        kept file reads as complete.
        """
        other = Path(other_path)
        if self._state in ("committed", "kept"):
            raise CassetteError(f"cannot keep cassette {self.partial_path}: the recording is {self._state}")
        if self._state == "open":
            self._finish_file(t_end)
            self._state = "aborted"
        try:
            other.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.partial_path, other)
        except OSError as exc:
            raise io_error("keep", other, exc) from exc
        self._state = "kept"
        _fsync_directory(other.parent)
        return other

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._state == "open":
            self.abort()

    def __repr__(self) -> str:
        return f"<CassetteWriter {str(self.path)!r} {self._state}>"
