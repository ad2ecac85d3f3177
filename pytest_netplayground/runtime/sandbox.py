"""The Python API: :class:`Sandbox`, :class:`Host` and :class:`Process`.

The caller never enters a namespace. A forked supervisor process builds and
runs the sandbox; this module talks to it over the control channel, and gets
back sockets made inside hosts and the pipes of spawned processes as file
descriptors, so they work here like local ones.
"""

from __future__ import annotations

import os
import signal
import socket
import weakref

import attrs

from ..core import defaults
from ..core.addressing import DEFAULT_SUBNET, Subnet
from ..core.addressing6 import Subnet6
from ..core.divergence import DivergenceReport
from ..core.fault_spec import FaultSpec, fault_specs
from ..core.fault_spec import seed as to_seed
from ..core.fault_table import new_seed
from ..core.names import default_name
from ..core.replay import ReplayConfig
from ..core.validation import named, non_negative_number, tls_mode
from ..errors import (
    CassetteMissing,
    ConfigError,
    SandboxClosed,
    SandboxError,
)
from . import launch, shadows
from .channel import Channel
from .host import Host
from .process import DEVNULL, PIPE, STDOUT, Process, Spawned
from .wire_controls import WireControls

SANDBOX_MODES = ("live", "record", "replay")

__all__ = ["Sandbox", "Host", "Process", "PIPE", "DEVNULL", "STDOUT"]


def _signal_number(value: int | str | signal.Signals) -> int:
    if isinstance(value, str):
        name = value.upper()
        if name.isdigit():
            return int(name)
        if not name.startswith("SIG"):
            name = "SIG" + name
        try:
            return int(signal.Signals[name])
        except KeyError:
            raise ConfigError(
                f"unknown signal {value!r}: use a name like TERM, INT, KILL or a number"
            ) from None
    return int(value)


def _close_channel(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


@attrs.define(init=False, eq=False, repr=False)
class Sandbox(WireControls):
    """A set of hosts joined by the userspace router. Use as a context manager."""

    subnet: Subnet
    subnet6: Subnet6
    mode: str
    cassette: str | None
    replay_config: ReplayConfig
    kill_signal: int
    grace: float
    verbose: bool
    hosts: list[Host]
    closed: bool
    # What closing reported: the divergence report, where the recording went,
    # the byte offset at which a replayed cassette was cut short (if it was),
    # and the router's dropped packets by reason.
    divergences: DivergenceReport
    cassette_written: str | None
    truncated_at: int | None
    dropped: dict[str, int]
    shadows: list  # the Shadow handles of sb.shadow(), stopped before the sandbox closes
    # TLS: "off" or "intercept" as asked, the CA directory (None: the default one), a CA file
    # the real servers' certificates must verify against (None: not verified), and what the
    # run had to say about TLS (clients that refused the sandbox CA, failed handshakes).
    tls: str
    tls_ca_dir: str | None
    tls_server_ca: str | None
    tls_notes: tuple[str, ...]
    _authority: object
    # Faults that hold for the whole run, and the seed of every random fault.
    faults: tuple[FaultSpec, ...]
    seed: int
    faults_used: bool
    _agents: dict | None
    _spawned: Spawned
    _channel: Channel | None
    _supervisor_pid: int | None
    _finalizer: weakref.finalize | None

    def __init__(
        self,
        subnet: str | Subnet = DEFAULT_SUBNET,
        *,
        subnet6: str | Subnet6 | None = None,
        kill_signal: int | str = signal.SIGTERM,
        grace: float = defaults.GRACE,
        verbose: bool = False,
        mode: str = "live",
        cassette: str | os.PathLike | None = None,
        pace: str = defaults.PACE,
        speed: float = defaults.SPEED,
        stall_timeout: float = defaults.STALL_TIMEOUT,
        settle: float = defaults.SETTLE,
        match: str = defaults.MATCH,
        output_dir: str | os.PathLike | None = None,
        ignore: object = (),
        check: object = (),
        tls: str = "off",
        tls_ca_dir: str | os.PathLike | None = None,
        tls_server_ca: str | os.PathLike | None = None,
        faults: object = (),
        seed: int | str | None = None,
        agents: object = None,
        key_file: str | os.PathLike | None = None,
        insecure_plaintext: bool = False,
        tunnel_mtu: int | None = None,
    ):
        self.subnet = Subnet.parse(subnet)
        self.subnet6 = Subnet6.parse(subnet6, self.subnet)
        if mode not in SANDBOX_MODES:
            raise ConfigError(f"unknown mode {mode!r}: use one of {', '.join(SANDBOX_MODES)}")
        if mode != "live" and cassette is None:
            raise ConfigError(f"mode {mode!r} needs a cassette path")
        self.mode = mode
        self.cassette = None if cassette is None else os.path.abspath(os.fspath(cassette))
        self.replay_config = ReplayConfig(
            pacing=pace,
            speed=speed,
            stall_timeout=stall_timeout,
            settle=settle,
            ignore=ignore,
            check=check,
            match=match,
        )
        self.kill_signal = _signal_number(kill_signal)
        self.grace = named("grace", non_negative_number)(grace)
        self.verbose = verbose
        self.tls = named("tls", tls_mode)(tls)
        self.tls_ca_dir = None if tls_ca_dir is None else os.path.abspath(os.fspath(tls_ca_dir))
        self.tls_server_ca = None if tls_server_ca is None else os.path.abspath(os.fspath(tls_server_ca))
        self.tls_notes = ()
        self._authority = None
        self.faults = fault_specs(faults or ())
        self.seed = new_seed() if seed is None else named("seed", to_seed)(seed)
        self.faults_used = bool(self.faults)
        # Agents whose machines may hold hosts (docs/remote.rst): addresses and key, checked now.
        self._agents = _agent_options(agents, key_file, insecure_plaintext, tunnel_mtu) if agents else None
        self.hosts = []
        self.closed = False
        self.divergences = DivergenceReport((), mode=mode)
        self.cassette_written = None
        self.truncated_at = None
        self.dropped = {}
        self.shadows = []
        # Where output of processes spawned without stdout/stderr goes, one
        # file per process and stream, so it can be shown per host.
        self._spawned = Spawned(None if output_dir is None else os.fspath(output_dir))
        self._channel = None
        self._supervisor_pid = None
        self._finalizer = None

    @property
    def output_dir(self) -> str | None:
        return self._spawned.output_dir

    @property
    def processes(self) -> tuple[Process, ...]:
        """Every process spawned in the sandbox's hosts, in the order they were started."""
        return tuple(self._spawned)

    # -- life cycle -----------------------------------------------------------

    def _supervisor_options(self) -> dict:
        if self.mode == "replay" and not os.path.exists(self.cassette):
            raise CassetteMissing(
                f"no cassette at {self.cassette} to replay: record it first "
                f"(pytest --netplay=record, or netplay record -f {self.cassette} ...)"
            )
        tls = self.tls if self.mode != "replay" else tls_of_cassette(self.cassette, self.tls)
        options: dict = {}
        if tls == "intercept":
            options["tls"] = {"authority": self.tls_authority(), "server_ca": self.tls_server_ca}
        if self.mode != "live":
            options["session"] = {
                "mode": self.mode,
                "cassette": self.cassette,
                "replay": self.replay_config,
                "tls": tls,
            }
        return options

    def tls_authority(self):
        """The sandbox CA (:class:`~.tls_authority.CertificateAuthority`), made on first use."""
        if self._authority is None:
            from .tls_authority import CertificateAuthority

            self._authority = CertificateAuthority.load_or_create(self.tls_ca_dir)
        return self._authority

    def tls_client_context(self, alpn: tuple[str, ...] | list[str] = ()):
        """An ``ssl.SSLContext`` for a test's own code (``Host.connect``) that trusts the sandbox CA only."""
        return self.tls_authority().client_context(alpn)

    def start(self) -> "Sandbox":
        if self._channel is not None:
            return self
        if self.closed:
            raise SandboxClosed("this sandbox was closed; make a new one")
        options = {
            **self._supervisor_options(),
            "subnet6": str(self.subnet6),
            "faults": {"seed": self.seed, "specs": self.faults},
            "agents": self._agents,
        }
        ours, pid = launch.fork_supervisor(str(self.subnet), self.verbose, options)
        self._supervisor_pid = pid
        try:
            ok, error = launch.handshake(ours, pid)
        except (EOFError, OSError) as exc:
            ours.close()
            self._reap()
            raise SandboxError("the sandbox's supervisor died while starting") from exc
        if not ok:
            ours.close()
            self._reap()
            self.closed = True
            raise error
        self._channel = Channel(ours, pid)
        self._finalizer = weakref.finalize(self, _close_channel, ours)
        return self

    def _reap(self, block: bool = True) -> None:
        if self._supervisor_pid is not None:
            launch.reap_later(self._supervisor_pid)
            if block:
                launch.reap_pending(block=True)

    def close(self, cassette: str | tuple = "commit") -> None:
        """Stop every process (kill signal, then SIGKILL after ``grace``) and tear down.

        In record mode ``cassette`` says what becomes of the recording:
        ``"commit"`` replaces the cassette atomically, ``"abort"`` leaves it as
        a ``.partial`` file beside it, ``("keep_as", path)`` moves it there,
        ``"discard"`` deletes it (a test that was skipped or never ran).
        Raises :class:`CassetteError` if the recording could not be written.
        """
        if self.closed:
            return
        self.closed = True
        channel = self._channel
        if channel is None:
            return
        shadows.settle_all(self)
        info = channel.close(signal=self.kill_signal, grace=self.grace, cassette=cassette)
        self.dropped = {**info.get("dropped", {}), **info.get("tunnel_dropped", {})}
        self.divergences = info.get("divergences", self.divergences)
        self.cassette_written = info.get("cassette")
        self.truncated_at = info.get("truncated_at")
        self.tls_notes = tuple(info.get("tls", ()))
        error = info.get("error")
        self._spawned.settle(channel.exits)
        if self._finalizer is not None:
            self._finalizer()
        # Everything of ours is stopped; the kernel's unregistering of the TUN
        # devices as the supervisor exits takes ~100 ms, so reap it later.
        self._reap(block=False)
        if error is not None:
            raise error

    @property
    def is_recording(self) -> bool:
        return self.mode == "record"

    def __enter__(self) -> "Sandbox":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        # A recording cut short by an exception never replaces a good cassette.
        self.close("commit" if exc_type is None else "abort")

    # -- hosts ----------------------------------------------------------------------

    def add_host(self, name: str | None = None, on: str | None = None) -> Host:
        """A new host with the next address of the subnet (.1, .2, ... in order); on agent
        ``on``'s machine if given (see docs/remote.rst), else on this one.

        Every host resolves ``name`` (a DNS label, unique in the sandbox) and
        the default name ``hN`` (N = 1, 2, ... in order) of every host, through
        its own ``/etc/hosts``; ``hostname`` in it prints ``name`` (``hN`` if none).
        """
        if len(self.hosts) >= self.subnet.capacity:
            # The caller's mistake: the traceback ends at the caller's line.
            __tracebackhide__ = True
            raise self.subnet.full(len(self.hosts))
        self.start()
        info, _ = self._channel.call("add_host", name=name, on=on)
        host = Host(info["index"], info["address"], info["name"], self._channel, self._spawned, info["address6"])
        self.hosts.append(host)
        return host

    def host_output(self, host: Host) -> dict[str, bytes]:
        """What the host's processes wrote, by stream, when ``output_dir`` is set."""
        return self._spawned.output(host)

    def host(self, name_or_address: str) -> Host:
        for index, host in enumerate(self.hosts):
            if name_or_address in (host.name, host.address, host.address6, default_name(index)):
                return host
        raise KeyError(name_or_address)

    def namespace_inodes(self) -> list[int]:
        """Inode numbers of the sandbox's network namespaces (proxy first): for leak checks."""
        value, _ = self._channel.call("namespaces")
        return value

    @property
    def supervisor_pid(self) -> int | None:
        return self._supervisor_pid

    def stats(self) -> dict:
        value, _ = self._channel.call("stats")
        return value


def _agent_options(agents: object, key_file: object, insecure_plaintext: bool, tunnel_mtu: object) -> dict | None:
    from .tunnel import agent_options  # the crypto is imported only by sandboxes with agents

    return agent_options(agents, key_file, insecure_plaintext, tunnel_mtu)


def tls_of_cassette(path: str, asked: str) -> str:
    """What a replay of ``path`` does with TLS: intercept when it was recorded so, whatever was asked."""
    from ..cassette import Cassette

    cassette = Cassette(path, tolerate_truncation=True)
    try:
        return "intercept" if cassette.header.tls == "intercept" else asked
    finally:
        cassette.close()


Sandbox.__module__ = "pytest_netplayground"
Host.__module__ = "pytest_netplayground"
Process.__module__ = "pytest_netplayground"
