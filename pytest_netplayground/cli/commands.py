"""What ``netplay run``, ``record``, ``replay``, ``show``, ``export`` and ``import`` do."""

from __future__ import annotations

import sys

from ..core.noise import check_hosts
from .drive import cmd_drive
from .recording import cmd_record, failed_path_for, numbered_partial_path
from .remote import cmd_agent
from .setup import EXIT_ERROR, make_sandbox, prepare, run, say, say_tls
from .shadow_options import say_shadows
from .tunnel_decode import cmd_tunnel_decode

__all__ = ["COMMANDS", "EXIT_ERROR", "cmd_record", "failed_path_for", "numbered_partial_path"]


def cmd_run(args) -> int:
    names = prepare(args)
    sandbox = make_sandbox(args)
    try:
        code = run(sandbox, args, names).code
    finally:
        sandbox.close()
        say_tls(sandbox)
    return say_shadows(sandbox, code)


def _pacing(args) -> dict:
    if args.flood:
        return {"pace": "flood"}
    if args.speed is not None:
        return {"pace": "recorded", "speed": args.speed}
    return {"pace": "causal"}


def _replay_settings(args) -> dict:
    """The Sandbox's replay keywords from the replay flags (the original tool's have the defaults)."""
    return dict(
        stall_timeout=args.stall_timeout,
        settle=args.settle,
        match=args.match,
        ignore=tuple(args.ignore),
        check=tuple(host for item in args.check for host in check_hosts(item)),
        **_pacing(args),
    )


def cmd_replay(args) -> int:
    names = prepare(args)
    sandbox = make_sandbox(args, mode="replay", cassette=args.file, **_replay_settings(args))
    try:
        code = run(sandbox, args, names, quiet=args.nolog).code
    finally:
        sandbox.close()
    say_tls(sandbox)
    code = say_shadows(sandbox, code)
    report = sandbox.divergences
    if sandbox.truncated_at is not None:
        say(f"{args.file} was cut short at byte {sandbox.truncated_at}: replayed what came before")
    if not report.ok:
        say(f"the replay diverged from {args.file}:\n{report.format()}")
        if args.strict and code == 0:
            return EXIT_ERROR
    return code


def cmd_show(args) -> int:
    from ..cassette import Cassette
    from ..core.render import render_conversations

    cassette = Cassette(args.cassette, tolerate_truncation=True)
    text = render_conversations(cassette.header, cassette.records(), width=args.width)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if cassette.truncated_at is not None:
        say(f"{args.cassette} is cut short at byte {cassette.truncated_at}")
    return 0


def cmd_export(args) -> int:
    from ..export_pcap import export_pcap

    count = export_pcap(args.cassette, args.output, tolerate_truncation=True)
    say(f"wrote {count} packets to {args.output}")
    return 0


def cmd_import(args) -> int:
    from ..core.capture_report import format_report
    from ..import_pcap import import_capture

    result = import_capture(
        args.capture,
        args.output,
        packet_filter=args.filter,
        mappings=args.map,
        subnet=args.subnet,
        subnet6=args.subnet6,
        gaps=args.gaps,
        allow_truncated=args.truncated,
    )
    report = format_report(
        result.flows, result.addresses.lines(), result.frames, result.skipped_link_types, result.truncated_at
    )
    sys.stdout.write(report + "\n")
    say(f"wrote {result.cassette}")
    return 0


COMMANDS = {
    "run": cmd_run,
    "record": cmd_record,
    "replay": cmd_replay,
    "show": cmd_show,
    "export": cmd_export,
    "tunnel-decode": cmd_tunnel_decode,
    "import": cmd_import,
    "drive": cmd_drive,
    "agent": cmd_agent,
}
