"""Host names: which names are valid, and what each host's ``/etc/hosts`` says.

Every host answers to the name it was given and to its default name ``hN``
(N its number, from 1, in the order hosts were added), so a test may always
refer to ``h1`` whatever the host is called. Resolution goes through files
only, so names must be plain DNS labels that a resolver, ``hostname`` and a
URL all accept.
"""

from __future__ import annotations

import re

import attrs

from ..errors import ConfigError

__all__ = ["NameTable", "default_name", "hosts_text", "nsswitch_text", "check_name"]

_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_DEFAULT = re.compile(r"h[0-9]+\Z", re.IGNORECASE)
_RESERVED = ("localhost",)


def default_name(index: int) -> str:
    """The name host ``index`` (0-based) always answers to: ``h1`` for the first."""
    return f"h{index + 1}"


def check_name(name: object, index: int, taken: tuple[str, ...] = ()) -> str:
    """``name`` if host ``index`` may be called so, else a :class:`ConfigError` saying why.

    ``taken`` are the names of the hosts made before it. Names compare
    without case, as resolvers do.
    """
    if not isinstance(name, str):
        raise ConfigError(f"host name {name!r} must be a string, like 'server'")
    if not _LABEL.match(name):
        raise ConfigError(
            f"host name {name!r} is not a DNS label: use 1 to 63 letters, digits and hyphens, "
            "not starting or ending with a hyphen (like 'server' or 'db-1')"
        )
    lowered = name.lower()
    if lowered in _RESERVED:
        raise ConfigError(f"host name {name!r} is reserved for the loopback address: choose another")
    if _DEFAULT.match(name) and lowered != default_name(index):
        raise ConfigError(
            f"host name {name!r} is the default name of host number {name[1:]}; host number {index + 1} "
            f"may only be called {default_name(index)!r} of that form: choose another name"
        )
    if lowered in (other.lower() for other in taken):
        raise ConfigError(f"host name {name!r} is already taken in this sandbox: host names must be unique")
    return name


def hosts_text(entries: list[tuple] | tuple[tuple, ...]) -> str:
    """The text of every host's ``/etc/hosts``: loopback, then ``address name hN`` per host in order.

    An entry is ``(address, name)`` or ``(address, name, address6)``: a host
    with an IPv6 address gets a second line, so its names resolve to both.

    Adding a host only appends a line, so the text before is a prefix of the
    text after: a reader of the file sees the old list or the new, never a mix.
    """
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost"]
    for index, (address, name, *address6) in enumerate(entries):
        alias = default_name(index)
        names = name if name.lower() == alias else f"{name}\t{alias}"
        lines.extend(f"{each}\t{names}" for each in (address, *address6) if each)
    return "\n".join(lines) + "\n"


def nsswitch_text(original: str) -> str | None:
    """``original`` nsswitch.conf with ``files`` first for hosts, or None when it already is.

    Names resolve from ``/etc/hosts`` only when the hosts database looks in
    files before anything that could answer otherwise (or hang on a DNS
    server the sandbox cannot reach).
    """
    lines = original.splitlines()
    for i, line in enumerate(lines):
        key, sep, sources = line.partition(":")
        if not sep or key.strip() != "hosts":
            continue
        words = sources.split()
        if words[:1] == ["files"]:
            return None
        rest = _without_files(words)
        lines[i] = "hosts:\tfiles" + ("" if not rest else " " + " ".join(rest))
        return "\n".join(lines) + "\n"
    return "\n".join(lines + ["hosts:\tfiles dns"]) + "\n"


def _without_files(words: list[str]) -> list[str]:
    """The sources of a hosts line without ``files`` and the ``[action]`` that qualifies it."""
    rest: list[str] = []
    skipping = bracket = False
    for word in words:
        if word == "files":
            skipping = True
            continue
        if skipping and (bracket or word.startswith("[")):
            bracket = not word.endswith("]")
            continue
        skipping = False
        rest.append(word)
    return rest


@attrs.define
class NameTable:
    """The sandbox's hosts by number: their addresses and names, grown one host at a time."""

    entries: list[tuple[str, str, str | None]] = attrs.field(factory=list)

    def add(self, address: str, name: str | None = None, address6: str | None = None) -> str:
        """Record the next host; its name (``hN`` when none is given), validated."""
        index = len(self.entries)
        name = default_name(index) if name is None else check_name(name, index, self.names())
        self.entries.append((address, name, address6))
        return name

    def names(self) -> tuple[str, ...]:
        return tuple(entry[1] for entry in self.entries)

    def text(self) -> str:
        return hosts_text(self.entries)
