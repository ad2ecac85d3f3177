"""``netplay agent``: serve remote hosts to one sandbox's supervisor at a time.

The agent listens on one port number for TCP (the control stream) and UDP
(the tunnel). Each supervisor that proves the shared key gets a session in a
forked child (:mod:`agent_session`), so whatever the session makes
(namespaces, TUN devices, processes) goes with that child. A second
supervisor arriving meanwhile is turned away. SIGINT or SIGTERM ends the
session and the agent, leaving nothing behind.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
import traceback

from ..core import agent_protocol as proto
from ..errors import ConfigError, NetplayError
from . import netns
from .agent_session import AgentSession, say
from .agent_stream import handshake
from .tunnel import Handshake, read_key_file, write_key_file

#: Seconds a supervisor gets to prove the key after connecting.
HANDSHAKE_TIMEOUT = 10.0
#: Seconds a stopped session gets to end its processes before SIGKILL.
SESSION_STOP = 10.0


def _sockets(address: proto.AgentAddress) -> tuple[socket.socket, socket.socket]:
    family = socket.AF_INET6 if address.ipv6 else socket.AF_INET
    tcp = socket.socket(family, socket.SOCK_STREAM)
    udp = socket.socket(family, socket.SOCK_DGRAM)
    try:
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((address.host, address.port))
        tcp.listen(8)
        udp.bind((address.host, tcp.getsockname()[1]))
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            udp.setsockopt(socket.SOL_SOCKET, option, 4 << 20)
    except OSError as exc:
        tcp.close()
        udp.close()
        raise ConfigError(
            f"the agent cannot listen on {address.host}:{address.port} ({exc.strerror}): "
            "give an address of this machine and a free port"
        ) from exc
    return tcp, udp


class Agent:
    """The listening agent: accepts supervisors, runs one session child at a time."""

    def __init__(self, listen: str, key_file: str, allow_plaintext: bool = True) -> None:
        self.key = read_key_file(key_file)
        self.allow_plaintext = allow_plaintext
        self.address = proto.AgentAddress.parse("agent", listen)
        self.tcp, self.udp = _sockets(self.address)
        self.child: int | None = None
        self.stopping = False
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    @property
    def port(self) -> int:
        return self.tcp.getsockname()[1]

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def serve(self) -> int:
        old = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        signal.set_wakeup_fd(self._wakeup_w)
        say(f"listening on {self.address.host}:{self.port} (TCP and UDP)")
        try:
            while not self.stopping:
                try:
                    ready, _, _ = select.select([self.tcp, self._wakeup_r], [], [], 0.5)
                except InterruptedError:
                    ready = []
                self._reap(block=False)
                if self._wakeup_r in ready:
                    os.read(self._wakeup_r, 4096)
                if self.tcp in ready and not self.stopping:
                    self._accept()
        finally:
            self._stop_child()
            signal.set_wakeup_fd(-1)
            for sig, handler in old.items():
                signal.signal(sig, handler)
            self.tcp.close()
            self.udp.close()
            os.close(self._wakeup_r)
            os.close(self._wakeup_w)
            say("stopped")
        return 0

    def _accept(self) -> None:
        try:
            conn, peer = self.tcp.accept()
        except OSError:
            return
        who = f"{peer[0]}:{peer[1]}"
        if self.child is not None:
            say(f"turned away {who}: serving another sandbox")
            conn.close()
            return
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the session's own process
            code = 1
            try:
                self.tcp.close()
                code = _run_session(conn, self.udp, self.key, who, self.allow_plaintext)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        conn.close()
        self.child = pid

    def _reap(self, block: bool) -> None:
        if self.child is None:
            return
        try:
            done, _ = os.waitpid(self.child, 0 if block else os.WNOHANG)
        except ChildProcessError:
            done = self.child
        if done:
            self.child = None

    def _stop_child(self) -> None:
        if self.child is None:
            return
        try:
            os.kill(self.child, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + SESSION_STOP
        while self.child is not None and time.monotonic() < deadline:
            self._reap(block=False)
            time.sleep(0.02)
        if self.child is not None:
            os.kill(self.child, signal.SIGKILL)
            self._reap(block=True)


def _run_session(conn: socket.socket, udp: socket.socket, key: bytes, who: str, allow_plaintext: bool) -> int:
    """The session child: prove the key, build the hosts, serve until the supervisor is done."""
    netns.set_parent_death_signal(signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    shake = Handshake.agent(key, allow_insecure_plaintext=allow_plaintext, peer=who)
    try:
        handshake(conn, shake, time.monotonic() + HANDSHAKE_TIMEOUT, f"supervisor {who}")
    except (NetplayError, OSError) as exc:
        say(f"refused {who}: {exc}")
        conn.close()
        return 1
    rootless = not netns.has_capabilities()
    try:
        if rootless:
            netns.enter_user_namespace()
        session = AgentSession(conn, udp, shake.keys, shake.rest, who, rootless)
    except NetplayError as exc:
        say(f"cannot serve {who}: {exc}")
        _refuse(conn, shake, str(exc))
        return 1
    say(f"serving {who}" + (" (--insecure-plaintext: packets in clear)" if shake.insecure_plaintext else ""))
    session.serve()
    return 0


def _refuse(conn: socket.socket, shake, why: str) -> None:
    """Tell the supervisor why this agent cannot build its hosts, then hang up."""
    try:
        conn.setblocking(True)
        conn.settimeout(2.0)
        conn.sendall(shake.keys.control().seal(proto.encode("fatal", error=why)))
    except (OSError, AttributeError):
        pass
    conn.close()


def make_key(path: str) -> None:
    """Write a new key file (mode 0600) for ``--key-file`` on both machines."""
    write_key_file(path)
    say(f"wrote a new key to {path}: copy it to the other machine (scp, keeping it private)")
