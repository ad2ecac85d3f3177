"""The command line's remote hosts: ``netplay agent``, and ``--agent``/``--key-file``/``--on`` of a run."""

from __future__ import annotations

import argparse


def add_remote_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("remote hosts (see docs/remote.rst)")
    group.add_argument(
        "--agent",
        action="append",
        default=[],
        metavar="NAME=ADDR:PORT",
        help="an agent ('netplay agent') whose machine may hold hosts (repeatable)",
    )
    group.add_argument("--key-file", metavar="FILE", help="the tunnel's shared key, the file the agents use")
    group.add_argument(
        "--on",
        action="append",
        default=[],
        metavar="INDEX=AGENT",
        help="run the INDEX-th command (from 1) in a host on AGENT's machine (repeatable)",
    )
    group.add_argument(
        "--insecure-plaintext",
        action="store_true",
        help="carry the tunnel's packets in clear (still authenticated), for tshark; debugging only",
    )
    group.add_argument(
        "--tunnel-mtu",
        metavar="BYTES",
        help="largest packet a tunnel datagram makes between the machines (default: the path's MTU); "
        "larger ones are fragmented by the kernel: faster on a link that loses nothing",
    )


def add_agent_command(sub) -> None:
    parser = sub.add_parser(
        "agent", help="serve remote hosts to a sandbox on another machine, over an authenticated UDP tunnel"
    )
    parser.add_argument(
        "--listen", metavar="ADDR:PORT", help="where to listen (TCP and UDP, one port number)"
    )
    parser.add_argument("--key-file", metavar="FILE", help="the shared key (64 hex digits; see --make-key)")
    parser.add_argument("--make-key", metavar="FILE", help="write a new key file (mode 0600) and exit")
    parser.add_argument(
        "--refuse-plaintext", action="store_true", help="turn away supervisors that ask for --insecure-plaintext"
    )


def cmd_agent(args) -> int:
    from ..errors import ConfigError
    from ..runtime.agent import Agent, make_key

    if args.make_key:
        make_key(args.make_key)
        return 0
    if not args.listen or not args.key_file:
        raise ConfigError("netplay agent needs --listen ADDR:PORT and --key-file FILE (or --make-key FILE)")
    return Agent(args.listen, args.key_file, allow_plaintext=not args.refuse_plaintext).serve()


def sandbox_options(args) -> dict:
    """The Sandbox keywords for the run's agents (none when the command line names none)."""
    agents = getattr(args, "agent", None)
    if not agents:
        return {}
    return {
        "agents": list(agents),
        "key_file": args.key_file,
        "insecure_plaintext": args.insecure_plaintext,
        "tunnel_mtu": args.tunnel_mtu,
    }


def placements(args, count: int) -> dict[int, str]:
    """Which commands' hosts live on which agent, from ``--on``."""
    from ..core.agent_protocol import parse_agents, parse_placements

    agents = parse_agents(list(getattr(args, "agent", None) or ()))
    return parse_placements(getattr(args, "on", ()), count, agents)
