"""What ``netplay run``, ``record``, ``replay``, ``show`` and ``export`` do."""

from __future__ import annotations

import sys
from pathlib import Path

from ..cassette import partial_path_for
from ..errors import NetplayError
from .hosts import check_capacity, make_hosts, parse_names, resolve_host
from .runner import Lifecycle, RunOutcome, run_commands

EXIT_ERROR = 1


def _id(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.isdigit() else value


def _say(text: str) -> None:
    sys.stderr.write(f"netplay: {text}\n")
    sys.stderr.flush()


def _make_sandbox(args, **mode):
    from ..runtime.sandbox import Sandbox

    return Sandbox(args.subnet, kill_signal=args.kill, grace=args.grace, verbose=args.verbose, **mode)


def _prepare(args) -> list[str] | None:
    """Check what can be checked before a sandbox exists; return the host names."""
    check_capacity(args.subnet, len(args.commands))
    return parse_names(args.names, len(args.commands))


def _setup(sandbox, args, names) -> tuple[list, Lifecycle]:
    """Start the sandbox, make the hosts and settle how the run ends."""
    sandbox.start()
    hosts = make_hosts(sandbox, len(args.commands), names)
    target = None if args.exit_code_from is None else resolve_host(args.exit_code_from, hosts, args.commands)
    return hosts, Lifecycle(target=target, abort_on_exit=args.abort_on_exit)


def _run(sandbox, args, names, quiet: bool = False) -> RunOutcome:
    hosts, lifecycle = _setup(sandbox, args, names)
    return _run_set_up(sandbox, args, hosts, lifecycle, quiet)


def _run_set_up(sandbox, args, hosts, lifecycle, quiet: bool) -> RunOutcome:
    return run_commands(
        sandbox, hosts, args.commands, lifecycle, uid=_id(args.uid), gid=_id(args.gid), quiet=quiet
    )


def cmd_run(args) -> int:
    names = _prepare(args)
    sandbox = _make_sandbox(args)
    try:
        return _run(sandbox, args, names).code
    finally:
        sandbox.close()


def _pacing(args) -> dict:
    if args.flood:
        return {"pace": "flood"}
    if args.speed is not None:
        return {"pace": "recorded", "speed": args.speed}
    return {"pace": "causal"}


def failed_path_for(cassette: Path) -> Path:
    """Where a failed run's recording goes, beside the cassette, as the plugin does."""
    return cassette.with_name(cassette.stem + ".failed" + cassette.suffix)


def numbered_partial_path(cassette: Path) -> Path:
    """The first free ``NAME.N.partial`` beside ``cassette``."""
    number = 1
    while True:
        candidate = cassette.with_name(f"{cassette.name}.{number}.partial")
        if not candidate.exists():
            return candidate
        number += 1


def _keep_earlier_partial(cassette: Path) -> None:
    """Move an earlier interrupted recording aside: this recording's own ``.partial`` would replace it."""
    partial = partial_path_for(cassette)
    if not partial.exists():
        return
    kept = numbered_partial_path(cassette)
    try:
        partial.rename(kept)
    except OSError as exc:
        raise NetplayError(
            f"cannot move the earlier interrupted recording {partial} aside to {kept}: "
            f"{exc.strerror or exc}; move or delete it yourself"
        ) from exc
    _say(
        f"an earlier interrupted recording was in {partial}: it is now {kept}, so this one cannot overwrite it"
    )


def _what_failed(outcome: RunOutcome, hosts) -> str:
    index = outcome.decided_by
    if index is None:
        return f"the run failed with status {outcome.code}"
    return f"command {index + 1} ({hosts[index].address}) exited with status {outcome.code}"


def cmd_record(args) -> int:
    names = _prepare(args)
    cassette = Path(args.file)
    existed = cassette.exists()
    old = f"{cassette} was left as it was" if existed else f"no cassette was written to {cassette}"
    _keep_earlier_partial(cassette)
    sandbox = _make_sandbox(args, mode="record", cassette=cassette)
    try:
        hosts, lifecycle = _setup(sandbox, args, names)
    except BaseException:
        # Nothing ran yet: nothing to keep.
        try:
            sandbox.close("discard")
        except NetplayError:
            pass
        raise
    try:
        outcome = _run_set_up(sandbox, args, hosts, lifecycle, args.nolog)
    except BaseException:
        # Nothing committed on an error: what was recorded stays as .partial.
        try:
            sandbox.close("abort")
        except NetplayError:
            pass
        if sandbox.cassette_written:
            _say(f"the recording so far is in {sandbox.cassette_written}; {old}")
        raise
    if outcome.interrupted:
        sandbox.close("abort")
        _say(f"interrupted: the recording so far is in {sandbox.cassette_written}; {old}")
    elif outcome.failed and not args.keep_going:
        sandbox.close(("keep_as", str(failed_path_for(cassette))))
        _say(
            f"{_what_failed(outcome, sandbox.hosts)}: the recording was kept as {sandbox.cassette_written}; "
            f"{old} (--keep-going records it anyway)"
        )
    else:
        sandbox.close("commit")
        note = f" although {_what_failed(outcome, sandbox.hosts)}" if outcome.failed else ""
        _say(f"recorded {cassette}{note}")
    return outcome.code


def cmd_replay(args) -> int:
    names = _prepare(args)
    sandbox = _make_sandbox(
        args, mode="replay", cassette=args.file, stall_timeout=args.stall_timeout, **_pacing(args)
    )
    try:
        code = _run(sandbox, args, names, quiet=args.nolog).code
    finally:
        sandbox.close()
    report = sandbox.divergences
    if sandbox.truncated_at is not None:
        _say(f"{args.file} was cut short at byte {sandbox.truncated_at}: replayed what came before")
    if not report.ok:
        _say(f"the replay diverged from {args.file}:\n{report.format()}")
        if args.strict and code == 0:
            return EXIT_ERROR
    return code


def cmd_show(args) -> int:
    from ..cassette import Cassette
    from ..core.render import render_conversations

    cassette = Cassette(args.cassette, tolerate_truncation=True)
    text = render_conversations(cassette.header, cassette.records(), width=args.width)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if cassette.truncated_at is not None:
        _say(f"{args.cassette} is cut short at byte {cassette.truncated_at}")
    return 0


def cmd_export(args) -> int:
    from ..export_pcap import export_pcap

    count = export_pcap(args.cassette, args.output, tolerate_truncation=True)
    _say(f"wrote {count} packets to {args.output}")
    return 0


COMMANDS = {
    "run": cmd_run,
    "record": cmd_record,
    "replay": cmd_replay,
    "show": cmd_show,
    "export": cmd_export,
}
