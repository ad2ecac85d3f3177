"""Hosts on a second machine: two network namespaces joined by a veth pair play the two machines,
``netplay agent`` runs in one, the sandbox's command line in the other."""

from __future__ import annotations

import ast
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_netplayground.cassette import Cassette
from pytest_netplayground.core.events import ConnectionOpened, Data, Datagram, UdpFlow
from tests.support import machines as m

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs the ip command (iproute2) to make the machines"),
]

SERVER = f"{sys.executable} -m pytest_netplayground.examples.echo_server 7000"
CLIENT = f"sleep 1; {sys.executable} -m pytest_netplayground.examples.echo_client 10.0.0.2:7000 ping 'net playground'"
ANSWERS = ["10.0.0.1 | hello from echo server", "10.0.0.1 | PING", "10.0.0.1 | NET PLAYGROUND"]


@pytest.fixture
def machines(tmp_path):
    two = m.make_machines(tmp_path)
    try:
        yield two
    finally:
        two.stop_agent(signal.SIGKILL)
        m.remove(two.a, two.b)


@pytest.fixture
def agent(machines):
    machines.start_agent()
    yield machines
    code = machines.stop_agent()
    assert code == 0, machines.log()
    assert m.pids_in(machines.b) == [], "the agent left processes on its machine"


def answers(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stdout.splitlines() if line.startswith("10.0.0.1 | ") and "connected" not in line]


def conversation(path: Path) -> list[tuple]:
    """What a cassette says was said, without what differs from run to run (times, client ports)."""
    said = []
    servers = {}
    for event in Cassette(path, tolerate_truncation=True).events():
        if isinstance(event, ConnectionOpened):
            servers[event.conn] = (event.client.host, str(event.server))
            said.append(("open", *servers[event.conn], event.outcome.value))
        elif isinstance(event, Data):
            said.append(("data", servers[event.conn], event.direction.value, event.data))
        elif isinstance(event, UdpFlow):
            said.append(("udp", event.client.host, str(event.server)))
        elif isinstance(event, Datagram):
            said.append(("datagram", event.direction.value, event.data))
    return said


def merged(said: list[tuple]) -> list[tuple]:
    """Data of one direction run together (how TCP cut it into reads may differ)."""
    out: list[tuple] = []
    for item in said:
        if item[0] == "data" and out and out[-1][:3] == item[:3]:
            out[-1] = (*item[:3], out[-1][3] + item[3])
        else:
            out.append(item)
    return out


def test_a_remote_server_is_recorded_and_replayed_as_on_one_machine(agent, tmp_path):
    remote = tmp_path / "remote.traffic"
    local = tmp_path / "local.traffic"
    recorded = agent.netplay("record", "-f", str(remote), "--on", "2=b", CLIENT, SERVER)
    assert recorded.returncode == 0, recorded.stderr
    assert answers(recorded) == ANSWERS
    alone = subprocess.run(
        [m.PYTHON, "-m", "pytest_netplayground", "record", "-f", str(local), CLIENT, SERVER],
        capture_output=True, text=True, timeout=60, cwd=m.ROOT,
    )
    assert alone.returncode == 0, alone.stderr
    assert merged(conversation(remote)) == merged(conversation(local))
    assert any(item[0] == "data" for item in conversation(remote))
    # Replay with the server running on the agent's machine, then with the cassette playing it.
    for server in (SERVER, "-"):
        replayed = agent.netplay("replay", "-f", str(remote), "--on", "2=b", CLIENT, server)
        assert replayed.returncode == 0, replayed.stderr
        assert answers(replayed) == ANSWERS
        assert "diverged" not in replayed.stderr


UDP_ECHO = (
    f"{sys.executable} -c \"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
    "s.bind(('', 5353)); d, a = s.recvfrom(70000); s.sendto(d[::-1], a)\""
)
UDP_ASK = (
    f"{sys.executable} -c \"import socket,time; time.sleep(1); s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
    "s.settimeout(5); s.sendto(b'x' * 4000 + b'end', ('10.0.0.4', 5353)); print('udp', s.recv(70000)[:3])\""
)


@pytest.mark.needs("ping")
def test_ping_udp_and_a_bulk_transfer_cross_the_tunnel_whatever_their_size(agent, tmp_path):
    # 3 MB each way through TCP: segments sized for the tunnel's path (veth MTU 1500), none black-holed;
    # ping and UDP larger than that path: the tunnel datagram is fragmented between the machines.
    bulk_server = (
        f"{sys.executable} -c \"import socket; l=socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        "l.bind(('', 9000)); l.listen(); c,_=l.accept(); n=0\nwhile True:\n d=c.recv(1<<16)\n if not d: break\n n+=len(d)\n"
        "c.sendall(b'y'*n); c.close(); print('got', n)\""
    )
    bulk_client = (
        f"sleep 1; {sys.executable} -c \"import socket; s=socket.create_connection(('10.0.0.2', 9000), timeout=20); "
        "s.sendall(b'x'*3000000); s.shutdown(socket.SHUT_WR); n=0\n"
        "while True:\n d=s.recv(1<<16)\n if not d: break\n n+=len(d)\n"
        "print('back', n)\""
    )
    result = agent.netplay(
        "run", "--on", "2=b", "--on", "4=b", "--exit-code-from", "1",
        f"{bulk_client}; ping -c 2 -s 3000 -W 2 10.0.0.4 && ping -6 -c 1 -s 2000 -W 2 h4 && {UDP_ASK}",
        bulk_server, "-", UDP_ECHO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "10.0.0.1 | back 3000000" in result.stdout
    assert "10.0.0.2 | got 3000000" in result.stdout
    assert "10.0.0.1 | 2 packets transmitted, 2 received" in result.stdout
    assert "10.0.0.1 | 1 packets transmitted, 1 received" in result.stdout  # IPv6, between the machines
    assert "10.0.0.1 | udp b'dne'" in result.stdout


def test_the_remote_host_gets_a_tun_sized_for_the_path_and_its_own_names(agent):
    result = agent.netplay(
        "run", "--on", "2=b", "--names", "client,db", "--exit-code-from", "2",
        "-", "ip -o link show dev eth0 | grep -o 'mtu [0-9]*'; hostname; getent hosts client db",
    )
    assert result.returncode == 0, result.stderr
    lines = [line.split(" | ", 1)[1] for line in result.stdout.splitlines() if line.startswith("10.0.0.2 | ")]
    # 1500 on the veth, less 20 (IPv4) + 8 (UDP) + the sealing's overhead.
    assert lines[0] == f"mtu {1500 - 28 - 40}"
    assert lines[1] == "db"
    assert "client" in lines[2] and "db" in lines[3]


def test_a_larger_tunnel_mtu_gives_the_remote_host_larger_packets_fragmented_between_the_machines(agent):
    # 3 MB each way in segments larger than the 1500-byte path: each sealed datagram is
    # fragmented by the kernel on the way and put back together on the other machine.
    server = (
        f"{sys.executable} -c \"import socket; l=socket.socket(); l.bind(('', 9100)); l.listen(); "
        "c,_=l.accept(); n=0\nwhile True:\n d=c.recv(1<<16)\n if not d: break\n n+=len(d)\n"
        "c.sendall(b'y'*n); c.close(); print('got', n)\""
    )
    client = (
        f"sleep 1; {sys.executable} -c \"import socket; s=socket.create_connection(('10.0.0.2', 9100), timeout=20); "
        "s.sendall(b'x'*3000000); s.shutdown(socket.SHUT_WR); n=0\n"
        "while True:\n d=s.recv(1<<16)\n if not d: break\n n+=len(d)\n"
        "print('back', n)\""
    )
    result = agent.netplay(
        "run", "--tunnel-mtu", "9000", "--on", "2=b", "--exit-code-from", "1",
        client, f"ip -o link show dev eth0 | grep -o 'mtu [0-9]*'; {server}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"10.0.0.2 | mtu {9000 - 28 - 40}" in result.stdout
    assert "10.0.0.1 | back 3000000" in result.stdout and "10.0.0.2 | got 3000000" in result.stdout


def test_a_wrong_key_is_one_clear_error_on_both_ends(agent, tmp_path):
    other = tmp_path / "other.key"
    subprocess.run(
        [m.PYTHON, "-m", "pytest_netplayground", "agent", "--make-key", str(other)],
        check=True, capture_output=True, cwd=m.ROOT,
    )
    result = agent.netplay("run", "--on", "1=b", "true", key=other)
    assert result.returncode == 1
    assert "b=192.0.2.2:50000" in result.stderr and "different tunnel key" in result.stderr
    time.sleep(0.3)
    assert "different tunnel key" in agent.log()
    # And the agent still serves the right key.
    ok = agent.netplay("run", "--on", "1=b", "hostname")
    assert ok.returncode == 0, ok.stderr


def test_no_agent_listening_is_a_clear_error(machines):
    result = machines.netplay("run", "--on", "1=b", "true")
    assert result.returncode == 1
    assert "cannot reach agent b (192.0.2.2:50000)" in result.stderr
    assert "netplay agent --listen" in result.stderr


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


@pytest.mark.parametrize("whom", ["agent", "agent and session"])
def test_an_agent_killed_mid_recording_ends_its_hosts_and_keeps_a_partial_cassette(machines, tmp_path, whom):
    """SIGKILL of the agent alone (its session then ends its hosts and says so), or of the agent and
    its session at once (the control connection just ends)."""
    machines.start_agent()
    cassette = tmp_path / "cut.traffic"
    talker = (
        f"{sys.executable} -c \"import socket,time; s=socket.create_connection(('10.0.0.2', 7000), timeout=5); "
        "print(s.recv(100), flush=True)\n"
        "for i in range(200):\n s.sendall(b'line %d\\n' % i); s.recv(100); time.sleep(0.05)\""
    )
    cli = subprocess.Popen(
        machines.command(
            machines.a, m.PYTHON, "-m", "pytest_netplayground", "record", "-f", str(cassette),
            "--agent", f"b={machines.agent_address}", "--key-file", str(machines.key), "--on", "2=b",
            f"sleep 1; {talker}", f"{SERVER} --connections 1",
        ),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=machines.environment(), cwd=m.ROOT,
    )
    time.sleep(4)
    assert cli.poll() is None, cli.communicate()
    if whom == "agent and session":
        for child in children(machines.agent.pid):
            os.kill(child, signal.SIGKILL)
    machines.agent.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    out, err = cli.communicate(timeout=30)
    took = time.monotonic() - killed
    assert "b'hello from echo server" in out, out + err
    assert cli.returncode != 0
    assert "agent b (192.0.2.2:50000) went away" in err, err
    assert took < 20, f"the sandbox took {took:.1f} s to see its agent gone"
    machines.stop_agent()
    # The agent's session child dies with it (parent-death signal), and its hosts with that.
    deadline = time.monotonic() + 10
    while m.pids_in(machines.b) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert m.pids_in(machines.b) == []
    partials = sorted(tmp_path.glob("cut.traffic*partial*"))
    assert partials, sorted(p.name for p in tmp_path.iterdir())
    said = conversation(partials[0])
    assert any(item[0] == "data" and b"LINE 0" in item[3] for item in said), said
    # The partial cassette replays on one machine, its server played by the cassette: a client
    # that says what the recording holds gets the recorded answers (the greeting, then a line each).
    answered = b"".join(item[3] for item in said if item[0] == "data" and item[2] == "s2c")
    lines = answered.count(b"\n") - 1
    asked = b"".join(item[3] for item in said if item[0] == "data" and item[2] == "c2s").count(b"\n")
    assert 0 < lines <= asked
    replay = subprocess.run(
        [m.PYTHON, "-m", "pytest_netplayground", "replay", "-f", str(partials[0]), "--exit-code-from", "1",
         f"{sys.executable} -c \"import socket; s=socket.create_connection(('10.0.0.2', 7000), timeout=5); "
         f"print(s.recv(100))\nfor i in range({asked}):\n"
         f" s.sendall(b'line %d\\n' % i)\n if i < {lines}: print(s.recv(100))\"",
         "-"],
        capture_output=True, text=True, timeout=60, cwd=m.ROOT,
    )
    assert replay.returncode == 0, replay.stderr
    assert f"b'LINE {lines - 1}\\n'" in replay.stdout, replay.stdout


def test_the_agent_ends_a_running_session_on_sigterm_and_leaves_nothing(machines):
    machines.start_agent()
    cli = subprocess.Popen(
        machines.command(
            machines.a, m.PYTHON, "-m", "pytest_netplayground", "run",
            "--agent", f"b={machines.agent_address}", "--key-file", str(machines.key), "--on", "1=b",
            "sleep 60",
        ),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=machines.environment(), cwd=m.ROOT,
    )
    deadline = time.monotonic() + 15
    while "serving" not in machines.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert machines.stop_agent(signal.SIGTERM) == 0
    assert m.pids_in(machines.b) == []
    out, err = cli.communicate(timeout=30)
    assert "agent b (192.0.2.2:50000) went away" in err, err


def test_a_machine_that_falls_silent_is_reported_gone_after_the_keepalives(machines):
    machines.start_agent()
    cli = subprocess.Popen(
        machines.command(
            machines.a, m.PYTHON, "-m", "pytest_netplayground", "run",
            "--agent", f"b={machines.agent_address}", "--key-file", str(machines.key), "--on", "1=b",
            "sleep 60",
        ),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=machines.environment(), cwd=m.ROOT,
    )
    deadline = time.monotonic() + 15
    while "serving" not in machines.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    # The cable is pulled: nothing more arrives from the agent's machine, not even a reset.
    m.ip("-n", machines.b, "link", "set", "vb", "down")
    cut = time.monotonic()
    out, err = cli.communicate(timeout=60)
    took = time.monotonic() - cut
    assert "agent b (192.0.2.2:50000) went away" in err and "silent" in err, err
    assert took < 20, f"{took:.1f} s"
    assert cli.returncode != 0


API_SCRIPT = '''
import os, signal, subprocess, sys, time
from subprocess import PIPE
from pytest_netplayground import Sandbox
from pytest_netplayground.errors import SandboxError, CommandNotFound

with Sandbox(agents={"b": sys.argv[1]}, key_file=sys.argv[2], output_dir=sys.argv[3]) as sb:
    local = sb.add_host("here")
    remote = sb.add_host("there", on="b")
    assert (remote.address, remote.name) == ("10.0.0.2", "there")
    # stdin and stdout through pipes, and an exit code
    p = remote.spawn(["sh", "-c", "tr a-z A-Z; exit 3"], stdin=PIPE, stdout=PIPE)
    out, _ = p.communicate(b"shouted" * 20000)
    print("pipe", out[:14], len(out), p.returncode)
    # output to the sandbox's per-process files
    q = remote.spawn("echo to-file; echo err >&2")
    q.wait(10)
    # a signal to a process group, seen in its exit code
    r = remote.spawn(["sleep", "30"])
    time.sleep(0.2)
    r.send_signal(signal.SIGINT, group=True)
    print("signal", r.wait(10))
    # wait_for_port and a local client through the proxy
    s = remote.spawn(["sh", "-c", "echo served | socat - TCP-LISTEN:7001,reuseaddr"])
    remote.wait_for_port(7001, timeout=10)
    with local.connect(("10.0.0.2", 7001), timeout=5) as conn:
        print("tcp", conn.recv(100))
    s.wait(10)
    try:
        remote.spawn(["no-such-command-here"])
    except CommandNotFound as exc:
        print("missing", "there" in str(exc) or "b (" in str(exc))
    try:
        remote.socket()
    except SandboxError as exc:
        print("socket", "spawn a process in it instead" in str(exc))
    print("files", sorted(sb.host_output(remote).items()))
'''


@pytest.mark.needs("socat")
def test_the_python_api_treats_a_remote_host_like_a_local_one(agent, tmp_path):
    script = tmp_path / "api.py"
    script.write_text(API_SCRIPT)
    output = tmp_path / "out"
    output.mkdir()
    result = subprocess.run(
        agent.command(agent.a, m.PYTHON, str(script), agent.agent_address, str(agent.key), str(output)),
        capture_output=True, text=True, timeout=90, env=agent.environment(), cwd=m.ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "pipe b'SHOUTEDSHOUTED' 140000 3" in lines
    assert "signal -2" in lines
    assert "tcp b'served\\n'" in lines
    assert "missing True" in lines and "socket True" in lines
    files = next(line for line in lines if line.startswith("files"))
    assert "b'to-file\\n'" in files and "b'err\\n'" in files


GARBAGE = '''
import os, random, socket, sys
rng = random.Random(7)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for n in range(2000):
    size = rng.choice([0, 1, 10, 24, 40, 41, 100, 1400])
    s.sendto(bytes(rng.getrandbits(8) for _ in range(size)), (sys.argv[1], int(sys.argv[2])))
'''


def test_garbage_datagrams_at_the_agent_are_dropped_counted_and_the_agent_keeps_serving(agent, tmp_path):
    script = tmp_path / "garbage.py"
    script.write_text(GARBAGE)
    talker = (
        f"sleep 1; {sys.executable} -m pytest_netplayground.examples.echo_client 10.0.0.2:7000 ping; sleep 4; "
        f"{sys.executable} -m pytest_netplayground.examples.echo_client 10.0.0.2:7000 pong"
    )
    cli = subprocess.Popen(
        agent.command(
            agent.a, m.PYTHON, "-m", "pytest_netplayground", "run",
            "--agent", f"b={agent.agent_address}", "--key-file", str(agent.key), "--on", "2=b",
            "--exit-code-from", "1", talker, f"{SERVER} --connections 2",
        ),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=agent.environment(), cwd=m.ROOT,
    )
    time.sleep(2.5)
    # From machine A itself (a sandbox host could not even reach the agent's address).
    subprocess.run(agent.command(agent.a, m.PYTHON, str(script), m.B_ADDRESS, str(m.PORT)), check=True, timeout=60)
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 0, err
    assert "10.0.0.1 | PING" in out and "10.0.0.1 | PONG" in out
    time.sleep(0.5)
    ended = [line for line in agent.log().splitlines() if "ended; dropped" in line]
    assert ended, agent.log()
    counts = ast.literal_eval(ended[-1].split("dropped: ", 1)[1])  # a dict of reasons and counts
    assert sum(counts.values()) == 2000, counts


def capture_run(agent, capture: Path, *run_args: str) -> None:
    """``netplay run`` on machine A while tshark records the tunnel (control stream and datagrams) on A's veth,
    as pcapng (tshark's own format, which ends in a statistics block)."""
    tshark = subprocess.Popen(
        agent.command(agent.a, "tshark", "-q", "-i", "va", "-f", "port 50000", "-w", str(capture)),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not (capture.exists() and capture.stat().st_size > 0) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        result = agent.netplay("run", *run_args)
        assert result.returncode == 0, result.stderr
        time.sleep(1)
    finally:
        tshark.send_signal(signal.SIGINT)  # as Ctrl-C: the capture file is finished properly
        tshark.wait(10)


@pytest.mark.needs("tshark")
def test_a_sealed_tunnel_capture_decodes_with_the_key(agent, tmp_path):
    capture, inner = tmp_path / "sealed.pcapng", tmp_path / "inner.pcap"
    capture_run(agent, capture, "--on", "2=b", CLIENT, f"{SERVER} --connections 1")
    sealed = subprocess.run(
        ["tshark", "-r", str(capture), "-d", "udp.port==50000,geneve", "-Y", "tcp.port == 7000"],
        capture_output=True, text=True, timeout=60,
    )
    assert sealed.returncode == 0 and "7000" not in sealed.stdout  # nothing readable without the key
    decoded = subprocess.run(
        [m.PYTHON, "-m", "pytest_netplayground", "tunnel-decode", str(capture), "--key-file", str(agent.key),
         "--port", "50000", "-o", str(inner)],
        capture_output=True, text=True, timeout=60, cwd=m.ROOT,
    )
    assert decoded.returncode == 0, decoded.stderr
    packets = subprocess.run(
        ["tshark", "-r", str(inner), "-Y", "tcp.port == 7000 and tcp.len > 0", "-T", "fields", "-e", "tcp.payload"],
        capture_output=True, text=True, timeout=60,
    )
    payload = bytes.fromhex("".join(packets.stdout.split()).replace(":", ""))
    assert b"hello from echo server" in payload and b"PING" in payload, packets.stdout[:500]


@pytest.mark.needs("tshark")
def test_insecure_plaintext_tunnel_reads_in_tshark_as_geneve(agent, tmp_path):
    capture = tmp_path / "tunnel.pcap"
    capture_run(agent, capture, "--insecure-plaintext", "--on", "2=b", CLIENT, f"{SERVER} --connections 1")
    decoded = subprocess.run(
        ["tshark", "-r", str(capture), "-d", "udp.port==50000,geneve", "-Y", "tcp.port == 7000"],
        capture_output=True, text=True, timeout=60,
    )
    assert "10.0.0.1" in decoded.stdout and "7000" in decoded.stdout and "SYN" in decoded.stdout, decoded.stdout
    assert "plaintext" in agent.log()


PLUGIN_SUITE = '''
import socket
import subprocess
import pytest

@pytest.mark.netplay(agents={"b": "%(agent)s"}, key_file=%(key)r)
def test_remote_server(netplay):
    db = netplay.add_host("db", on="b")
    here = netplay.add_host("here")
    db.spawn(["sh", "-c", "echo hello-from-b | socat - TCP-LISTEN:7002,reuseaddr"])
    db.wait_for_port(7002, timeout=10)
    with here.connect(("10.0.0.1", 7002), timeout=5) as conn:
        assert conn.recv(100) == b"hello-from-b\\n"
'''


@pytest.mark.needs("socat")
def test_the_pytest_marker_takes_agents_and_a_key_file(agent, tmp_path):
    suite = tmp_path / "test_suite_remote.py"
    suite.write_text(PLUGIN_SUITE % {"agent": agent.agent_address, "key": str(agent.key)})
    result = subprocess.run(
        agent.command(
            agent.a, m.PYTHON, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(suite), "--netplay=record",
        ),
        capture_output=True, text=True, timeout=120, env=agent.environment(), cwd=tmp_path,
    )
    assert "1 passed" in result.stdout, result.stdout + result.stderr
    recorded = list((tmp_path / "cassettes").rglob("*.netplay"))
    assert recorded and any(item[0] == "data" for item in conversation(recorded[0]))


def test_an_agent_serves_one_sandbox_at_a_time_and_turns_the_second_away(agent):
    first = subprocess.Popen(
        agent.command(
            agent.a, m.PYTHON, "-m", "pytest_netplayground", "run",
            "--agent", f"b={agent.agent_address}", "--key-file", str(agent.key), "--on", "1=b", "sleep 4",
        ),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=agent.environment(), cwd=m.ROOT,
    )
    deadline = time.monotonic() + 15
    while "serving" not in agent.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    second = agent.netplay("run", "--on", "1=b", "true")
    assert second.returncode == 1
    assert "b (192.0.2.2:50000)" in second.stderr and "another sandbox" in second.stderr, second.stderr
    out, err = first.communicate(timeout=30)
    assert first.returncode == 0, err
    assert "turned away" in agent.log()
    again = agent.netplay("run", "--on", "1=b", "true")
    assert again.returncode == 0, again.stderr
