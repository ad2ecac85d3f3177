"""Anonymous network namespaces and TUN devices, made from inside the supervisor.

A namespace is created with ``unshare(CLONE_NEWNET)`` and kept alive only by a
file descriptor the supervisor holds (no ``/run/netns`` entry), so it vanishes
with the supervisor and its children whatever way they die. Sockets, TUN
devices and netlink sockets belong to the namespace that was current when they
were made; :func:`entered` switches the calling thread there and back.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import struct

from ..errors import PermissionProblem, SandboxError

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWUTS = 0x04000000

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4

# Large MTU: TCP then moves ~64 KiB segments through the router instead of
# 1.5 KiB ones, which is worth about 10x in throughput.
TUN_MTU = 65000
# Packets a TUN holds for the supervisor before the kernel drops them (500 by
# default: a 25 ms pause of the supervisor at 20000 packets/s). Dropped SYNs
# cost the client a second or more, so a busy moment would snowball.
TUN_QUEUE = 10000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

NEEDS = (
    "the sandbox needs CAP_SYS_ADMIN and CAP_NET_ADMIN to make namespaces and TUN devices: "
    "run as root (see 'Privileges' in the README)"
)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        exc = OSError(err, os.strerror(err))
        if err in (errno.EPERM, errno.EACCES):
            raise PermissionProblem(f"{what} was not permitted ({os.strerror(err)}): {NEEDS}") from exc
        raise SandboxError(f"{what} failed: {os.strerror(err)}") from exc


_WHAT = {
    CLONE_NEWNET: "creating a network namespace",
    CLONE_NEWPID: "creating a PID namespace",
    CLONE_NEWUSER: "creating a user namespace",
    CLONE_NEWNS | CLONE_NEWUTS: "creating a mount and a UTS namespace",
}


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), _WHAT.get(flags, f"unshare({flags:#x})"))


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    _check(_libc.setns(fd, nstype), "setns")


CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21


def has_capabilities() -> bool:
    """Whether this process may make namespaces and TUN devices itself (root, or the like)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    caps = int(line.split()[1], 16)
                    return bool(caps & (1 << CAP_SYS_ADMIN)) and bool(caps & (1 << CAP_NET_ADMIN))
    except OSError:
        pass
    return os.geteuid() == 0


def _read_sysctl(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def userns_blockers() -> list[str]:
    """The sysctls that forbid unprivileged user namespaces here, as ``name = value``."""
    found = []
    if _read_sysctl("/proc/sys/user/max_user_namespaces") == "0":
        found.append("user.max_user_namespaces = 0")
    if _read_sysctl("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        found.append("kernel.unprivileged_userns_clone = 0")
    if _read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        found.append("kernel.apparmor_restrict_unprivileged_userns = 1")
    return found


ROOTLESS_HELP = (
    "unprivileged user namespaces must be allowed: check with 'unshare --user --map-current-user true'; "
    "enable them with 'sysctl -w user.max_user_namespaces=15000' (and, where these exist, "
    "'kernel.unprivileged_userns_clone=1', 'kernel.apparmor_restrict_unprivileged_userns=0'), or run as root"
)


def enter_user_namespace() -> None:
    """Become the owner of a new user namespace, mapped to our own uid and gid.

    Inside it this process may make network and PID namespaces and TUN
    devices; the programs it starts run as the same user, so what they write
    belongs to that user outside too.
    """
    uid, gid = os.geteuid(), os.getegid()
    # /proc/self/*_map belong to root unless the process is dumpable, which a
    # process that changed its uid is not by default.
    _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    if _libc.unshare(CLONE_NEWUSER) != 0:
        err = ctypes.get_errno()
        exc = OSError(err, os.strerror(err))
        blockers = userns_blockers()
        why = f" ({', '.join(blockers)})" if blockers else ""
        if err == errno.ENOSPC and not blockers:
            why = " (the user namespace limit is reached: user.max_user_namespaces)"
        raise PermissionProblem(
            f"this user may not create a user namespace{why}: {os.strerror(err)}; "
            f"running without root needs it: {ROOTLESS_HELP}"
        ) from exc
    try:
        for name, value in (
            ("setgroups", "deny"),
            ("uid_map", f"{uid} {uid} 1"),
            ("gid_map", f"{gid} {gid} 1"),
        ):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(value + "\n")
    except OSError as exc:
        if uid == 0:
            raise PermissionProblem(
                f"this process is root but lacks CAP_SYS_ADMIN and CAP_NET_ADMIN ({exc.strerror} mapping uid 0 "
                "into a user namespace): grant it those capabilities (a privileged container), or run "
                "as an ordinary user where unprivileged user namespaces are allowed"
            ) from exc
        raise PermissionProblem(
            f"mapping uid {uid} and gid {gid} into a new user namespace failed ({exc.strerror}); "
            f"{ROOTLESS_HELP}"
        ) from exc


def set_parent_death_signal(signum: int) -> None:
    """Ask the kernel to send ``signum`` to this process when its parent dies."""
    _libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)


M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def keep_large_allocations() -> None:
    """Let malloc reuse freed 256 KiB buffers instead of mapping fresh pages each time.

    The supervisor makes and drops a few such buffers per chunk it records or
    replays; with glibc's defaults each one is a new mmap whose page faults
    cost more than encoding the chunk.
    """
    try:
        _libc.mallopt(M_MMAP_THRESHOLD, 64 << 20)
        _libc.mallopt(M_TRIM_THRESHOLD, 256 << 20)
    except AttributeError:  # not glibc
        pass


def current_netns() -> int:
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


#: IPv6 settings of every new namespace, before any interface is made: no
#: duplicate address detection (a TUN has no other end to collide with, and
#: addresses are usable at once), no link-local addresses, router
#: solicitations or autoconfiguration (nothing answers them on a TUN).
IPV6_SYSCTLS = (
    ("disable_ipv6", "0"),
    ("accept_dad", "0"),
    ("dad_transmits", "0"),
    ("addr_gen_mode", "1"),
    ("router_solicitations", "0"),
    ("accept_ra", "0"),
    ("autoconf", "0"),
)


def new_netns() -> int:
    """Create a namespace (IPv6 quiet: see IPV6_SYSCTLS), enter it, and return a descriptor that keeps it alive."""
    unshare(CLONE_NEWNET)
    for conf in ("default", "all"):
        for name, value in IPV6_SYSCTLS:
            write_sysctl(f"/proc/sys/net/ipv6/conf/{conf}/{name}", value)
    return current_netns()


@contextlib.contextmanager
def entered(ns_fd: int, home_fd: int):
    """Run the body inside namespace ``ns_fd``, then go back to ``home_fd``."""
    setns(ns_fd)
    try:
        yield
    finally:
        setns(home_fd)


def open_tun(name: str) -> int:
    """Create a TUN device (no packet info header) in the current namespace."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise SandboxError(
            "/dev/net/tun does not exist: load the tun module (modprobe tun) "
            "or, in a container, pass the device through (--device /dev/net/tun)"
        ) from exc
    except PermissionError as exc:
        raise PermissionProblem(
            f"/dev/net/tun is not accessible to uid {os.geteuid()} ({exc.strerror}): the sandbox needs read "
            "and write access to it; most distributions make it mode 0666 (ls -l /dev/net/tun), "
            "or run as root"
        ) from exc
    try:
        ifr = struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI)
        fcntl.ioctl(fd, TUNSETIFF, ifr)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EPERM, errno.EACCES):
            raise PermissionProblem(f"creating TUN device {name!r} failed: {exc.strerror}; {NEEDS}") from exc
        raise SandboxError(f"creating TUN device {name!r} failed: {exc.strerror}") from exc
    return fd


def write_sysctl(path: str, value: str) -> None:
    """Set a per-namespace sysctl (``/proc/sys/net/...``) of the current namespace."""
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError:
        pass  # an optional tuning; the sandbox works without it


def _bring_up(ipr, tun_name: str, mtu: int = TUN_MTU) -> tuple[int, int]:
    """Bring up ``lo`` and the TUN (large MTU unless told, long queue); their interface indexes."""
    lo = ipr.link_lookup(ifname="lo")[0]
    ipr.link("set", index=lo, state="up")
    idx = ipr.link_lookup(ifname=tun_name)[0]
    ipr.link("set", index=idx, mtu=mtu, txqlen=TUN_QUEUE, state="up")
    return lo, idx


IFA_F_NODAD = 0x02


def configure_host(
    tun_name: str,
    address: str,
    prefixlen: int,
    address6: str | None = None,
    prefixlen6: int = 64,
    mtu: int = TUN_MTU,
) -> None:
    """Bring up ``lo`` and the host's TUN with its addresses (current namespace).

    The IPv6 address comes with its on-link prefix route; a TUN has no
    link layer, so the kernel sends to any address of the prefix without
    neighbour discovery, straight to the router.
    """
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        _, idx = _bring_up(ipr, tun_name, mtu)
        ipr.addr("add", index=idx, address=address, prefixlen=prefixlen)
        if address6 is not None:
            ipr.addr("add", index=idx, address=address6, prefixlen=prefixlen6, flags=IFA_F_NODAD)


def configure_proxy(
    tun_name: str, subnet: str, alias_network: str, subnet6: str | None = None, alias_network6: str | None = None
) -> None:
    """Route the subnets out of the proxy TUN and the alias ranges as local."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        lo, idx = _bring_up(ipr, tun_name)
        ipr.route("add", dst=subnet, oif=idx, scope="link")
        ipr.route("add", dst=alias_network, oif=lo, type="local", table=255, scope="host")
        if subnet6 is not None and alias_network6 is not None:
            ipr.route("add", dst=subnet6, oif=idx)
            ipr.route("add", dst=alias_network6, oif=lo, type="local", table=255)
