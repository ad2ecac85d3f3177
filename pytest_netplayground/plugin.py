"""The pytest plugin: wires options, ini keys, the marker and fixtures to the core.

Precedence of settings, lowest first: ini keys, the ``netplay_config``
fixture, ``@pytest.mark.netplay``, the command line.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import attrs
import pytest

from .errors import ConfigError, NetplayError
from .learning import commit_with_noise, run_path
from .settings import (
    MARKER_KEYS,
    SESSION_MODES,
    Settings,
    cassette_name,
    check_marker,
    merge,
    resolved_mode,
)

OPTIONS = {
    # key: (flag, help)
    "mode": ("--netplay", f"record and replay mode: {', '.join(SESSION_MODES)} (default off: live, nothing written)"),
    "dir": (
        "--netplay-dir",
        "directory that holds the cassettes (default: cassettes/ beside each test module)",
    ),
    "pace": ("--netplay-pace", "replay pacing: causal (default), recorded or flood"),
    "speed": ("--netplay-speed", "speed factor of recorded pacing (default 1)"),
    "strict": ("--netplay-strict", "fail a test whose replay diverged: yes (default) or no (warn)"),
    "subnet": ("--netplay-subnet", "subnet the hosts get addresses from (default 10.0.0.0/24)"),
    "subnet6": (
        "--netplay-subnet6",
        "IPv6 prefix the hosts get addresses from (default: a unique local /64 derived from the subnet)",
    ),
    "stall_timeout": (
        "--netplay-stall-timeout",
        "seconds a causal replay waits for a silent side before it reports a stall and plays the rest (default 5)",
    ),
    "settle": (
        "--netplay-settle",
        "seconds of quiet after which a live side that sent less than recorded has had its turn (default 0.2)",
    ),
    "match": (
        "--netplay-match",
        "what a replay pairs live traffic with: connection (default) or exchange (request/reply, any connection)",
    ),
    "tls": (
        "--netplay-tls",
        "TLS between hosts: off (default: relayed and recorded as ciphertext) or intercept "
        "(terminated by the proxy with the sandbox CA: recorded and replayed as plaintext)",
    ),
    "tls_ca_dir": (
        "--netplay-tls-ca-dir",
        "directory of the sandbox CA (default: $NETPLAY_CA_DIR, else ~/.local/share/netplayground/ca)",
    ),
    "seed": ("--netplay-seed", "seed of the faults' random choices, to repeat a run's drops (default: chosen)"),
    "record_runs": (
        "--netplay-record-runs",
        "with --netplay=record, run each sandboxed test this many times (2: learn its noise)",
    ),
}

_state_key = pytest.StashKey["NetplayState"]()
# (this run, of how many) while a test is recorded more than once.
_run_key = pytest.StashKey[tuple]()


class NetplayDivergenceWarning(UserWarning):
    """A replay diverged from its cassette in a test that is not strict."""


@attrs.define
class NetplayState:
    sandbox: object
    settings: Settings
    cassette: Path
    mode: str
    output_dir: str
    finished: bool = False
    run: int = 1
    runs: int = 1


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("netplay", "Net Playground: record and replay networked tests")
    for key, (flag, help_text) in OPTIONS.items():
        group.addoption(flag, dest=f"netplay_{key}", default=None, help=help_text)
        parser.addini(f"netplay_{key}", help_text, default="")


def _ini_layer(config: pytest.Config) -> dict:
    values = {}
    for key in OPTIONS:
        if key == "dir":
            continue
        raw = config.getini(f"netplay_{key}")
        values[key] = raw if raw not in ("", None) else None
    return values


def _cli_layer(config: pytest.Config) -> dict:
    return {key: config.getoption(f"netplay_{key}") for key in OPTIONS if key != "dir"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"netplay({', '.join(f'{k}=...' for k in MARKER_KEYS)}): configure the test's Net Playground sandbox",
    )
    try:
        merge([("ini", _ini_layer(config)), ("command line", _cli_layer(config))])
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.pluginmanager.register(_Summary(), "netplay-summary")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A bad ``@pytest.mark.netplay`` is an error of the test that carries it, found
    before its fixtures run; other tests run, and deselected ones are never judged."""
    problems = []
    for marker in item.iter_markers("netplay"):
        try:
            check_marker(marker.args, marker.kwargs, item.nodeid)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise pytest.fail.Exception("\n".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def netplay_config() -> dict:
    """Defaults for every sandboxed test; override (at any scope) to change them.

    Keys as for the marker: subnet, subnet6, pace, speed, strict, stall_timeout, settle, match, ignore, check,
    tls, tls_ca_dir, faults, seed, shadow.
    """
    return {}


@pytest.fixture(scope="module")
def netplay_cassette_dir(request: pytest.FixtureRequest) -> Path:
    """Where this module's cassettes live: ``<test dir>/cassettes/<module name>/``."""
    module_name = request.module.__name__.rpartition(".")[2]
    base = request.config.getoption("netplay_dir") or request.config.getini("netplay_dir")
    if base:
        return Path(request.config.rootpath, base) / module_name
    return Path(request.path).parent / "cassettes" / module_name


@pytest.fixture
def netplay_cassette_name(request: pytest.FixtureRequest) -> str:
    """This test's cassette file name: class and test name with its parametrize id, made safe."""
    cls = request.cls.__name__ if request.cls is not None else None
    return cassette_name(request.node.name, cls)


@pytest.fixture
def netplay_drive(netplay_cassette_dir):
    """Drives recorded clients against servers the test starts, in a live sandbox made in the
    cassette's subnet: ``netplay_drive.hosts(cassette)`` makes the recorded hosts,
    ``netplay_drive(cassette, noise_runs=2, ...)`` returns the
    :class:`~.core.drive_report.DriveReport`. Relative cassette paths are under this module's
    cassette directory."""
    from .runtime.drive import Driver

    driver = Driver(base=netplay_cassette_dir)
    try:
        yield driver
    finally:
        driver.close()


@pytest.fixture
def netplay(request: pytest.FixtureRequest, netplay_config, netplay_cassette_dir, netplay_cassette_name):
    """This test's sandbox, started in the session's mode; closed when the test function returns."""
    from .runtime.sandbox import Sandbox

    config = request.config
    marker = request.node.get_closest_marker("netplay")
    failure = None
    try:
        settings = merge(
            [
                ("ini", _ini_layer(config)),
                ("netplay_config fixture", netplay_config),
                (f"{request.node.nodeid}: @pytest.mark.netplay", dict(marker.kwargs) if marker else {}),
                ("command line", _cli_layer(config)),
            ]
        )
    except ConfigError as exc:
        failure = str(exc)  # failed outside the handler: the message is shown once, not chained
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    cassette = Path(settings.cassette) if settings.cassette else Path(netplay_cassette_name)
    if not cassette.is_absolute():
        cassette = Path(netplay_cassette_dir) / cassette
    mode = resolved_mode(settings.mode, cassette.exists())
    if mode == "replay" and not cassette.exists():
        pytest.fail(
            f"no cassette to replay for {request.node.nodeid}: expected {cassette}\n"
            f"record it with: pytest --netplay=record {request.node.nodeid!r}",
            pytrace=False,
        )
    created = _missing_directories(cassette.parent) if mode == "record" else []
    output_dir = tempfile.mkdtemp(prefix="netplay-output-")
    run, runs = request.node.stash.get(_run_key, (1, 1)) if mode == "record" else (1, 1)
    try:
        sandbox = Sandbox(
            settings.subnet,
            subnet6=settings.subnet6,
            mode=mode,
            cassette=(cassette if runs == 1 else run_path(cassette, run)) if mode != "live" else None,
            pace=settings.pace,
            speed=settings.speed,
            stall_timeout=settings.stall_timeout,
            settle=settings.settle,
            match=settings.match,
            output_dir=output_dir,
            ignore=settings.ignore,
            check=settings.check,
            tls=settings.tls,
            tls_ca_dir=settings.tls_ca_dir,
            faults=settings.faults,
            seed=settings.seed,
            agents=dict(settings.agents),
            key_file=settings.key_file,
            tunnel_mtu=settings.tunnel_mtu,
        )
    except ConfigError as exc:
        # A safety net: the merge validates with the sandbox's own validators.
        failure = f"{request.node.nodeid}: netplay settings refused by the sandbox: {exc}"
    else:
        try:
            sandbox.start()
        except NetplayError as exc:
            failure = f"cannot start the sandbox: {exc}"
        try:
            for primary, candidate in settings.shadow if failure is None else ():
                sandbox.shadow(primary, to=candidate, ignore=settings.ignore)
        except NetplayError as exc:
            sandbox.close("discard")
            failure = f"{request.node.nodeid}: bad shadow setting: {exc}"
    if failure is not None:
        shutil.rmtree(output_dir, ignore_errors=True)
        _remove_if_empty(created)
        pytest.fail(failure, pytrace=False)
    state = NetplayState(sandbox, settings, cassette, mode, output_dir, run=run, runs=runs)
    request.node.stash[_state_key] = state
    try:
        yield sandbox
    finally:
        if not state.finished:
            # The test function never ran (a later fixture failed): nothing to keep.
            state.finished = True
            try:
                sandbox.close("discard")
            except NetplayError:
                pass
        shutil.rmtree(output_dir, ignore_errors=True)
        _remove_if_empty(created)


def _missing_directories(directory: Path) -> list[Path]:
    """``directory`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    return missing


def _remove_if_empty(directories: list[Path]) -> None:
    """Remove the cassette directories a test made if it left nothing in them."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return  # not empty (another test's cassette), or already gone


def _holds_events(path: Path) -> bool:
    """Whether a recording holds anything beyond its header (a connection, a datagram...)."""
    from .cassette import Cassette

    try:
        cassette = Cassette(path, tolerate_truncation=True)
        try:
            return next(iter(cassette.events()), None) is not None
        finally:
            cassette.close()
    except NetplayError:
        return True  # unreadable: keep it for whoever looks into the failure


def _failed_name(cassette: Path) -> Path:
    return cassette.with_name(cassette.stem + ".failed" + cassette.suffix)


def _finish(item: pytest.Item, state: NetplayState, passed: bool, skipped: bool = False) -> str | None:
    """Close the sandbox; return a failure message if the replay diverged (strict)."""
    state.finished = True
    sandbox = state.sandbox
    note = None
    if skipped:
        # A skipped test says nothing about the traffic: keep no recording,
        # judge no replay.
        sandbox.close("discard")
        for run in range(1, state.run):
            run_path(state.cassette, run).unlink(missing_ok=True)
        return None
    if state.mode == "record":
        if passed:
            sandbox.close("commit")
            if state.run == state.runs:
                _learn_noise(item, state)
                item.user_properties.append(("netplay", "recorded"))
        else:
            for run in range(1, state.run):
                run_path(state.cassette, run).unlink(missing_ok=True)
            kept = _failed_name(state.cassette)
            sandbox.close(("keep_as", str(kept)))
            old = (
                f"{state.cassette} was left as it was"
                if state.cassette.exists()
                else "no cassette was written"
            )
            if _holds_events(kept):
                text = f"the test failed: its recording was kept at {kept}; {old}"
            else:
                kept.unlink(missing_ok=True)
                text = f"the test failed before anything was recorded, so no recording was kept; {old}"
            item.add_report_section("call", "netplay", text + "\n")
    else:
        sandbox.close("commit")
    if sandbox.tls_notes:
        item.add_report_section("call", "netplay tls", "\n".join(sandbox.tls_notes) + "\n")
    for host in sandbox.hosts:
        for stream, data in sandbox.host_output(host).items():
            item.add_report_section(
                "call", f"{host.name} ({host.address}) {stream}", data.decode(errors="replace")
            )
    if not passed and sandbox.faults_used:
        # The drops of a failing run can be repeated with its seed.
        item.add_report_section("call", "netplay faults", f"seed {sandbox.seed}: rerun with --netplay-seed={sandbox.seed}\n")
    shadows = [shadow.report for shadow in sandbox.shadows]
    if not all(shadows):
        text = "\n".join(report.format() for report in shadows if not report.ok)
        item.add_report_section("call", "netplay shadow", text + "\n")
        if passed and state.settings.strict:
            note = f"a shadow's candidate answered otherwise than its primary:\n{text}"
    if state.mode == "replay":
        report = sandbox.divergences
        item.user_properties.append(("netplay", "replayed" if report.ok else "divergent"))
        if not report.ok:
            text = f"replay of {state.cassette} diverged from the recording:\n{report.format()}"
            if not passed:
                item.add_report_section("call", "netplay divergence", text + "\n")
            elif state.settings.strict:
                note = text if note is None else f"{note}\n{text}"
            else:
                warnings.warn(NetplayDivergenceWarning(text), stacklevel=1)
    return note


def _learn_noise(item: pytest.Item, state: NetplayState) -> None:
    """After the last of several recordings: the cassette is the first plus the noise of the others."""
    if state.runs == 1:
        return
    runs = [run_path(state.cassette, run) for run in range(1, state.runs + 1)]
    noise = commit_with_noise(runs[0], runs[1:], state.cassette)
    regions = sum(len(learned.spans) for learned in noise)
    item.add_report_section(
        "call",
        "netplay",
        f"recorded {state.runs} times: {regions} noise region{'s' if regions != 1 else ''} "
        f"stored in {state.cassette}\n",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Record a sandboxed test several times (``--netplay-record-runs``): each run is a full
    setup, call and teardown, and only the last run's reports are shown unless an earlier one
    fails. The cassette changes only once every run has passed."""
    if "netplay" not in getattr(item, "fixturenames", ()):
        return None
    settings = merge([("ini", _ini_layer(item.config)), ("command line", _cli_layer(item.config))])
    if settings.mode != "record" or settings.record_runs == 1:
        return None
    from _pytest.runner import runtestprotocol

    from .learning import RunSpacing

    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    spacing = RunSpacing()
    for run in range(1, settings.record_runs + 1):
        spacing.next_run()
        item.stash[_run_key] = (run, settings.record_runs)
        item._report_sections.clear()  # what the earlier run printed is not this run's output
        last = run == settings.record_runs
        reports = runtestprotocol(item, nextitem=nextitem, log=last)
        if not last and any(report.failed or report.skipped for report in reports):
            for report in reports:
                item.ihook.pytest_runtest_logreport(report=report)
            break
    del item.stash[_run_key]
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function):
    state = pyfuncitem.stash.get(_state_key, None)
    if state is None:
        return (yield)
    try:
        result = yield
    except BaseException as exc:
        if not state.finished:
            try:
                _finish(pyfuncitem, state, passed=False, skipped=isinstance(exc, pytest.skip.Exception))
            except NetplayError as exc:
                pyfuncitem.add_report_section("call", "netplay", f"closing the sandbox failed: {exc}\n")
        raise
    message = _finish(pyfuncitem, state, passed=True)
    if message is not None:
        pytest.fail(message, pytrace=False)
    return result


class _Summary:
    """Counts cassettes recorded, replayed and divergent (from the reports, so xdist works too)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for name, value in report.user_properties:
            if name == "netplay":
                self.counts[value] = self.counts.get(value, 0) + 1

    def pytest_terminal_summary(self, terminalreporter) -> None:
        parts = []
        for key in ("recorded", "replayed", "divergent"):
            if self.counts.get(key):
                noun = "cassette" if self.counts[key] == 1 else "cassettes"
                parts.append(f"{self.counts[key]} {noun} {key}")
        if parts:
            terminalreporter.write_sep("-", "netplay")
            terminalreporter.write_line(", ".join(parts))
