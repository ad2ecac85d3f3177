"""The command line's faults on the wire: ``--latency h1-h2=50ms``, ``--loss h1-h2=2%``, ``--seed N``.

The flags become the same dict of links the settings take, and go through the
same validation (:func:`~..core.fault_spec.fault_specs`).
"""

from __future__ import annotations

import argparse

from ..core.fault_spec import FaultSpec, fault_specs, flags_to_faults, seed

#: Flag name: what its VALUE is.
FAULT_FLAGS = {
    "latency": "one-way delay added to each packet (50ms, 0.05)",
    "jitter": "random variation of the latency (10ms)",
    "loss": "probability a packet is lost (2%%, 0.02)",
    "rate": "bandwidth cap (10mbit, 1.25MB, bytes per second)",
    "duplicate": "probability a packet arrives twice (1%%)",
    "reorder": "probability a packet skips the latency, overtaking others (5%%)",
    "corrupt": "probability a byte of a packet is flipped (1%%)",
    "limit_data": "bytes a new TCP connection may carry each way before both sides are reset (1000)",
    "slicer": "TCP writes cut into pieces: SIZE[,DELAY[,VARIATION]] (64,1ms)",
}


def add_fault_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "faults on the wire",
        "LINK is A-B (both directions), A->B (one) or A (against every other host); "
        "hosts by name or address; each flag may be repeated",
    )
    for name, meaning in FAULT_FLAGS.items():
        group.add_argument(f"--{name.replace('_', '-')}", action="append", metavar="LINK=VALUE", help=meaning)
    group.add_argument("--seed", metavar="N", help="seed of the faults' random choices (default: chosen and printed)")


def fault_settings(args: argparse.Namespace) -> tuple[tuple[FaultSpec, ...], int | None]:
    """The faults the flags ask for and the seed; a ConfigError names a bad one."""
    flags = {name: getattr(args, name, None) for name in FAULT_FLAGS}
    specs = fault_specs(flags_to_faults(flags))
    given = getattr(args, "seed", None)
    return specs, None if given is None else seed(given)
