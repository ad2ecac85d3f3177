"""A small packet filter language for imports, a subset of tcpdump's.

``tcp port 80``, ``host 192.0.2.7 and udp``, ``not port 22``,
``(port 80 or port 443) and net 10.1.0.0/16``. Primitives: ``tcp``, ``udp``,
``ip``, ``ip6``, ``[src|dst] host ADDR``, ``[src|dst] net CIDR``,
``[tcp|udp] [src|dst] port N``; combined with ``and``, ``or``, ``not`` and
parentheses (``and`` binds tighter than ``or``). Parsed here rather than by
tcpdump, so an import needs no external program and a mistake is reported
naming the word that is wrong.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from ..errors import ConfigError
from .capture_decode import TCP, UDP, CapturedPacket

__all__ = ["Predicate", "parse_filter"]

Predicate = Callable[[CapturedPacket], bool]

_TOKEN = re.compile(r"\s*(\(|\)|[^\s()]+)")


def _tokens(text: str) -> list[tuple[str, int]]:
    out = []
    position = 0
    while True:
        match = _TOKEN.match(text, position)
        if match is None:
            break
        out.append((match.group(1), match.start(1)))
        position = match.end()
    return out


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0

    def error(self, what: str) -> ConfigError:
        if self.i < len(self.tokens):
            word, at = self.tokens[self.i]
            where = f"at {word!r} (character {at + 1})"
        else:
            where = "at the end"
        return ConfigError(
            f"bad filter {self.text!r} {where}: {what}; "
            "write e.g. 'tcp port 80', 'host 192.0.2.7 and udp' or 'not port 22'"
        )

    def peek(self) -> str | None:
        return self.tokens[self.i][0].lower() if self.i < len(self.tokens) else None

    def take(self) -> str:
        if self.i >= len(self.tokens):
            raise self.error("expected more")
        word = self.tokens[self.i][0]
        self.i += 1
        return word

    def parse(self) -> Predicate:
        if not self.tokens:
            raise self.error("the filter is empty")
        predicate = self.disjunction()
        if self.i < len(self.tokens):
            raise self.error("expected 'and', 'or' or the end")
        return predicate

    def disjunction(self) -> Predicate:
        parts = [self.conjunction()]
        while self.peek() == "or":
            self.i += 1
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else (lambda p: any(part(p) for part in parts))

    def conjunction(self) -> Predicate:
        parts = [self.negation()]
        while self.peek() in ("and", "&&"):
            self.i += 1
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else (lambda p: all(part(p) for part in parts))

    def negation(self) -> Predicate:
        if self.peek() in ("not", "!"):
            self.i += 1
            inner = self.negation()
            return lambda p: not inner(p)
        if self.peek() == "(":
            self.i += 1
            inner = self.disjunction()
            if self.peek() != ")":
                raise self.error("expected ')'")
            self.i += 1
            return inner
        return self.primitive()

    def primitive(self) -> Predicate:
        word = self.peek()
        if word is None:
            raise self.error("expected a condition")
        if word in ("tcp", "udp"):
            self.i += 1
            proto = TCP if word == "tcp" else UDP
            if self.peek() in ("port", "src", "dst"):
                ports = self.port()
                return lambda p: p.proto == proto and ports(p)
            return lambda p: p.proto == proto
        if word in ("ip", "ip6"):
            self.i += 1
            v6 = word == "ip6"
            return lambda p: (":" in p.src) == v6
        if word in ("host", "net", "port", "src", "dst"):
            return self.port() if self._names_port() else self.address()
        raise self.error("expected tcp, udp, ip, ip6, host, net, port, src, dst, not or '('")

    def _names_port(self) -> bool:
        words = [w.lower() for w, _ in self.tokens[self.i : self.i + 2]]
        return words[:1] == ["port"] or (len(words) == 2 and words[0] in ("src", "dst") and words[1] == "port")

    def side(self) -> str:
        if self.peek() in ("src", "dst"):
            return self.take().lower()
        return "either"

    def port(self) -> Predicate:
        side = self.side()
        if self.peek() != "port":
            raise self.error("expected 'port'")
        self.i += 1
        text = self.take()
        if not text.isdigit() or not 0 < int(text) < 65536:
            self.i -= 1
            raise self.error("expected a port number from 1 to 65535")
        number = int(text)
        if side == "src":
            return lambda p: p.sport == number
        if side == "dst":
            return lambda p: p.dport == number
        return lambda p: number in (p.sport, p.dport)

    def address(self) -> Predicate:
        side = self.side()
        kind = self.peek()
        if kind not in ("host", "net"):
            raise self.error("expected 'host', 'net' or 'port'")
        self.i += 1
        text = self.take()
        try:
            if kind == "host":
                network = ipaddress.ip_network(ipaddress.ip_address(text))
            else:
                network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            self.i -= 1
            raise self.error(f"expected an IP {'address' if kind == 'host' else 'network like 10.1.0.0/16'}") from None

        def matches(address: str) -> bool:
            try:
                return ipaddress.ip_address(address) in network
            except ValueError:
                return False

        if side == "src":
            return lambda p: matches(p.src)
        if side == "dst":
            return lambda p: matches(p.dst)
        return lambda p: matches(p.src) or matches(p.dst)


def parse_filter(text: str) -> Predicate:
    """The packet predicate *text* describes; raises :class:`ConfigError` naming the bad word."""
    return _Parser(text).parse()
