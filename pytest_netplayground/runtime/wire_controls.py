"""What a test does to a running sandbox's wire: faults, partitions, connections, shadows.

A base of :class:`~.sandbox.Sandbox`, kept apart from its life cycle and hosts:
each method asks the supervisor over the control channel (see docs/faults.rst
and docs/shadow.rst).
"""

from __future__ import annotations

from ..errors import SandboxClosed
from . import links, shadows

__all__ = ["WireControls"]


class WireControls:
    """Faults on links, partitions, live connections and shadows of a sandbox; the sandbox
    provides ``_channel``, ``closed``, ``hosts`` and ``faults_used``."""

    __slots__ = ()  # the sandbox declares all its state

    def _call(self, op: str, **args) -> object:
        if self._channel is None or self.closed:
            raise SandboxClosed("the sandbox is not running: start it (or use it in a with block) first")
        if op in ("set_link", "partition"):
            self.faults_used = True
        value, _ = self._channel.call(op, **args)
        return value

    def link(self, a: object, b: object = None) -> links.Link:
        """The link between hosts ``a`` and ``b`` (Host, name or address); ``b`` None or ``"*"``:
        between ``a`` and every other host. ``.set(...)`` and ``.clear()`` change it."""
        return links.Link(self, links.host_index(self, a), links.host_index(self, b))

    def partition(self, one: object, other: object) -> links.Partition:
        """Cut the hosts of ``one`` off from those of ``other`` until ``.heal()`` (or the ``with`` ends)."""
        return links.partition(self, one, other)

    def connections(self, hosts: object = ()) -> list[links.Connection]:
        """The live proxied TCP connections (with a host of ``hosts`` at one end, if given)."""
        return links.connections(self, hosts)

    def shadow(self, primary: object, to: object, **options) -> shadows.Shadow:
        """Mirror every later connection to ``primary`` to the candidate ``to`` (see docs/shadow.rst)."""
        return shadows.start(self, primary, to, **options)

    def clear_faults(self) -> None:
        """Every link a perfect wire again and every partition healed."""
        self._call("clear_faults")

    def fault_state(self) -> dict:
        """The seed, the faulty link directions, the faults applied so far and the packets they dropped."""
        return self._call("fault_state")
