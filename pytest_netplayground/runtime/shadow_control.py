"""The control requests that start, read and stop a running sandbox's shadows."""

from __future__ import annotations

from typing import ClassVar

import attrs

from ..core.shadow import ShadowSpec

_int = attrs.validators.instance_of(int)


@attrs.frozen
class StartShadow:
    """Mirror every new connection to the spec's primary to its candidate; the reply is the shadow's number."""

    op: ClassVar[str] = "start_shadow"
    spec: ShadowSpec = attrs.field(validator=attrs.validators.instance_of(ShadowSpec))


@attrs.frozen
class ShadowState:
    """The report of shadow ``ident`` so far."""

    op: ClassVar[str] = "shadow_state"
    ident: int = attrs.field(validator=_int)


@attrs.frozen
class StopShadow:
    """Mirror no new connection to shadow ``ident``'s primary; with ``abort``, end those in flight now."""

    op: ClassVar[str] = "stop_shadow"
    ident: int = attrs.field(validator=_int)
    abort: bool = attrs.field(default=False, converter=bool)


SHADOW_REQUESTS: dict[str, type] = {kind.op: kind for kind in (StartShadow, ShadowState, StopShadow)}
