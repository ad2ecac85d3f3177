"""`netplay record/replay/show/export` and the original `plg --record/--replay` flags."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_netplayground.cassette import Cassette, CassetteWriter
from pytest_netplayground.core.events import Closed, ConnectionOpened, Data, Direction, HalfClosed, Header

NETPLAY = [sys.executable, "-m", "pytest_netplayground"]
PLG = [
    sys.executable,
    "-c",
    "import sys; from pytest_netplayground.cli import plg_main; sys.exit(plg_main())",
]
ROOT = Path(__file__).resolve().parents[1]

SERVER = f"{sys.executable} -m pytest_netplayground.examples.echo_server"
# The client starts once its server listens, in recording and replay alike: on
# replay a connection the server refuses is answered by the cassette instead,
# and the live server would then wait for a client that never comes.
CLIENT = f"sleep 0.5; {sys.executable} -m pytest_netplayground.examples.echo_client 10.0.0.1"
CLIENT_LINES = ["10.0.0.2 | hello from echo server", "10.0.0.2 | PING", "10.0.0.2 | NET PLAYGROUND"]


def run(command: list[str], *args: str, cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*command, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def netplay(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run(NETPLAY, *args, **kwargs)


def client_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [
        line
        for line in result.stdout.splitlines()
        if line.startswith("10.0.0.2 | ") and "connected" not in line
    ]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The shipped echo demo, recorded once: (cassette, what `netplay record` did)."""
    path = tmp_path_factory.mktemp("demo") / "demo.traffic"
    return path, netplay("record", "-f", str(path), SERVER, CLIENT)


@pytest.mark.root
def test_record_writes_the_demos_conversation_to_the_cassette(demo):
    path, result = demo
    assert result.returncode == 0, result.stderr
    assert client_lines(result) == CLIENT_LINES
    assert f"netplay: recorded {path}" in result.stderr
    [opened] = [e for e in Cassette(path).events() if isinstance(e, ConnectionOpened)]
    assert (opened.client.host, str(opened.server)) == ("10.0.0.2", "10.0.0.1:7000")
    served = b"".join(
        e.data for e in Cassette(path).events() if isinstance(e, Data) and e.direction is Direction.S2C
    )
    assert served == b"hello from echo server\nPING\nNET PLAYGROUND\n"


@pytest.mark.root
def test_replay_of_the_demo_matches_its_recording(demo):
    path, _ = demo
    result = netplay("replay", "--strict", "-f", str(path), SERVER, CLIENT)
    assert result.returncode == 0, result.stderr
    assert client_lines(result) == CLIENT_LINES
    assert "diverged" not in result.stderr


@pytest.mark.root
def test_client_only_replay_plays_the_recorded_server(demo):
    path, _ = demo
    result = netplay("replay", "--strict", "-f", str(path), "true", CLIENT)
    assert result.returncode == 0, result.stderr
    assert client_lines(result) == CLIENT_LINES
    assert "diverged" not in result.stderr


CHANGED_CLIENT = (
    f"{sys.executable} -m pytest_netplayground.examples.echo_client 10.0.0.1 pong 'net playground'"
)


@pytest.mark.root
def test_strict_replay_exits_1_on_divergence_and_prints_the_report(demo):
    path, _ = demo
    result = netplay("replay", "--strict", "-f", str(path), "true", CHANGED_CLIENT)
    assert result.returncode == 1
    assert f"netplay: the replay diverged from {path}:" in result.stderr
    assert "c2s: bytes differ at offset 1" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.root
def test_replay_with_no_strict_reports_a_divergence_and_keeps_the_commands_exit_code(demo):
    path, _ = demo
    result = netplay("replay", "--no-strict", "-f", str(path), "true", CHANGED_CLIENT)
    assert result.returncode == 0
    assert "c2s: bytes differ at offset 1" in result.stderr


@pytest.mark.root
def test_plg_flags_record_and_replay_end_to_end(tmp_path):
    recorded = run(PLG, "--record", "-s", "10.0.0.0/24", "-f", "dump.traffic", SERVER, CLIENT, cwd=tmp_path)
    assert recorded.returncode == 0, recorded.stderr
    assert client_lines(recorded) == CLIENT_LINES
    assert (tmp_path / "dump.traffic").exists()

    replayed = run(
        PLG, "--replay", "--strict", "-s", "10.0.0.0/24", "-f", "dump.traffic", SERVER, CLIENT, cwd=tmp_path
    )
    assert replayed.returncode == 0, replayed.stderr
    assert client_lines(replayed) == CLIENT_LINES
    assert "diverged" not in replayed.stderr


def in_order(text: str, parts: list[str]) -> bool:
    positions = [text.find(part) for part in parts]
    return -1 not in positions and positions == sorted(positions)


@pytest.mark.root
def test_show_prints_the_recorded_conversation_as_text(demo):
    path, _ = demo
    result = netplay("show", str(path))
    assert result.returncode == 0, result.stderr
    assert "-> 10.0.0.1:7000 established" in result.stdout
    assert in_order(
        result.stdout,
        [
            "#0 10.0.0.2:",
            "client <-- server  23 bytes\n      hello from echo server\\n",
            "client --> server  5 bytes\n      ping\\n",
            "client <-- server  5 bytes\n      PING\\n",
            "client --> server  15 bytes\n      net playground\\n",
            "client <-- server  15 bytes\n      NET PLAYGROUND\\n",
        ],
    )


def write_cassette(path: Path) -> Path:
    """Two conversations, interleaved in time as a recording would have them."""
    with CassetteWriter(path, Header("10.0.0.0/24", started=1732170000.0, tool_version="0.1.0")) as writer:
        for event in [
            ConnectionOpened(0.010, 0, ("10.0.0.2", 40000), ("10.0.0.1", 80)),
            ConnectionOpened(0.011, 1, ("10.0.0.3", 40001), ("10.0.0.1", 25)),
            Data(0.012, 0, Direction.C2S, b"GET / HTTP/1.0\r\n\r\n"),
            Data(0.013, 1, Direction.S2C, b"220 mail ready\r\n"),
            Data(0.014, 0, Direction.S2C, b"HTTP/1.0 200 OK\r\n\r\nhome page"),
            Data(0.015, 1, Direction.C2S, b"QUIT\r\n"),
            HalfClosed(0.016, 0, Direction.S2C),
            HalfClosed(0.016, 1, Direction.C2S),
            Closed(0.017, 0),
            Closed(0.018, 1),
        ]:
            writer.write(event)
        writer.commit(0.02)
    return path


def test_show_prints_each_connection_under_its_own_heading(tmp_path):
    result = netplay("show", str(write_cassette(tmp_path / "two.traffic")))
    assert result.returncode == 0, result.stderr
    text = result.stdout
    first, second = (
        text.index("#0 10.0.0.2:40000 -> 10.0.0.1:80"),
        text.index("#1 10.0.0.3:40001 -> 10.0.0.1:25"),
    )
    assert first < second
    assert in_order(
        text[first:second],
        ["client --> server  18 bytes", "GET / HTTP/1.0\\r\\n", "client <-- server  28 bytes", "home page"],
    )
    assert in_order(
        text[second:],
        ["client <-- server  16 bytes", "220 mail ready\\r\\n", "client --> server  6 bytes", "QUIT\\r\\n"],
    )


@pytest.mark.root
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_exported_pcap_shows_the_conversation_in_tshark(demo, tmp_path):
    path, _ = demo
    pcap = tmp_path / "out.pcap"
    result = netplay("export", str(path), "-o", str(pcap))
    assert result.returncode == 0, result.stderr
    follow = subprocess.run(
        ["tshark", "-r", str(pcap), "-q", "-z", "follow,tcp,ascii,0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "Node 1: 10.0.0.1:7000" in follow
    assert in_order(follow, ["hello from echo server", "ping", "PING", "net playground", "NET PLAYGROUND"])


def corrupt_copy(tmp_path: Path) -> tuple[Path, int]:
    """A cassette with a garbage line in the middle: (its path, the garbage's byte offset)."""
    lines = write_cassette(tmp_path / "good.traffic").read_bytes().splitlines(keepends=True)
    middle = len(lines) // 2
    path = tmp_path / "corrupt.traffic"
    path.write_bytes(b"".join(lines[:middle] + [b"this is not a record\n"] + lines[middle:]))
    return path, sum(len(line) for line in lines[:middle])


@pytest.mark.parametrize(
    "command",
    [
        ["show", "{file}"],
        ["export", "{file}", "-o", "{dir}/out.pcap"],
        pytest.param(["replay", "-f", "{file}", "true", "true"], marks=pytest.mark.root),
    ],
    ids=["show", "export", "replay"],
)
def test_corrupt_cassette_is_a_clear_error_naming_file_and_offset(tmp_path, command):
    path, offset = corrupt_copy(tmp_path)
    result = netplay(*(arg.format(file=path, dir=tmp_path) for arg in command))
    assert result.returncode == 1
    assert f"netplay: error: {path} at byte {offset}:" in result.stderr
    assert "Traceback" not in result.stderr
