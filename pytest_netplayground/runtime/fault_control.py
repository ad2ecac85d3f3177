"""The control requests that change a running sandbox's faults and act on its connections.

Hosts travel as their indices (:data:`~..core.fault_table.ANY` for every
other host); the caller resolves names, addresses and ``Host`` objects first.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from ..core.faults import LinkFaults
from ..core.toxics import Toxics

_int = attrs.validators.instance_of(int)


def _indices(value: object) -> tuple[int, ...]:
    items = tuple(value)  # type: ignore[arg-type]
    if not all(isinstance(item, int) for item in items):
        raise ValueError(f"expected host indices, got {items!r}")
    return items


@attrs.frozen
class SetLink:
    """Give the direction ``src -> dst`` these faults (clear ones: a perfect wire)."""

    op: ClassVar[str] = "set_link"
    src: int = attrs.field(validator=_int)
    dst: int = attrs.field(validator=_int)
    faults: LinkFaults = attrs.field(validator=attrs.validators.instance_of(LinkFaults))


@attrs.frozen
class ClearFaults:
    """Every link a perfect wire again, every partition healed."""

    op: ClassVar[str] = "clear_faults"


@attrs.frozen
class Partition:
    op: ClassVar[str] = "partition"
    one: tuple[int, ...] = attrs.field(converter=_indices)
    other: tuple[int, ...] = attrs.field(converter=_indices)


@attrs.frozen
class Heal:
    """End partition ``ident`` (every partition with None)."""

    op: ClassVar[str] = "heal"
    ident: int | None = attrs.field(default=None, validator=attrs.validators.optional(_int))


@attrs.frozen
class Connections:
    """The live proxied TCP connections, those with a host of ``hosts`` at one end (all with none)."""

    op: ClassVar[str] = "connections"
    hosts: tuple[int, ...] = attrs.field(default=(), converter=_indices)


@attrs.frozen
class ResetConnection:
    """Reset the connection with this key: both its client and its server see a reset."""

    op: ClassVar[str] = "reset_connection"
    key: bytes = attrs.field(validator=attrs.validators.instance_of(bytes))


@attrs.frozen
class FaultState:
    """The seed and a line per faulty link direction and partition."""

    op: ClassVar[str] = "fault_state"


def _directions(value: object) -> tuple[str, ...]:
    items = tuple(value)  # type: ignore[arg-type]
    if not items or not all(item in ("c2s", "s2c") for item in items):
        raise ValueError(f"expected directions 'c2s' and/or 's2c', got {items!r}")
    return items


@attrs.frozen
class SetToxics:
    """Give the connection with this key these toxics in these directions (clear ones: none)."""

    op: ClassVar[str] = "set_toxics"
    key: bytes = attrs.field(validator=attrs.validators.instance_of(bytes))
    directions: tuple[str, ...] = attrs.field(converter=_directions)
    toxics: Toxics = attrs.field(validator=attrs.validators.instance_of(Toxics))


@attrs.frozen
class HalfClose:
    """End one direction of the connection with this key: its receiver reads end of file."""

    op: ClassVar[str] = "half_close"
    key: bytes = attrs.field(validator=attrs.validators.instance_of(bytes))
    direction: str = attrs.field(validator=attrs.validators.in_(("c2s", "s2c")))


@attrs.frozen
class SetLinkToxics:
    """The toxics connections made later start with, for the bytes host ``src`` sends to ``dst``."""

    op: ClassVar[str] = "set_link_toxics"
    src: int = attrs.field(validator=_int)
    dst: int = attrs.field(validator=_int)
    toxics: Toxics = attrs.field(validator=attrs.validators.instance_of(Toxics))


FAULT_REQUESTS: dict[str, type] = {
    kind.op: kind
    for kind in (
        SetLink, ClearFaults, Partition, Heal, Connections, ResetConnection, FaultState,
        SetToxics, HalfClose, SetLinkToxics,
    )
}
