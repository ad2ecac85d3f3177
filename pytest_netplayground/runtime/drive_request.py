"""The control request that drives a cassette's clients, and a reply that comes later.

A drive runs for as long as its connections do, while the supervisor's loop
goes on serving the sandbox; its reply is sent when the last connection ends.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import attrs

from ..core.drive_plan import PlannedConnection
from ..core.replay import ReplayConfig

_UNSET = object()


@attrs.frozen
class DriveRequest:
    """Play ``plan`` against the live servers, the clients' bytes read from ``cassette``;
    with ``collect``, the reply carries every live answer too (to learn noise from)."""

    op: ClassVar[str] = "drive"
    cassette: str = attrs.field(validator=attrs.validators.instance_of(str))
    plan: tuple[PlannedConnection, ...] = attrs.field(converter=tuple)
    config: ReplayConfig = attrs.field(validator=attrs.validators.instance_of(ReplayConfig))
    collect: bool = attrs.field(default=False, converter=bool)


DRIVE_REQUESTS: dict[str, type] = {DriveRequest.op: DriveRequest}


class Later:
    """A reply its handler gives once its work is done; the supervisor binds where it goes."""

    def __init__(self) -> None:
        self._post: Callable[[object], None] | None = None
        self._value: object = _UNSET

    def bind(self, post: Callable[[object], None]) -> None:
        self._post = post
        if self._value is not _UNSET:
            post(self._value)

    def resolve(self, value: object) -> None:
        if self._post is None:
            self._value = value
        else:
            self._post(value)
