"""A line-echo server: greets, then answers each line in upper case.

``python -m pytest_netplayground.examples.echo_server [PORT] [--connections N]``
serves N connections (default 1) and exits, so a ``netplay run`` demo ends.
"""

from __future__ import annotations

import argparse
import socket


def serve(port: int, connections: int) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen()
    print(f"listening on port {port}", flush=True)
    for _ in range(connections):
        conn, peer = listener.accept()
        print(f"connection from {peer[0]}:{peer[1]}", flush=True)
        with conn, conn.makefile("rwb") as stream:
            stream.write(b"hello from echo server\n")
            stream.flush()
            for line in stream:
                stream.write(line.upper())
                stream.flush()
        print("connection closed", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("port", type=int, nargs="?", default=7000)
    parser.add_argument("--connections", type=int, default=1)
    args = parser.parse_args()
    serve(args.port, args.connections)


if __name__ == "__main__":
    main()
