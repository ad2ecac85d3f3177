"""The Python API of driving: play a cassette's clients against live servers in a sandbox.

The servers run in the sandbox's hosts (:func:`drive_hosts` makes the hosts
the recorded servers lived in, moved by ``mapping``); :func:`drive` plans the
connections (:mod:`..core.drive_plan`), has the supervisor play them, and
returns the :class:`~..core.drive_report.DriveReport`. With ``noise_runs``
it first plays every connection that many times more and ignores what
differs between those answers.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import time

import attrs

from ..cassette import Cassette
from ..core import defaults
from ..core.drive_noise import learn_from_answers
from ..core.drive_plan import DriveOptions, noise_run_count, plan_drive
from ..core.drive_report import DriveReport
from ..core.events import Data, Outcome
from ..core.noise import Noise, ignore_rules
from ..core.replay import ReplayConfig
from ..errors import ConfigError, NetplayTimeout
from ..learning import RunSpacing

__all__ = ["Driver", "drive", "drive_hosts", "recorded_servers"]


def recorded_servers(
    cassette: str | os.PathLike, options: DriveOptions | None = None, clients: bool = False
) -> list:
    """The addresses of the cassette's servers (and clients, with ``clients``), moved by
    ``options.mapping``, in address order."""
    options = options or DriveOptions()
    with _index(cassette) as index:
        opened = [entry.opened for entry in index.connections.values()]
    plan_drive(opened, options)  # options naming nothing recorded fail here, before any sandbox starts
    ends = [(o.server, o.client) for o in opened]
    hosts = {options.moved(end.host) for pair in ends for end in (pair if clients else pair[:1])}
    return sorted(hosts, key=lambda address: (":" in address, _sort_key(address)))


def _sort_key(address: str):
    return int(ipaddress.ip_address(address))


@contextlib.contextmanager
def _index(path):
    """A cassette's index, the file closed after."""
    with contextlib.closing(Cassette(os.fspath(path), tolerate_truncation=True)) as cassette:
        yield cassette.index()


def drive_hosts(sandbox, cassette: str | os.PathLike, options: DriveOptions | None = None) -> dict:
    """Make hosts until every recorded address (moved by the mapping) has one, the clients'
    too (the router delivers the servers' answers only to addresses a host owns, and the
    proxy takes them there); the hosts by address. The addresses must be in the subnet."""
    wanted = recorded_servers(cassette, options, clients=True)
    found = {}
    for address in wanted:
        index = _index_in(sandbox, address)
        if index is None:
            raise ConfigError(
                f"the address {address} of {cassette} is not in the sandbox's subnets "
                f"({sandbox.subnet}, {sandbox.subnet6}): "
                "drive in the subnet it was recorded in, or move it with a mapping"
            )
        while len(sandbox.hosts) <= index:
            sandbox.add_host()
        found[address] = sandbox.hosts[index]
    return found


def _index_in(sandbox, address: str) -> int | None:
    """The index of the host that gets ``address`` (IPv4 or IPv6), or None outside the subnets."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    subnet = sandbox.subnet if ip.version == 4 else sandbox.subnet6
    if ip not in subnet.network:
        return None
    index = int(ip) - int(subnet.network.network_address) - 1
    return index if 0 <= index < subnet.capacity else None


def _wait_for_servers(sandbox, plan, timeout: float) -> None:
    """Wait (up to ``timeout`` in all) for each planned server whose host runs something to listen."""
    deadline = time.monotonic() + timeout
    seen = set()
    for planned in plan:
        server = planned.server
        if server in seen or planned.opened.outcome is not Outcome.ESTABLISHED:
            continue
        seen.add(server)
        host = next((h for h in sandbox.hosts if server.host in (h.address, h.address6)), None)
        if host is None or not any(p.poll() is None for p in sandbox.processes if p.host is host):
            continue
        try:
            host.wait_for_port(server.port, max(0.0, deadline - time.monotonic()))
        except NetplayTimeout:
            continue  # the drive reports it refused


def drive(
    sandbox,
    cassette: str | os.PathLike,
    options: DriveOptions | None = None,
    *,
    ignore: object = (),
    noise_runs: int = 0,
    stall_timeout: float = defaults.STALL_TIMEOUT,
    settle: float = defaults.SETTLE,
    listen_timeout: float = 5.0,
    **option_values,
) -> DriveReport:
    """Play the clients of ``cassette`` against the servers running in ``sandbox``; see the module docstring.

    ``options`` (or its fields as keywords: ``pacing``, ``speed``, ``rate``,
    ``multiply``, ``sample``, ``mapping``) say which connections go, from where
    and when; ``ignore`` takes replay's ignore rules; a server whose host runs a
    process is waited for up to ``listen_timeout`` seconds before the drive starts. Hosts
    missing for the recorded addresses are made first (:func:`drive_hosts`).
    """
    if options is None:
        options = DriveOptions(**option_values)
    elif option_values:
        raise ConfigError("give drive either options or their fields as keywords, not both")
    noise_runs = noise_run_count(noise_runs)
    path = os.path.abspath(os.fspath(cassette))
    with _index(path) as index:
        opened = {entry.opened.conn: entry.opened for entry in index.connections.values()}
        learned = tuple(index.noise)
        if index.header.tls == "intercept":
            raise ConfigError(
                f"{path} was recorded with TLS interception: its clients' bytes are the plaintext "
                "inside TLS, which drive cannot play to a TLS server yet; record without --tls intercept"
            )
    plan = plan_drive(list(opened.values()), options)
    sandbox.start()
    drive_hosts(sandbox, path, options)  # the clients' addresses need hosts too (see there)
    _wait_for_servers(sandbox, plan, listen_timeout)
    timing = {
        "pacing": options.pacing,
        "speed": options.speed,
        "stall_timeout": stall_timeout,
        "settle": settle,
    }
    if noise_runs:
        learned += _learn_noise(sandbox, path, opened, attrs.evolve(options, multiply=1), noise_runs, timing)
    config = ReplayConfig(**timing, noise=Noise(ignore=ignore_rules(ignore), learned=learned))
    return DriveReport(_call(sandbox, path, plan, config, collect=False)["results"])


def _learn_noise(sandbox, path: str, opened: dict, options: DriveOptions, runs: int, timing: dict) -> tuple:
    """Play every connection ``runs`` times, spaced so clocks move on; what their answers
    disagree on, in the recording's terms."""
    plan = plan_drive(list(opened.values()), options)
    # Causal whatever the drive's pacing: each answer then falls in the turn it was recorded in.
    config = ReplayConfig(**{**timing, "pacing": "causal"})
    spacing = RunSpacing()
    answers = []
    for _ in range(runs):
        spacing.next_run()
        answers.append(_call(sandbox, path, plan, config, collect=True)["answers"])
    spacing.next_run()
    cassette = Cassette(path, tolerate_truncation=True)
    try:
        recorded = {
            conn: [e for e in cassette.iter_connection(conn) if isinstance(e, Data)] for conn in answers[0]
        }
    finally:
        cassette.close()
    return learn_from_answers(opened, recorded, answers)


def _call(sandbox, path: str, plan, config: ReplayConfig, collect: bool) -> dict:
    """The supervisor plays ``plan``; its reply comes once every connection has ended."""
    return sandbox._call("drive", cassette=path, plan=tuple(plan), config=config, collect=collect)


class Driver:
    """Drives cassettes' clients against servers a test starts (what the ``netplay_drive`` fixture
    gives). Its live sandbox is made on first use, in the first cassette's subnets (the default
    ones if :attr:`sandbox` is asked for first); relative cassette paths are under ``base``."""

    def __init__(self, sandbox=None, base: str | os.PathLike | None = None):
        self._sandbox = sandbox
        self.base = base

    @property
    def sandbox(self):
        """The live sandbox (started): add hosts to it for the servers' own peers, a database say."""
        return self._made()

    def _made(self, cassette: str | None = None):
        if self._sandbox is None:
            from .sandbox import Sandbox

            subnets: dict = {}
            if cassette is not None:
                header = Cassette(cassette, tolerate_truncation=True)
                header.close()
                subnets = {"subnet": header.header.subnet, "subnet6": header.header.subnet6 or None}
            self._sandbox = Sandbox(**subnets)
        return self._sandbox.start()

    def path(self, cassette: str | os.PathLike) -> str:
        path = os.fspath(cassette)
        return path if self.base is None or os.path.isabs(path) else os.path.join(os.fspath(self.base), path)

    def hosts(self, cassette: str | os.PathLike, options: DriveOptions | None = None, **values) -> dict:
        """The hosts of the cassette's addresses (see :func:`drive_hosts`), made as needed."""
        path = self.path(cassette)
        return drive_hosts(self._made(path), path, options or DriveOptions(**values))

    def __call__(
        self, cassette: str | os.PathLike, options: DriveOptions | None = None, **settings
    ) -> DriveReport:
        """:func:`drive` in this sandbox."""
        path = self.path(cassette)
        return drive(self._made(path), path, options, **settings)

    def close(self) -> None:
        """Stop the sandbox's processes and tear it down, if it was made."""
        if self._sandbox is not None:
            self._sandbox.close()
