"""Faults that hold for a whole run, as settings and command-line flags give them.

A link is written ``A-B`` or ``A<->B`` (both directions), ``A->B`` (one
direction) or ``A`` alone (that host against every other), with hosts named
by name (``h1``, ``web``) or address. The settings take a dict of links to
faults (``{"h1-h2": {"latency": "50ms"}}``) or a list of dicts with
``link`` (``"h1-h2"`` or a pair) and optionally ``direction``. Command-line
flags (``--latency 10.0.0.1-10.0.0.2=50ms``) become the same dict, so every
way in goes through :func:`fault_specs`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

import attrs

from ..errors import ConfigError
from .faults import LinkFaults, link_faults
from .toxics import Toxics, toxic_names, toxics
from .validation import one_of

__all__ = ["LinkDirection", "FaultSpec", "fault_specs", "flags_to_faults", "parse_link", "seed"]

#: The host name that stands for every other host.
EVERY = "*"


class LinkDirection(str, enum.Enum):
    BOTH = "both"
    A_TO_B = "a->b"
    B_TO_A = "b->a"


direction = one_of(LinkDirection)


@attrs.frozen
class FaultSpec:
    """Faults between hosts ``a`` and ``b`` (names or addresses; ``b`` may be ``*``), in ``direction``."""

    a: str
    b: str
    direction: LinkDirection
    faults: LinkFaults
    #: For the proxied TCP connections made over the link: the bytes sent from one host to the other.
    toxics: Toxics = Toxics()

    def pairs(self) -> list[tuple[str, str]]:
        """The (source, destination) directions it covers."""
        out = []
        if self.direction is not LinkDirection.B_TO_A:
            out.append((self.a, self.b))
        if self.direction is not LinkDirection.A_TO_B:
            out.append((self.b, self.a))
        return out

    def describe(self) -> str:
        arrow = {"both": "<->", "a->b": "->", "b->a": "<-"}[self.direction.value]
        words = [] if self.faults.is_clear and not self.toxics.is_clear else [self.faults.describe()]
        if not self.toxics.is_clear:
            words.append(self.toxics.describe())
        return f"{self.a}{arrow}{self.b}: {' '.join(words)}"


def parse_link(text: object) -> tuple[str, str, LinkDirection]:
    """``A-B``, ``A<->B``, ``A->B`` or ``A``: the two hosts and the direction."""
    if isinstance(text, (tuple, list)) and len(text) == 2 and all(isinstance(x, str) for x in text):
        return text[0], text[1], LinkDirection.BOTH
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"expected a link like 'h1-h2', 'h1->h2' or 'h1', got {text!r}")
    value = text.strip()
    for separator, way in (("<->", LinkDirection.BOTH), ("->", LinkDirection.A_TO_B)):  # noqa: B007 (kept at break)
        if separator in value:
            a, _, b = value.partition(separator)
            break
    else:
        parts = value.split("-")
        if len(parts) == 1:
            a, b, way = value, EVERY, LinkDirection.BOTH
        elif len(parts) == 2:
            (a, b), way = parts, LinkDirection.BOTH
        else:
            raise ConfigError(f"link {text!r} is ambiguous (a host name has a '-'): write it 'a<->b' or 'a->b'")
    a, b = a.strip(), b.strip()
    if not a or not b or a == b:
        raise ConfigError(f"expected a link between two different hosts like 'h1-h2', got {text!r}")
    return a, b, way


def _spec(link: object, values: object, where: str) -> FaultSpec:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a dict of faults like {{'latency': '50ms'}}, got {values!r}")
    values = dict(values)
    a, b, way = parse_link(link)
    if "direction" in values:
        way = direction(values.pop("direction"))
    names = toxic_names()
    try:
        poisons = toxics({key: value for key, value in values.items() if key in names})
        faults = link_faults({key: value for key, value in values.items() if key not in names})
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return FaultSpec(a, b, way, faults, poisons)


def fault_specs(value: object) -> tuple[FaultSpec, ...]:
    """The faults of a setting (dict of links, list of dicts, or specs); see the module docstring."""
    if isinstance(value, FaultSpec):
        return (value,)
    if isinstance(value, Mapping):
        return tuple(_spec(link, faults, f"link {link!r}") for link, faults in value.items())
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        specs: list[FaultSpec] = []
        for item in value:
            if isinstance(item, FaultSpec):
                specs.append(item)
                continue
            if not isinstance(item, Mapping) or "link" not in item:
                raise ConfigError(f"expected a dict with a 'link' key like {{'link': 'h1-h2', 'loss': 0.1}}, got {item!r}")
            rest = {key: val for key, val in item.items() if key != "link"}
            specs.append(_spec(item["link"], rest, f"link {item['link']!r}"))
        return tuple(specs)
    raise ConfigError(f"expected faults as {{'h1-h2': {{'latency': '50ms'}}}} or a list of them, got {value!r}")


def flags_to_faults(flags: Mapping[str, Iterable[str]]) -> dict[str, dict[str, str]]:
    """Command-line flags (``{"latency": ["h1-h2=50ms"], ...}``) as the settings' dict of links."""
    links: dict[str, dict[str, str]] = {}
    for name, entries in flags.items():
        for entry in entries or ():
            link, sep, amount = str(entry).rpartition("=")
            if not sep or not link or not amount:
                raise ConfigError(f"--{name}: expected LINK=VALUE like h1-h2=50ms, got {entry!r}")
            links.setdefault(link, {})[name] = amount
    return links


def seed(value: object) -> int:
    """A seed for the faults' random choices: a whole number of 0 or more."""
    text = str(value).strip()
    if isinstance(value, bool) or not (text.isascii() and text.isdigit()):
        raise ConfigError(f"expected a seed, a whole number of 0 or more, got {value!r}")
    return int(text)
