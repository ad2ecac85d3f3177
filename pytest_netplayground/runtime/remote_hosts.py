"""Hosts on other machines, as the supervisor keeps them: its agents, and processes that span both.

The supervisor connects to every agent before it leaves the machine's network
namespace (:func:`connect`); a remote host then gets its address and index
like any other, and the router a descriptor to use as its TUN.
:class:`RemoteProcesses` answers for processes in remote hosts where the
local :class:`Processes` answers for local ones, so the proxy, the session and
the control requests need not know which is which.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

import attrs

from ..core import agent_protocol as proto
from ..errors import AgentError, ConfigError, SandboxError
from .control import Spawn
from .loop import Loop
from .processes import Processes

if TYPE_CHECKING:
    from .agent_link import AgentLink


@attrs.define(eq=False)
class Agents:
    """The sandbox's agents by name, and which of them holds each remote host (by index)."""

    links: dict[str, "AgentLink"] = attrs.field(factory=dict)
    by_host: dict[int, "AgentLink"] = attrs.field(factory=dict)
    #: What takes each remote host's packets straight into its tunnel (the router's fast path).
    senders: dict[int, Callable] = attrs.field(factory=dict)

    def __bool__(self) -> bool:
        return bool(self.links)

    def attach(self, loop: Loop, on_exit) -> None:
        for link in self.links.values():
            link.attach(loop, on_exit)

    def link(self, name: str) -> "AgentLink":
        try:
            return self.links[name]
        except KeyError:
            known = ", ".join(sorted(self.links)) or "none"
            raise ConfigError(f"no agent {name!r} in this sandbox (agents: {known})") from None

    def add_host(self, on: str, index: int, name: str, address: str, address6, prefixes, hosts: str) -> int:
        link = self.link(on)
        fd = link.add_host(index, name, address, address6, prefixes, hosts)
        self.by_host[index] = link
        self.senders[index] = link.tunnel.send_packet
        return fd

    def hosts_changed(self, text: str) -> None:
        for link in self.links.values():
            link.hosts_changed(text)

    def stop(self, loop: Loop, signum: int, grace: float, local_stop) -> None:
        """Ask every agent to stop its processes, stop the local ones meanwhile, then wait for the agents."""
        for link in self.links.values():
            link.ask_close(signum, grace)
        local_stop()
        deadline = time.monotonic() + grace + proto.DEAD_AFTER
        while time.monotonic() < deadline and any(
            not link.closed and link.error is None for link in self.links.values()
        ):
            loop.run_once(0.05)
        for link in self.links.values():
            link.finish()

    def cassette_action(self, action: object) -> object:
        """A recording whose agent went away is kept as a partial cassette, never committed."""
        if self.lost() is not None and action != "discard":
            return "abort"
        return action

    def lost(self) -> AgentError | None:
        for link in self.links.values():
            if link.error is not None:
                return link.error
        return None

    def report(self, result: dict) -> dict:
        error = self.lost()
        dropped = {
            f"tunnel {name}: {reason}": count
            for name, link in self.links.items()
            for reason, count in {**link.datagrams.dropped, **link.report.get("dropped", {})}.items()
        }
        if error is not None and result.get("error") is None:
            result = {**result, "error": error}
        return {**result, "tunnel_dropped": dropped}


def connect(options: dict | None) -> Agents:
    """Connect to the agents of ``options`` (``{"addresses": {name: AgentAddress}, "key": bytes,
    "plaintext": bool, "tunnel_mtu": int | None}``)."""
    agents = Agents()
    if not options:
        return agents
    from .agent_link import AgentLink  # the crypto is imported only by sandboxes with agents

    try:
        for name, address in options["addresses"].items():
            agents.links[name] = AgentLink(
                address, options["key"], options.get("plaintext", False), options.get("tunnel_mtu")
            )
    except BaseException:
        for link in agents.links.values():
            link.stream.sock.close()
        raise
    return agents


@attrs.define(eq=False)
class RemoteProcesses(Processes):
    """:class:`Processes` that also answers for processes in remote hosts (see the module docstring)."""

    agents: Agents = attrs.field(kw_only=True, factory=Agents)

    def spawn(self, request: Spawn):
        link = self.agents.by_host.get(request.host)
        if link is None:
            return super().spawn(request)
        self.inhabited.setdefault(request.host, time.monotonic())
        child, to_caller = link.spawn(request)
        self.note_command(request.host, list(request.argv))
        return child, to_caller

    def signal(self, pid: int, signum: int, group: bool) -> None:
        if pid <= proto.REMOTE_PID_BASE:
            return super().signal(pid, signum, group)
        for link in self.agents.links.values():
            link.signal(pid, signum, group)

    def busy(self, host: int) -> bool:
        link = self.agents.by_host.get(host)
        return super().busy(host) if link is None else link.busy(host)

    def listening(self, host: int, port: int) -> bool:
        link = self.agents.by_host.get(host)
        return super().listening(host, port) if link is None else link.listening(host, port)

    def udp_bound(self, host: int | None, port: int) -> bool:
        link = self.agents.by_host.get(host)
        if link is None:
            return super().udp_bound(host, port)
        try:
            return link.listening(host, port, "udp")
        except AgentError:
            return False

    def make_socket(self, host: int, family: int, type_: int):
        link = self.agents.by_host.get(host)
        if link is None:
            return super().make_socket(host, family, type_)
        raise SandboxError(
            f"host {self.network.host_names[host]} lives on agent {link.address}: a socket made there cannot "
            "come to this machine; spawn a process in it instead"
        )

    def stop(self, kill_signal: int, grace: float) -> None:
        local = super().stop
        self.agents.stop(self.loop, kill_signal, grace, lambda: local(kill_signal, grace))
