"""The hosts of a command line run: their names, and which one ``--exit-code-from`` means."""

from __future__ import annotations

import re
from typing import Sequence

from ..core.addressing import Subnet
from ..errors import ConfigError
from .options import NO_COMMAND

# RFC 1123 label: letters, digits and inner hyphens, at most 63 characters.
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def parse_names(text: str | None, count: int) -> list[str] | None:
    """The ``--names`` list, checked: one DNS label per command, no two alike.

    An all-digit name is refused: ``--exit-code-from 2`` must mean the second
    command, never a host named ``2``.
    """
    if text is None:
        return None
    names = [name.strip() for name in text.split(",")]
    if len(names) != count:
        raise ConfigError(
            f"--names {text!r} gives {len(names)} names for {count} commands: give one name per command, "
            "in command order, separated by commas"
        )
    seen: dict[str, int] = {}
    for position, name in enumerate(names, 1):
        if not _LABEL.fullmatch(name) or name.isdigit():
            raise ConfigError(
                f"--names: {name!r} (name {position}) is not a host name: use letters, digits and inner "
                "hyphens, at most 63 characters, with at least one letter"
            )
        earlier = seen.setdefault(name.lower(), position)
        if earlier != position:
            raise ConfigError(
                f"--names: {name!r} is given twice (names {earlier} and {position}): names must differ"
            )
    return names


def check_capacity(subnet_text: str, count: int) -> Subnet:
    subnet = Subnet.parse(subnet_text)
    if count > subnet.capacity:
        raise ConfigError(
            f"{count} commands but subnet {subnet} has room for {subnet.capacity} hosts: use a larger subnet (-s)"
        )
    return subnet


def resolve_host(
    spec: str, hosts: Sequence, commands: Sequence[str], option: str = "--exit-code-from"
) -> int:
    """The index of the host ``spec`` names: a 1-based command number, an address or a name."""
    text = spec.strip()
    index = None
    if text.isdigit():
        number = int(text)
        if not 1 <= number <= len(hosts):
            raise ConfigError(
                f"{option} {spec}: there are {len(hosts)} commands; give a number from 1 to {len(hosts)}, "
                "an address or a host name"
            )
        index = number - 1
    else:
        for i, host in enumerate(hosts):
            if text in (host.address, host.name):
                index = i
                break
    if index is None:
        known = ", ".join(f"{h.address} ({h.name})" for h in hosts)
        raise ConfigError(f"{option} {spec}: no such host; the hosts are {known}")
    if commands[index] == NO_COMMAND:
        raise ConfigError(
            f"{option} {spec}: host {hosts[index].address} runs no command ('{NO_COMMAND}'), "
            "so its exit cannot end the run"
        )
    return index


def make_hosts(sandbox, count: int, names: Sequence[str] | None) -> list:
    """One host per command, in command order, named as given (or by the sandbox's default)."""
    return [sandbox.add_host(name=None if names is None else names[i]) for i in range(count)]
