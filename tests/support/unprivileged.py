"""Run a function as an unprivileged user, in a forked child of the test process.

The child inherits every module already imported, so it needs no access to the
interpreter's files (which may sit in a directory only root may enter). Before
dropping root it can give itself a private mount namespace in which
``/dev/net/tun`` is replaced by a node of mode 0666, or hidden, without ever
changing the machine's own device.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import shutil
import tempfile
import traceback

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_REC = 16384
MS_PRIVATE = 1 << 18

UID = 54321
GID = 54321

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            None if fstype is None else fstype.encode(),
            ctypes.c_ulong(flags),
            None if data is None else data.encode(),
        ),
        f"mount {source} on {target}",
    )


def _private_tun(mode: str) -> None:
    """In a new mount namespace: /dev/net/tun as a 0666 node ("open"), or gone ("absent").

    A tmpfs is mounted over ``/dev/net`` in that namespace only, so nothing is
    made on any file system the machine keeps.
    """
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount("none", "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", "/dev/net", "tmpfs", 0, "mode=0755")
    if mode == "open":
        node = "/dev/net/tun"
        os.mknod(node, 0o666 | 0o020000, os.makedev(10, 200))
        os.chmod(node, 0o666)


def _drop_all_capabilities() -> None:
    """Empty this process's effective, permitted and inheritable capability sets."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [
            ("effective", ctypes.c_uint32),
            ("permitted", ctypes.c_uint32),
            ("inheritable", ctypes.c_uint32),
        ]

    header = Header(0x20080522, 0)
    data = (Data * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def _limit_user_namespaces() -> None:
    """Become root of a user namespace whose max_user_namespaces is 0, without capabilities.

    Only uid and gid 0 are mapped (as the outside root), the one mapping a
    process may write for itself; the capabilities are then dropped, so the
    sandbox takes its rootless path and meets the limit.
    """
    _check(_libc.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny\n")
    with open("/proc/self/uid_map", "w") as f:
        f.write("0 0 1\n")
    with open("/proc/self/gid_map", "w") as f:
        f.write("0 0 1\n")
    with open("/proc/sys/user/max_user_namespaces", "w") as f:
        f.write("0\n")
    _drop_all_capabilities()


def run_unprivileged(function, *args, tun: str = "open", limit_userns: bool = False):
    """Call ``function(*args)`` as uid/gid 54321 with no capabilities; return its result.

    With ``limit_userns`` it runs instead as a capability-less root of a user
    namespace that may create no further user namespaces.

    An exception in the child is re-raised here with the child's traceback.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_end)
        outcome: tuple
        try:
            if tun != "host":
                _private_tun(tun)
            if limit_userns:
                _limit_user_namespaces()
            else:
                os.setgroups([])
                os.setresgid(GID, GID, GID)
                os.setresuid(UID, UID, UID)
            outcome = ("ok", function(*args))
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            outcome = ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}", exc)
        try:
            data = pickle.dumps(outcome)
        except Exception:  # noqa: BLE001
            data = pickle.dumps(("error", repr(outcome), None))
        with os.fdopen(write_end, "wb") as f:
            f.write(data)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    if not data:
        raise RuntimeError("the unprivileged child died without a word")
    outcome = pickle.loads(data)
    if outcome[0] == "ok":
        return outcome[1]
    error = outcome[2] if len(outcome) > 2 else None
    if isinstance(error, Exception) and not isinstance(error, AssertionError):
        raise error
    raise AssertionError(outcome[1])


@contextlib.contextmanager
def user_dir():
    """A fresh directory the unprivileged user owns (for cassettes and outputs), removed after.

    It is made in the temporary directory, not in pytest's ``tmp_path``: the
    unprivileged user may not enter pytest's directory (mode 0700).
    """
    path = tempfile.mkdtemp(prefix="netplay-rootless-")
    try:
        os.chown(path, UID, GID)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
