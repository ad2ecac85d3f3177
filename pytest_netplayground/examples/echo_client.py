"""A client for the echo server: sends a few lines and prints the answers.

``python -m pytest_netplayground.examples.echo_client HOST[:PORT] [LINE ...]``
retries the connection for a few seconds, so it can start with its server.
"""

from __future__ import annotations

import argparse
import socket
import time


def connect(host: str, port: int, patience: float = 10.0) -> socket.socket:
    deadline = time.monotonic() + patience
    while True:
        try:
            return socket.create_connection((host, port), timeout=5)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("server", help="HOST or HOST:PORT (port 7000 by default)")
    parser.add_argument("lines", nargs="*", default=["ping", "net playground"])
    args = parser.parse_args()
    host, _, port = args.server.partition(":")
    sock = connect(host, int(port or 7000))
    local = sock.getsockname()
    print(f"connected from {local[0]}:{local[1]}", flush=True)
    with sock, sock.makefile("rwb") as stream:
        print(stream.readline().decode().rstrip(), flush=True)
        for line in args.lines:
            stream.write(line.encode() + b"\n")
            stream.flush()
            print(stream.readline().decode().rstrip(), flush=True)
        sock.shutdown(socket.SHUT_WR)


if __name__ == "__main__":
    main()
