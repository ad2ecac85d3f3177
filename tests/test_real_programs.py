"""Record and replay real third-party programs: nginx, http.server, redis, PostgreSQL, socat.

Each scenario records with the real server, then replays with the server absent
(the cassette stands in), with a placeholder process in its host, or with the
server present. None may hang: every client runs under a deadline of the
replay's stall timeout plus a few seconds, and a client still running then
fails the test saying that the replay hung.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_netplayground import Sandbox
from pytest_netplayground.cassette import Cassette
from pytest_netplayground.core.events import ConnectionOpened
from tests.support import leaks, servers

pytestmark = pytest.mark.root

SERVER = "10.0.0.1"
#: The stall timeout of every replay here, in seconds.
STALL = 2.0
#: A replay must end within its stall timeout plus this many seconds.
GRACE = 8.0
ENDS_WITHIN = STALL + GRACE
#: Five redis-cli calls replayed with the cassette standing in: a bound on
#: behaviour (no per-connection wait of seconds), far above the ~0.1 s they take.
FIVE_CALLS_WITHIN = 5.0




@contextlib.contextmanager
def sandbox(mode: str, cassette: Path, **options):
    """A started sandbox with hosts ``server`` (10.0.0.1) and ``client`` (10.0.0.2).

    After it closes nothing of it may be left running.
    """
    if mode == "replay":
        options.setdefault("stall_timeout", STALL)
    with leaks.running(mode, cassette, **options) as sb:
        sb.add_host("server")
        sb.add_host("client")
        yield sb


def run_client(
    sb: Sandbox, argv: list[str], within: float = ENDS_WITHIN, **kwargs
) -> subprocess.CompletedProcess:
    """Run ``argv`` in the client host; fail the test if it has not ended ``within`` seconds.

    The failure shows what the replay reported once closed, as a person
    looking into the hang would want.
    """
    try:
        return sb.host("client").run(argv, timeout=within, **kwargs)
    except subprocess.TimeoutExpired:
        sb.close("abort" if sb.is_recording else "commit")
        report = sb.divergences.format() if sb.mode == "replay" else ""
        pytest.fail(f"{argv} did not end within {within} s: the {sb.mode} hung\n{report}", pytrace=False)


def connections(cassette: Path) -> list[ConnectionOpened]:
    return [e for e in Cassette(cassette).events() if isinstance(e, ConnectionOpened)]


def diverged(sb: Sandbox, *words: str) -> str:
    """The report of a replay that must have diverged; it must name each of ``words``."""
    text = sb.divergences.format()
    assert not sb.divergences.ok, "the replay diverged, yet reported nothing"
    for word in words:
        assert word in text, f"{word!r} not in the report:\n{text}"
    return text


@pytest.fixture
def cassette(tmp_path) -> Path:
    return tmp_path / "recording.netplay"


# -- nginx and curl --------------------------------------------------------------


def curl(sb: Sandbox, path: str, *options: str) -> subprocess.CompletedProcess:
    url = f"http://{SERVER}:{servers.NGINX_PORT}{path}"
    return run_client(sb, [servers.require("curl"), "-sS", "--max-time", "60", *options, url])


@pytest.fixture
def nginx_recording(cassette, tmp_path) -> Path:
    """A recording of ``curl /index.txt`` answered by nginx."""
    with sandbox("record", cassette) as sb:
        servers.start_nginx(sb.host("server"), tmp_path)
        fetched = curl(sb, "/index.txt")
    assert (fetched.returncode, fetched.stdout) == (0, servers.WEB_FILES["index.txt"]), fetched.stderr
    return cassette


@pytest.mark.timeout(60)
def test_curl_gets_the_recorded_page_with_nginx_absent(nginx_recording):
    with sandbox("replay", nginx_recording) as sb:
        fetched = curl(sb, "/index.txt")
    assert (fetched.returncode, fetched.stdout) == (0, servers.WEB_FILES["index.txt"]), fetched.stderr
    assert sb.divergences.ok, sb.divergences.format()


@pytest.mark.timeout(60)
def test_curl_asking_a_shorter_path_than_recorded_ends_and_reports(nginx_recording):
    started = time.monotonic()
    with sandbox("replay", nginx_recording) as sb:
        curl(sb, "/i.txt")
    assert time.monotonic() - started < ENDS_WITHIN + 5, "the replay did not end in time"
    diverged(sb, "c2s")


@pytest.mark.timeout(60)
def test_nginx_present_on_replay_answers_with_another_date_which_is_reported(nginx_recording, tmp_path):
    time.sleep(1.1)  # Date has one-second resolution: make sure it moves on
    with sandbox("replay", nginx_recording) as sb:
        servers.start_nginx(sb.host("server"), tmp_path / "again")
        fetched = curl(sb, "/index.txt", "-i")
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout.endswith(servers.WEB_FILES["index.txt"]), "the client did not get the recorded page"
    diverged(sb, "s2c: bytes differ")


# -- python -m http.server and a keep-alive client -------------------------------

# Three requests on one HTTP/1.1 connection, each response read to its end
# before the next request: by http.client, and by a requests.Session.
KEEP_ALIVE_CLIENTS = {
    "http.client": """
import http.client, sys
conn = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=60)
for path in ("/index.txt", "/i.txt", "/index.txt"):
    conn.request("GET", path)
    response = conn.getresponse()
    sys.stdout.buffer.write(b"%d " % response.status + response.read())
conn.close()
""",
    "requests": """
import sys, requests
with requests.Session() as session:
    for path in ("/index.txt", "/i.txt", "/index.txt"):
        response = session.get(f"http://{sys.argv[1]}:{sys.argv[2]}{path}", timeout=60)
        sys.stdout.buffer.write(b"%d " % response.status_code + response.content)
""",
}
KEEP_ALIVE_OUTPUT = b"".join(
    b"200 " + servers.WEB_FILES[name] for name in ("index.txt", "i.txt", "index.txt")
)


def keep_alive_client(sb: Sandbox, client: str) -> subprocess.CompletedProcess:
    source = KEEP_ALIVE_CLIENTS[client]
    return run_client(sb, [sys.executable, "-c", source, SERVER, str(servers.HTTP_SERVER_PORT)])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("client", sorted(KEEP_ALIVE_CLIENTS))
def test_keep_alive_client_gets_three_recorded_responses_with_http_server_absent(cassette, tmp_path, client):
    if client == "requests":
        pytest.importorskip("requests")
    with sandbox("record", cassette) as sb:
        servers.start_http_server(sb.host("server"), tmp_path)
        recorded = keep_alive_client(sb, client)
    assert (recorded.returncode, recorded.stdout) == (0, KEEP_ALIVE_OUTPUT), recorded.stderr
    assert len(connections(cassette)) == 1, "the three requests did not share one connection"

    with sandbox("replay", cassette) as sb:
        replayed = keep_alive_client(sb, client)
    assert (replayed.returncode, replayed.stdout) == (0, KEEP_ALIVE_OUTPUT), replayed.stderr
    assert sb.divergences.ok, sb.divergences.format()


# -- redis-cli -----------------------------------------------------------------------

REDIS_CALLS = [
    (["SET", "counter", "10"], b"OK\n"),
    (["GET", "counter"], b"10\n"),
    (["INCR", "counter"], b"11\n"),
    (["INCRBY", "counter", "5"], b"16\n"),
    (["GET", "counter"], b"16\n"),
]


def redis_calls(sb: Sandbox) -> tuple[list[bytes], float]:
    """What each of :data:`REDIS_CALLS` printed, and how long the five took."""
    cli = servers.require("redis-cli")
    started = time.monotonic()
    outputs = []
    for args, _ in REDIS_CALLS:
        result = run_client(sb, [cli, "-h", SERVER, "-p", str(servers.REDIS_PORT), *args])
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    return outputs, time.monotonic() - started


@pytest.fixture
def redis_recording(cassette, tmp_path) -> Path:
    with sandbox("record", cassette) as sb:
        servers.start_redis(sb.host("server"), tmp_path)
        outputs, _ = redis_calls(sb)
    assert outputs == [expected for _, expected in REDIS_CALLS]
    assert len(connections(cassette)) == len(REDIS_CALLS)
    return cassette


@pytest.mark.timeout(90)
def test_redis_cli_calls_replay_promptly_with_the_server_absent(redis_recording):
    with sandbox("replay", redis_recording) as sb:
        outputs, took = redis_calls(sb)
    assert outputs == [expected for _, expected in REDIS_CALLS]
    assert sb.divergences.ok, sb.divergences.format()
    assert took < FIVE_CALLS_WITHIN, f"five stood-in calls took {took:.2f} s"


@pytest.mark.timeout(90)
def test_redis_cli_calls_replay_promptly_with_a_placeholder_in_the_servers_host(redis_recording):
    with sandbox("replay", redis_recording) as sb:
        sb.host("server").spawn(["sleep", "60"])
        outputs, took = redis_calls(sb)
    assert outputs == [expected for _, expected in REDIS_CALLS]
    assert sb.divergences.ok, sb.divergences.format()
    assert took < FIVE_CALLS_WITHIN, f"five stood-in calls took {took:.2f} s"


# -- redis-benchmark: a pool of connections splits the work anew each run ------------


@pytest.mark.timeout(180)
def test_redis_benchmark_with_ten_connections_replays_by_exchange(cassette, tmp_path):
    benchmark = servers.require("redis-benchmark")
    argv = [benchmark, "-h", SERVER, "-p", str(servers.REDIS_PORT), "-c", "10", "-n", "2000"]
    argv += ["-t", "set,get", "--csv"]
    with sandbox("record", cassette) as sb:
        servers.start_redis(sb.host("server"), tmp_path)
        recorded = run_client(sb, argv, within=120)
    assert recorded.returncode == 0, recorded.stderr
    assert re.search(rb'^"SET",.*^"GET",', recorded.stdout, re.M | re.S), recorded.stdout

    with sandbox("replay", cassette, match="exchange") as sb:
        replayed = run_client(sb, argv, within=120)
    assert replayed.returncode == 0, replayed.stderr
    assert re.search(rb'^"SET",.*^"GET",', replayed.stdout, re.M | re.S), replayed.stdout
    assert sb.divergences.ok, sb.divergences.format()


# -- PostgreSQL and psql -------------------------------------------------------------


def psql(sb: Sandbox) -> subprocess.CompletedProcess:
    env = {**os.environ, "PGPASSWORD": servers.POSTGRES_PASSWORD, "PGCONNECT_TIMEOUT": "30"}
    argv = [servers.require("psql"), "-X", "-h", SERVER, "-p", str(servers.POSTGRES_PORT), "-U", "postgres",
            "-At", "-c", "select 1"]
    return run_client(sb, argv, env=env)


@pytest.fixture(params=["trust", "md5"])
def psql_recording(request, cassette):
    """(auth, cassette): ``psql -c 'select 1'`` recorded against a fresh cluster."""
    with servers.postgres_directory() as directory, sandbox("record", cassette) as sb:
        servers.start_postgres(sb.host("server"), directory, auth=request.param)
        recorded = psql(sb)
    assert (recorded.returncode, recorded.stdout) == (0, b"1\n"), recorded.stderr
    return request.param, cassette


@pytest.mark.timeout(120)
def test_psql_replays_with_postgres_absent(psql_recording):
    _, recording = psql_recording
    with sandbox("replay", recording) as sb:
        replayed = psql(sb)
    assert (replayed.returncode, replayed.stdout) == (0, b"1\n"), replayed.stderr
    assert sb.divergences.ok, sb.divergences.format()


@pytest.mark.timeout(120)
def test_psql_replay_with_postgres_present_ends_and_reports_what_differed(psql_recording):
    """A new server has another BackendKeyData; under md5, another salt, so it
    rejects the recorded password answer and closes."""
    auth, recording = psql_recording
    started = time.monotonic()
    with servers.postgres_directory() as directory, sandbox("replay", recording) as sb:
        servers.start_postgres(sb.host("server"), directory, auth=auth)
        replayed = psql(sb)
    assert time.monotonic() - started < 60, "the replay did not end in time"
    assert (replayed.returncode, replayed.stdout) == (0, b"1\n"), replayed.stderr
    diverged(sb, "s2c: bytes differ")


# -- socat: a live client that sends fewer bytes than were recorded -------------------

LONG_LINE = b"a line the recording holds in full\n"


def socat_client(sb: Sandbox, line: bytes) -> subprocess.CompletedProcess:
    # -t 30: after its input ends, socat waits up to 30 s for the server to
    # close; the replay must close first.
    argv = [servers.require("socat"), "-t", "30", "-", f"TCP:{SERVER}:7000"]
    return run_client(sb, argv, input=line)


@pytest.mark.timeout(60)
def test_socat_sending_less_than_recorded_ends_and_reports(cassette):
    socat = servers.require("socat")
    with sandbox("record", cassette) as sb:
        sb.host("server").spawn([socat, "TCP-LISTEN:7000,reuseaddr", "EXEC:cat"])
        sb.host("server").wait_for_port(7000)
        recorded = socat_client(sb, LONG_LINE)
    assert (recorded.returncode, recorded.stdout) == (0, LONG_LINE), recorded.stderr

    started = time.monotonic()
    with sandbox("replay", cassette) as sb:
        socat_client(sb, b"short\n")
    assert time.monotonic() - started < ENDS_WITHIN + 5, "the replay did not end in time"
    diverged(sb, "c2s")


# -- servers present on replay, strict mode, through the pytest plugin ----------------

# Each suite runs in a pytest subprocess (namespaces are process-wide state) and
# starts its server in every mode, so on replay the real server answers too.
SUITE_CONFTEST = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
"""
SUITE_HEAD = """
import os, subprocess, sys
import pytest
from tests.support import servers

ENV = {**os.environ, "PGPASSWORD": servers.POSTGRES_PASSWORD, "PGCONNECT_TIMEOUT": "30"}
PSQL = ["psql", "-X", "-h", "10.0.0.1", "-U", "postgres", "-At", "-c", "select 1"]

@pytest.fixture
def pg_directory():
    # A fixture, so that it is removed after the sandbox has stopped the server.
    with servers.postgres_directory() as directory:
        yield directory

def client_run(netplay, argv):
    server, client = netplay.add_host("server"), netplay.add_host("client")
    return server, lambda: client.run(argv, env=ENV, timeout=30)
"""
SUITE_TESTS = {
    "nginx": """
@pytest.mark.netplay(stall_timeout=2)
def test_present(netplay, tmp_path):
    server, talk = client_run(netplay, ["curl", "-sS", "-i", "http://10.0.0.1:8080/index.txt"])
    servers.start_nginx(server, tmp_path)
    result = talk()
    assert result.returncode == 0 and result.stdout.endswith(servers.WEB_FILES["index.txt"]), result
""",
    "http_server": """
@pytest.mark.netplay(stall_timeout=2)
def test_present(netplay, tmp_path):
    script = %r
    server, talk = client_run(netplay, [sys.executable, "-c", script, "10.0.0.1", "8000"])
    servers.start_http_server(server, tmp_path)
    result = talk()
    assert result.returncode == 0 and result.stdout == %r, result
""" % (KEEP_ALIVE_CLIENTS["requests"], KEEP_ALIVE_OUTPUT),
    # BackendKeyData (the backend's pid and a random secret) changes on every
    # run; two recordings can agree on some of its bytes by chance (or on the
    # pid), so the field is named as noise outright.
    "psql_trust": """
@pytest.mark.netplay(stall_timeout=2, ignore=[r"5432:s2c:K\\x00\\x00\\x00\\x0c[\\s\\S]{8}"])
def test_present(netplay, pg_directory):
    server, talk = client_run(netplay, PSQL)
    servers.start_postgres(server, pg_directory, auth="trust")
    result = talk()
    assert (result.returncode, result.stdout) == (0, b"1\\n"), result
""",
    # A new server sends a new salt, so it rejects the recorded answer: only
    # the client is checked, the server's answers come from the cassette.
    "psql_md5": """
@pytest.mark.netplay(stall_timeout=2, check=["client"])
def test_present(netplay, pg_directory):
    server, talk = client_run(netplay, PSQL)
    servers.start_postgres(server, pg_directory, auth="md5")
    result = talk()
    assert (result.returncode, result.stdout) == (0, b"1\\n"), result
""",
}
NEEDS = {"nginx": ["nginx", "curl"], "http_server": [], "psql_trust": ["psql"], "psql_md5": ["psql"]}


def server_suite(pytester: pytest.Pytester, name: str) -> None:
    """The suite of one scenario; skips here if a program it needs is missing."""
    for program in NEEDS[name]:
        servers.require(program)
    if name.startswith("psql"):
        servers.postgres_bin("initdb")
        servers.postgres_bin("postgres")
    pytester.makeconftest(SUITE_CONFTEST)
    pytester.makepyfile(test_server=SUITE_HEAD + SUITE_TESTS[name])


def run_suite(pytester: pytest.Pytester, *args: str, passes: bool) -> pytest.RunResult:
    """Run the suite; its one test must pass, or fail (and not stop pytest with an error)."""
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=150)
    output = f"{result.stdout.str()}\n{result.stderr.str()}"
    assert result.ret == (0 if passes else 1), f"pytest {' '.join(args)} exited with {result.ret}:\n{output}"
    result.assert_outcomes(**{"passed" if passes else "failed": 1})
    return result


@pytest.mark.timeout(400)
@pytest.mark.parametrize("name", list(SUITE_TESTS))
def test_replay_with_the_server_present_passes_strictly_after_two_recording_runs(pytester, name):
    server_suite(pytester, name)
    run_suite(pytester, "--netplay=record", "--netplay-record-runs=2", passes=True)
    time.sleep(1.1)  # Date has one-second resolution: make sure it moves on
    run_suite(pytester, "--netplay=replay", passes=True)


@pytest.mark.timeout(400)
@pytest.mark.parametrize("name", ["nginx", "http_server"])  # psql_trust names its noise outright
def test_replay_with_the_server_present_fails_strictly_after_one_recording_run(pytester, name):
    server_suite(pytester, name)
    run_suite(pytester, "--netplay=record", passes=True)
    time.sleep(1.1)
    replayed = run_suite(pytester, "--netplay=replay", passes=False)
    replayed.stdout.fnmatch_lines(["*diverged from the recording*", "*s2c: bytes differ at offset*"])
