"""``netplay tunnel-decode``: the IP packets a captured tunnel carried, opened with its key."""

from __future__ import annotations

import argparse

from .setup import say


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return int(text)


def add_tunnel_decode_command(sub) -> None:
    parser = sub.add_parser(
        "tunnel-decode",
        help="decode a capture of a supervisor-agent tunnel (with its key) into a pcap of the packets it carried",
    )
    parser.add_argument("capture", help="pcap or pcapng of the tunnel's TCP and UDP (tcpdump -w, Wireshark)")
    parser.add_argument("--key-file", required=True, metavar="FILE", help="the tunnel's key file")
    parser.add_argument(
        "--port", type=_port, default=50000, help="the agent's port (its --listen port; default 50000)"
    )
    parser.add_argument("-o", "--output", required=True, help="pcap file to write")
    parser.add_argument(
        "--control-log",
        metavar="FILE",
        help="also write the decrypted control messages to FILE, one line each (time, direction, size, header)",
    )
    parser.add_argument(
        "--truncated", action="store_true", help="decode a capture cut short mid-record up to the cut"
    )


def cmd_tunnel_decode(args) -> int:
    from ..runtime.keyfile import read_key_file
    from ..tunnel_capture import decode_tunnel_capture

    key = read_key_file(args.key_file)
    result = decode_tunnel_capture(
        args.capture,
        key,
        args.output,
        port=args.port,
        allow_truncated=args.truncated,
        control_log=args.control_log,
    )
    say(result.summary())
    return 0
