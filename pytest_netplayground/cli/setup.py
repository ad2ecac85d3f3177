"""What every sandbox command does before and around its run: check, make the sandbox and hosts, run."""

from __future__ import annotations

import sys

from ..core.addressing6 import Subnet6
from .fault_options import fault_settings
from .hosts import check_capacity, make_hosts, parse_names, resolve_host
from .remote import placements, sandbox_options
from .runner import Lifecycle, RunOutcome, run_commands
from .shadow_options import drain_shadows, start_shadows

EXIT_ERROR = 1


def _id(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.isdigit() else value


def say(text: str) -> None:
    sys.stderr.write(f"netplay: {text}\n")
    sys.stderr.flush()


def say_tls(sandbox) -> None:
    """What the run had to say about TLS (a client that refused the sandbox CA...)."""
    for line in sandbox.tls_notes:
        say(line)


def make_sandbox(args, **mode):
    from ..runtime.sandbox import Sandbox

    tls = {"tls": getattr(args, "tls", "off"), "tls_ca_dir": getattr(args, "tls_ca_dir", None)}
    faults, seed = fault_settings(args)
    sandbox = Sandbox(
        args.subnet,
        subnet6=args.subnet6,
        kill_signal=args.kill,
        grace=args.grace,
        verbose=args.verbose,
        **tls,
        faults=faults,
        seed=seed,
        **sandbox_options(args),
        **mode,
    )
    if faults and seed is None:
        say(f"faults seed {sandbox.seed} (repeat this run's drops with --seed {sandbox.seed})")
    return sandbox


def prepare(args) -> list[str] | None:
    """Check what can be checked before a sandbox exists; return the host names."""
    subnet = check_capacity(args.subnet, len(args.commands))
    placements(args, len(args.commands))
    Subnet6.parse(args.subnet6, subnet)
    return parse_names(args.names, len(args.commands))


def setup(sandbox, args, names) -> tuple[list, Lifecycle]:
    """Start the sandbox, make the hosts and settle how the run ends."""
    sandbox.start()
    hosts = make_hosts(sandbox, len(args.commands), names, placements(args, len(args.commands)))
    target = None if args.exit_code_from is None else resolve_host(args.exit_code_from, hosts, args.commands)
    start_shadows(sandbox, args)
    before_stop = (lambda: drain_shadows(sandbox)) if sandbox.shadows else None
    return hosts, Lifecycle(target=target, abort_on_exit=args.abort_on_exit, before_stop=before_stop)


def run_set_up(sandbox, args, hosts, lifecycle, quiet: bool = False) -> RunOutcome:
    return run_commands(
        sandbox, hosts, args.commands, lifecycle, uid=_id(args.uid), gid=_id(args.gid), quiet=quiet
    )


def run(sandbox, args, names, quiet: bool = False) -> RunOutcome:
    hosts, lifecycle = setup(sandbox, args, names)
    return run_set_up(sandbox, args, hosts, lifecycle, quiet)
