"""``netplay record``: one recording or several, and what becomes of a failed or interrupted one.

The cassette changes only when every run succeeded (or ``--keep-going``): a
failed run's recording is kept beside it as ``NAME.failed.SUFFIX``, as the
pytest plugin does, and an interrupted one as ``NAME.partial``. ``--runs N``
records to ``NAME.runK`` files and, once all N are done, makes the cassette
the first recording plus the noise learned from the others; a run that does
not end in a recording stops there and removes the earlier runs' files.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from ..cassette import partial_path_for
from ..errors import NetplayError
from ..learning import RunSpacing, commit_with_noise, run_path
from .runner import RunOutcome
from .setup import make_sandbox, prepare, run_set_up, say, say_tls, setup
from .shadow_options import EXIT_SHADOW, say_shadows


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
    say(
        f"an earlier interrupted recording was in {partial}: it is now {kept}, "
        "so this one cannot overwrite it"
    )


def _what_failed(outcome: RunOutcome, hosts) -> str:
    index = outcome.decided_by
    if index is None:
        return f"the run failed with status {outcome.code}"
    return f"command {index + 1} ({hosts[index].address}) exited with status {outcome.code}"


def _close_quietly(sandbox, cassette) -> None:
    try:
        sandbox.close(cassette)
    except NetplayError:
        pass


@attrs.frozen
class _Plan:
    """What this ``netplay record`` writes: the cassette, each run's file, and what to say of the old one."""

    cassette: Path
    paths: tuple[Path, ...]
    old: str
    keep_going: bool
    # Per run: whether every shadow's candidate answered as the primary did.
    shadows_ok: list = attrs.field(factory=list)

    @classmethod
    def of(cls, args) -> "_Plan":
        cassette = Path(args.file)
        runs = args.runs
        paths = (cassette,) if runs == 1 else tuple(run_path(cassette, run) for run in range(1, runs + 1))
        if cassette.exists():
            old = f"{cassette} was left as it was"
        else:
            old = f"no cassette was written to {cassette}"
        return cls(cassette, paths, old, args.keep_going)

    def label(self, index: int) -> str:
        """How messages name run ``index`` (0-based): not at all when there is only one."""
        return "" if len(self.paths) == 1 else f"run {index + 1} of {len(self.paths)}: "

    def remove_runs_before(self, index: int) -> None:
        """Remove the recordings of the runs before ``index``: alone they make no cassette."""
        if len(self.paths) > 1:
            for path in self.paths[:index]:
                path.unlink(missing_ok=True)


def _record_once(args, names, plan: _Plan, index: int) -> tuple[RunOutcome, str | None]:
    """Record run ``index`` to its path; return its outcome and, if it failed, what failed.

    Only a run that succeeded (or failed, with ``--keep-going``) is committed;
    the caller knows that by ``outcome``.
    """
    path, label = plan.paths[index], plan.label(index)
    _keep_earlier_partial(path)
    sandbox = make_sandbox(args, mode="record", cassette=path)
    try:
        hosts, lifecycle = setup(sandbox, args, names)
    except BaseException:
        _close_quietly(sandbox, "discard")  # nothing ran yet: nothing to keep
        raise
    try:
        outcome = run_set_up(sandbox, args, hosts, lifecycle, args.nolog)
    except BaseException:
        # Nothing committed on an error: what was recorded stays as .partial.
        _close_quietly(sandbox, "abort")
        if sandbox.cassette_written:
            say(f"{label}the recording so far is in {sandbox.cassette_written}; {plan.old}")
        raise
    failed = _what_failed(outcome, sandbox.hosts) if outcome.failed else None
    if outcome.interrupted:
        sandbox.close("abort")
        say(f"{label}interrupted: the recording so far is in {sandbox.cassette_written}; {plan.old}")
    elif failed and not plan.keep_going:
        sandbox.close(("keep_as", str(failed_path_for(plan.cassette))))
        say(
            f"{label}{failed}: the recording was kept as {sandbox.cassette_written}; "
            f"{plan.old} (--keep-going records it anyway)"
        )
    else:
        sandbox.close("commit")
    say_tls(sandbox)
    plan.shadows_ok.append(say_shadows(sandbox, 0) == 0)
    return outcome, failed


def committed(outcome: RunOutcome, keep_going: bool) -> bool:
    """Whether a run with this outcome became a recording of the cassette (or of its run file)."""
    return not outcome.interrupted and (keep_going or not outcome.failed)


def cmd_record(args) -> int:
    names = prepare(args)
    plan = _Plan.of(args)
    failures: list[str] = []
    codes: list[int] = []
    spacing = RunSpacing()
    for index in range(len(plan.paths)):
        spacing.next_run()
        try:
            outcome, failed = _record_once(args, names, plan, index)
        except BaseException:
            plan.remove_runs_before(index)
            raise
        codes.append(outcome.code)
        if not committed(outcome, plan.keep_going):
            plan.remove_runs_before(index)
            return outcome.code
        if failed:
            failures.append(plan.label(index) + failed)
    note = f" although {'; '.join(failures)}" if failures else ""
    if len(plan.paths) == 1:
        say(f"recorded {plan.cassette}{note}")
    else:
        noise = commit_with_noise(plan.paths[0], plan.paths[1:], plan.cassette)
        regions = sum(len(item.spans) for item in noise)
        say(
            f"recorded {plan.cassette} ({len(plan.paths)} runs: {regions} noise "
            f"region{'s' if regions != 1 else ''} in {len(noise)} turn{'s' if len(noise) != 1 else ''}){note}"
        )
    # The first run that failed decides, as the first command that failed does within a run.
    return next((code for code in codes if code != 0), 0 if all(plan.shadows_ok) else EXIT_SHADOW)
