"""The hosts of a command line run: their names, and which one ``--exit-code-from`` means."""

from __future__ import annotations

from typing import Sequence

from ..core.addressing import Subnet
from ..core.names import check_name, default_name
from ..errors import ConfigError
from .options import NO_COMMAND


def parse_names(text: str | None, count: int) -> list[str] | None:
    """The ``--names`` list, checked as the sandbox checks a host name, one per command.

    An all-digit name is refused on top: ``--exit-code-from 2`` must mean the
    second command, never a host named ``2``.
    """
    if text is None:
        return None
    names = [name.strip() for name in text.split(",")]
    if len(names) != count:
        raise ConfigError(
            f"--names {text!r} gives {len(names)} names for {count} commands: give one name per command, "
            "in command order, separated by commas"
        )
    for index, name in enumerate(names):
        if name.isdigit():
            raise ConfigError(
                f"--names: name {index + 1}: {name!r} is all digits, which --exit-code-from reads as a "
                "command's number: give a name with at least one letter"
            )
        try:
            check_name(name, index, tuple(names[:index]))
        except ConfigError as exc:
            raise ConfigError(f"--names: name {index + 1}: {exc}") from None
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
    """The index of the host ``spec`` names: a 1-based command number, an address, a name or ``hN``."""
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
            if text in (host.address, host.name, default_name(i)):
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


def make_hosts(sandbox, count: int, names: Sequence[str] | None, on: dict[int, str] | None = None) -> list:
    """One host per command, in command order, named as given (or by the sandbox's default),
    on the agent ``on`` gives for its index (this machine if none)."""
    on = on or {}
    return [sandbox.add_host(name=None if names is None else names[i], on=on.get(i)) for i in range(count)]
