"""The supervisor: one process, one thread, one epoll loop per sandbox.

It owns everything the sandbox is made of: the namespaces (held only by its
file descriptors), the TUN devices, the proxy sockets, the child processes.
It lives in the proxy namespace, so every proxy socket it makes is there. The
caller talks to it over the control channel; when that channel reaches EOF
(the caller died) or says ``close``, the supervisor stops the children and
exits, and the kernel reclaims the namespaces.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys
import time
import traceback
from typing import Any, Callable

from ..core.addressing import AddressPlan, pack_ip
from ..core.addressing6 import Subnet6
from ..core.names import NameTable
from ..core.router import Router, Verdict
from ..core.router6 import Router6
from ..errors import NetplayError, SandboxError
from . import control, hostfs, netns, remote_hosts, sessions, tls_interceptor
from .drive_request import Later
from .faults import FaultStage, Never, make_forwarder
from .loop import Loop
from .network import Network
from .outbox import Outbox
from .processes import Processes
from .proxy import Proxy
from .requests import request_handlers
from .shadowing import ShadowBox

HOST_TUN = "eth0"
PROXY_TUN = "netplay0"
# Seconds the shadows' candidates still have to answer once the sandbox closes.
SHADOW_SETTLE = 0.5
_VERDICTS = {value: name for name, value in vars(Verdict).items() if not name.startswith("_")}


def _log_packet(origin: str, packet, verdict: int) -> None:
    """One line on stderr per packet the router saw (``verbose``)."""
    from ..core.describe import describe_packet

    sys.stderr.write(f"netplay: {origin}: {describe_packet(bytes(packet))} -> {_VERDICTS.get(verdict)}\n")


def _packet_sender(router: Router, host_tun: list[int]) -> Callable[[bytes], None]:
    """What writes a packet the session made (replayed UDP) to the host it is addressed to."""

    def send(packet: bytes) -> None:
        target = router.host_of(packet[24:40] if packet[0] >> 4 == 6 else packet[16:20])
        try:
            if target is not None:
                os.write(host_tun[target], packet)
        except OSError:
            router.dropped["write failed"] += 1

    return send


class Supervisor:
    """See the module docstring. Built in the forked child; :meth:`serve` never returns."""

    def __init__(
        self,
        channel: socket.socket,
        subnet: str,
        verbose: bool = False,
        session: dict | None = None,
        rootless: bool = False,
        subnet6: str | None = None,
        tls: dict | None = None,
        faults: dict | None = None,
        agents: dict | None = None,
    ):
        self.channel = channel
        self.plan = AddressPlan(subnet)
        self.subnet6 = Subnet6.parse(subnet6, self.plan.subnet)
        self.router = Router(self.plan, six=Router6(self.subnet6))
        self.verbose = verbose
        self.loop = Loop()
        self.names = NameTable()
        files, environment, interceptor = tls_interceptor.interception(tls, self.loop, self.names.entries)
        self.host_files = hostfs.HostFiles(files)
        self.outbox = Outbox(channel, self.loop, self._control_readable, self._caller_gone)
        self.stopping = False
        self.session = sessions.make_session(session or {}, self.loop, str(self.plan.subnet), str(self.subnet6))
        self.router.udp_tap = self.session.udp_tap
        faults = faults or {}
        self.faults = FaultStage(self.loop, self.router, faults.get("seed", 0), faults.get("specs", ()))
        self.cassette_action: object = "abort"
        self.result: dict = {}
        self.kill_signal = signal.SIGTERM
        self.grace = control.DEFAULT_GRACE
        # Agents are reached from the machine's network namespace, before the proxy's is made.
        self.agents = remote_hosts.connect(agents)
        self.network = self._build_proxy()
        processes = remote_hosts.RemoteProcesses if self.agents else Processes
        self.processes = processes(
            self.loop, self.network, self.host_files, self.session.note_command, self._exited, rootless, environment
        )
        if self.agents:
            self.processes.agents = self.agents
            self.agents.attach(self.loop, self._exited)
        self.proxy = Proxy(
            self.loop, self.plan, self.router, self.network, self.session, self.processes, lambda: self.stopping
        )
        self.proxy.tls = interceptor
        self.session.host_is_empty = self.proxy.host_is_empty
        self.session.udp_bound = lambda end: self.processes.udp_bound(self.router.host_of(pack_ip(end.host)), end.port)
        self.session.send_packet = _packet_sender(self.router, self.network.host_tun)
        self.faults.proxy = self.proxy
        self.proxy.toxics = self.faults.toxics
        self.proxy.shadows = self.shadows = ShadowBox(self.loop, self.plan)
        self.session.fault_state = lambda: (self.faults.table.seed, tuple(self.faults.applied))
        self.faults.forward = make_forwarder(
            self.router, self.network, self.proxy.open_server_leg, self.session.on_datagram, time.monotonic
        )
        proxy_tun = self.network.proxy_tun
        self.loop.watch(proxy_tun, select.EPOLLIN, self._tun_reader(proxy_tun, self.router.from_proxy, "proxy"))
        self.loop.watch(self.channel.fileno(), select.EPOLLIN, self._control_readable)
        self.handlers: dict[type, Callable[[Any], tuple[object, list[int]]]] = {
            **request_handlers(self),
            **self.faults.handlers(),
            **self.shadows.handlers(),
        }
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wakeup_w)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self.loop.watch(self._wakeup_r, select.EPOLLIN, self._drain_wakeup)

    def _caller_gone(self) -> None:
        self.stopping = True

    def _on_sigterm(self, signum, frame) -> None:
        # Our parent died (PR_SET_PDEATHSIG) or someone asked us to stop.
        self.stopping = True
        self.kill_signal = signal.SIGKILL
        self.grace = 0.0

    def _drain_wakeup(self, events: int) -> None:
        with contextlib.suppress(OSError):
            os.read(self._wakeup_r, 4096)

    # -- building ---------------------------------------------------------------

    def _build_proxy(self) -> Network:
        proxy_ns = netns.new_netns()
        netns.write_sysctl("/proc/sys/net/ipv4/tcp_tw_reuse", "1")
        proxy_tun = netns.open_tun(PROXY_TUN)
        netns.configure_proxy(
            PROXY_TUN,
            str(self.plan.subnet),
            str(self.plan.alias_network),
            str(self.subnet6),
            str(self.subnet6.alias_network),
        )
        return Network(proxy_ns, proxy_tun)

    def add_host(self, name: str | None = None, on: str | None = None) -> dict:
        network = self.network
        index = len(network.host_ns)
        address = self.plan.subnet.host_address(index)
        address6 = self.subnet6.host_address(index)
        name = self.names.add(address, name, address6)
        ns = tun = -1
        prefixes = (self.plan.subnet.network.prefixlen, self.subnet6.network.prefixlen)
        try:
            if on is not None:
                tun = self.agents.add_host(on, index, name, address, address6, prefixes, self.names.text())
            else:
                ns = netns.new_netns()
                try:
                    tun = netns.open_tun(HOST_TUN)
                    netns.configure_host(HOST_TUN, address, prefixes[0], address6, prefixes[1])
                finally:
                    netns.setns(network.proxy_ns)
            self.host_files.add(name, self.names.text())
            self.agents.hosts_changed(self.names.text())
        except BaseException:
            self.names.entries.pop()
            for fd in (tun, ns):
                if fd >= 0:
                    os.close(fd)
            raise
        network.host_ns.append(ns)
        network.host_tun.append(tun)
        network.host_names.append(name)
        self.router.add_host(index, address)
        self.router.six.add_host(index, address6)
        self.session.note_host(address, name, address6)
        self.faults.host_added(index, name, address, address6)
        reader = self._tun_reader(tun, self.router.from_host, name, index)
        self.loop.watch(tun, select.EPOLLIN, reader)
        return {"index": index, "address": address, "name": name, "address6": address6}

    # -- the router ---------------------------------------------------------------

    def _tun_reader(self, tun: int, route, origin: str, index: int = -1):
        """The handler that drains one TUN: each packet routed in place, then written on.

        Built once per TUN with everything it needs bound locally: this is the
        per-packet path. A host's packets first pass the fault stage, at the
        cost of one attribute check while no fault is set.
        """
        buf = bytearray(65536)
        view = memoryview(buf)
        readv = os.readv
        write = os.write
        router = self.router
        open_server_leg = self.proxy.open_server_leg
        host_tun = self.network.host_tun
        proxy_tun = self.network.proxy_tun
        to_tunnel = self.agents.senders
        DELIVER, TO_PROXY = Verdict.DELIVER, Verdict.TO_PROXY
        NEW_CONNECTION, REPLY, UDP = Verdict.NEW_CONNECTION, Verdict.REPLY, Verdict.UDP
        on_datagram = self.session.on_datagram
        monotonic = time.monotonic
        faulty = self.faults.table if index >= 0 else Never
        intercept = self.faults.intercept

        def readable(events: int) -> None:
            for _ in range(64):
                try:
                    n = readv(tun, [buf])
                except BlockingIOError:
                    return
                if faulty.active and intercept(index, buf, n):
                    continue
                verdict = route(buf, n)
                if self.verbose:
                    _log_packet(origin, view[:n], verdict)
                try:
                    if verdict == TO_PROXY:
                        write(proxy_tun, view[:n])
                    elif verdict == DELIVER and router.target in to_tunnel:
                        to_tunnel[router.target](view[:n])
                    elif verdict == DELIVER:
                        write(host_tun[router.target], view[:n])
                    elif verdict == NEW_CONNECTION:
                        open_server_leg(router.key)
                    elif verdict == REPLY:
                        write(tun, router.reply)
                    elif verdict == UDP and on_datagram(view[:n], monotonic()):
                        write(host_tun[router.target], view[:n])
                except OSError:
                    router.dropped["write failed"] += 1

        return readable

    # -- control channel ------------------------------------------------------------

    def _exited(self, pid: int, returncode: int) -> None:
        self.outbox.post(("exit", pid, returncode))

    def _control_readable(self, events: int) -> None:
        if events & select.EPOLLOUT:
            self.outbox.flush()
        if not events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
            return
        try:
            message, fds = control.receive(self.channel)
        except (EOFError, ConnectionResetError):
            self.stopping = True
            self.kill_signal = signal.SIGKILL
            return
        except BlockingIOError:
            return
        request_id, op, args = message
        try:
            result, sent = self._dispatch(op, args, fds)
        except NetplayError as exc:
            self.outbox.post(("reply", request_id, False, exc))
            return
        except Exception as exc:  # report, never die on one bad request
            err = SandboxError(f"supervisor failed on {op!r}: {exc!r}\n{traceback.format_exc()}")
            self.outbox.post(("reply", request_id, False, err))
            return
        if isinstance(result, Later):
            result.bind(lambda value: self.outbox.post(("reply", request_id, True, value)))
            return
        self.outbox.post(("reply", request_id, True, result), sent)

    def _dispatch(self, op: str, args: dict, fds: list[int]) -> tuple[object, list[int]]:
        """Act on one request: the reply's value, and descriptors that go with it (closed here once sent)."""
        try:
            request = control.parse(op, args, fds)
        except NetplayError:
            for fd in fds:
                os.close(fd)
            raise
        return self.handlers[type(request)](request)

    # -- the loop and teardown ----------------------------------------------------------

    def serve(self) -> None:
        while not self.stopping:
            self.loop.run_once(None)
        self._teardown()

    def _settle(self, quiet: float = 0.005, limit: float = 0.5) -> None:
        """Move what is still on its way through the router into the pipes.

        Bytes and closes a process sent just before the close request may not
        have been read yet; cutting the pipes at once would drop them from the
        recording or report them missing on replay. Runs the loop until no
        descriptor but the control channel (which may sit at EOF) has been
        ready for ``quiet`` seconds, at most ``limit`` seconds in all.
        """
        channel = self.channel.fileno()
        deadline = time.monotonic() + limit
        last_activity = time.monotonic()
        while self.proxy.pipes:
            now = time.monotonic()
            if now - last_activity >= quiet or now >= deadline:
                return
            ready = self.loop.run_once(quiet - (now - last_activity))
            if any(fd != channel for fd, _ in ready):
                last_activity = time.monotonic()

    def _teardown(self) -> None:
        self.processes.stop(self.kill_signal, self.grace)
        self._settle()
        self.proxy.close()
        shadows = self.shadows.finish(SHADOW_SETTLE)
        result = self.session.finish(self.agents.cassette_action(self.cassette_action))
        self.result = self.agents.report({**result, **tls_interceptor.report(self.proxy.tls), **shadows})
        self.host_files.close()


def run_supervisor(channel: socket.socket, subnet: str, verbose: bool, **extra) -> None:
    """Entry point of the forked supervisor: build, report, serve, exit."""
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        netns.set_parent_death_signal(signal.SIGTERM)
        netns.keep_large_allocations()
        try:
            rootless = not netns.has_capabilities()
            if rootless:
                # Everything below happens inside a user namespace we own.
                netns.enter_user_namespace()
            else:
                # Root too works inside a user namespace of its own (all ids
                # mapped one to one): root in a host then has power over the
                # sandbox's namespaces only, never over the machine's network.
                netns.unshare(netns.CLONE_NEWUSER)
                control.send(channel, ("map_ids",))
                (_, problem), _ = control.receive(channel)
                if problem is not None:
                    raise SandboxError(problem)
            sup = Supervisor(channel, subnet, verbose=verbose, rootless=rootless, **extra)
        except NetplayError as exc:
            control.send(channel, ("ready", False, exc))
            return
        except Exception as exc:
            control.send(channel, ("ready", False, SandboxError(f"building the sandbox failed: {exc!r}")))
            return
        control.send(channel, ("ready", True, None))
        sup.serve()
        try:
            dropped = {**sup.router.dropped, **sup.faults.table.dropped}
            control.send(channel, ("closed", {"dropped": dropped, **sup.result}))
        except OSError:
            pass
    except BaseException:
        code = 1
        traceback.print_exc()
    finally:
        os._exit(code)
