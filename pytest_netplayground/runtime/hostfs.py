"""What a host's processes see of the machine: its own names, else the machine's file system.

Each host gets a mount namespace and a UTS namespace, made inside the
sandbox's user namespace (so this works rootless too). In its mount namespace
``/etc/hosts`` (every host's name and address), ``/etc/hostname`` and, when the
machine's does not look in files first, ``/etc/nsswitch.conf`` are bind mounts
of files that have no name on disk (they are mounted, then unlinked, so
nothing is left even if the supervisor is killed); everything else is the
machine's. Propagation goes one way only (slave mounts): what the machine
mounts later under a shared mount reaches the hosts too, nothing mounted in
the sandbox ever reaches the machine.

All hosts share one hosts file. A host added later appends its line to that
same file (same inode), so the bind mounts of hosts made before see it at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import tempfile

from ..core.names import nsswitch_text
from ..errors import PermissionProblem, SandboxError
from . import netns

MS_BIND = 4096
MS_REC = 16384
MS_SLAVE = 1 << 19

HOSTS = "/etc/hosts"
HOSTNAME = "/etc/hostname"
NSSWITCH = "/etc/nsswitch.conf"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def _fail(what: str) -> None:
    err = ctypes.get_errno()
    exc = OSError(err, os.strerror(err))
    if err in (errno.EPERM, errno.EACCES):
        raise PermissionProblem(
            f"{what} was not permitted ({os.strerror(err)}): each host has a mount namespace of its own "
            "for its names (/etc/hosts, /etc/hostname); where namespaces work but a security profile "
            "(AppArmor, seccomp, a container's) forbids mount, allow mount in user namespaces"
        ) from exc
    raise SandboxError(f"{what} failed: {os.strerror(err)}") from exc


def _mount(source: str, target: str, flags: int) -> None:
    if _libc.mount(source.encode(), target.encode(), None, flags, None) != 0:
        _fail(f"mounting {source} on {target}")


def _bind_text(text: str | bytes, target: str, keep: bool = False) -> int:
    """Mount a file holding ``text`` over ``target`` (if that exists) in the current
    mount namespace, then remove the file's name: nothing is left on disk, even
    if the supervisor is killed. With ``keep``, returns a descriptor to rewrite it."""
    try:
        directory = tempfile.mkdtemp(prefix="netplay-names-")
    except OSError as exc:
        raise SandboxError(
            f"cannot make the hosts' files in {tempfile.gettempdir()} ({exc.strerror}): "
            "set TMPDIR to a directory this user may write"
        ) from exc
    try:
        path = os.path.join(directory, os.path.basename(target))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        os.fchmod(fd, 0o644)
        data = text.encode() if isinstance(text, str) else text
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if os.path.isfile(target):
            _mount(path, target, MS_BIND)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if keep:
        return fd
    os.close(fd)
    return -1


def _own_ns(kind: str) -> int:
    return os.open(f"/proc/thread-self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # the directory was removed: "/" will do
        return None


def _chdir(path: str | None) -> None:
    if path is not None:
        try:
            os.chdir(path)
        except OSError:
            pass


class HostFiles:
    """The mount and UTS namespaces of the sandbox's hosts and the files they show.

    Built lazily at the first host: a sandbox that never adds one costs
    nothing. Call :meth:`close` at teardown to let its files go. ``files``: more
    files every host sees, path to contents (e.g. a CA bundle that trusts the
    sandbox CA, see :mod:`tls_trust`); a path that does not exist is left alone.
    """

    def __init__(self, files: dict[str, str | bytes] | None = None) -> None:
        self.files = dict(files or {})
        self.home: tuple[int, int] | None = None
        self.hosts_fd = -1
        self.namespaces: list[tuple[int, int]] = []

    def _start(self) -> None:
        """Give the supervisor mount and UTS namespaces of its own, to come back to.

        The machine's namespaces belong to a user namespace the supervisor has
        no power in, so it could not ``setns`` back into them after entering a
        host's; its own copies, made here, it can.
        """
        netns.unshare(netns.CLONE_NEWNS | netns.CLONE_NEWUTS)
        _mount("none", "/", MS_REC | MS_SLAVE)
        # Mounted over the supervisor's own files, these are copied into every
        # host's mount namespace made after; their names are gone at once.
        self.hosts_fd = _bind_text("", HOSTS, keep=True)
        try:
            with open(NSSWITCH) as f:
                nsswitch = nsswitch_text(f.read())
        except OSError:
            nsswitch = None  # no file: nothing to mount over, and glibc's default reads files too
        if nsswitch is not None:
            _bind_text(nsswitch, NSSWITCH)
        for path, contents in self.files.items():
            _bind_text(contents, path)
        self.home = (_own_ns("mnt"), _own_ns("uts"))

    def set_hosts(self, text: str) -> None:
        """Make the shared hosts file say ``text``, in place, so every host's mount sees it."""
        data = text.encode()
        os.pwrite(self.hosts_fd, data, 0)
        os.ftruncate(self.hosts_fd, len(data))

    def add(self, name: str, hosts_text: str) -> None:
        """Make the next host's namespaces: its name, and ``hosts_text`` as everyone's /etc/hosts."""
        if self.home is None:
            self._start()
        self.set_hosts(hosts_text)
        cwd = _cwd()
        netns.unshare(netns.CLONE_NEWNS | netns.CLONE_NEWUTS)
        try:
            _bind_text(name + "\n", HOSTNAME)
            encoded = name.encode()
            if _libc.sethostname(encoded, len(encoded)) != 0:
                _fail(f"setting the host name {name!r}")
            self.namespaces.append((_own_ns("mnt"), _own_ns("uts")))
        finally:
            self._go_home(cwd)

    def _go_home(self, cwd: str | None) -> None:
        netns.setns(self.home[0], netns.CLONE_NEWNS)
        netns.setns(self.home[1], netns.CLONE_NEWUTS)
        _chdir(cwd)

    @contextlib.contextmanager
    def entered(self, index: int):
        """Run the body in host ``index``'s mount and UTS namespaces (in the same directory)."""
        mnt, uts = self.namespaces[index]
        cwd = _cwd()
        netns.setns(mnt, netns.CLONE_NEWNS)
        try:
            netns.setns(uts, netns.CLONE_NEWUTS)
            _chdir(cwd)
            yield
        finally:
            self._go_home(cwd)

    def close(self) -> None:
        for fd in [fd for pair in self.namespaces for fd in pair] + list(self.home or ()):
            os.close(fd)
        self.namespaces.clear()
        self.home = None
        if self.hosts_fd >= 0:
            os.close(self.hosts_fd)
            self.hosts_fd = -1
