"""The namespaces and TUN devices a sandbox is made of, held by their descriptors.

The supervisor builds them; its processes start in the hosts' namespaces and
its proxy answers a client through the client's TUN. Closing the descriptors
(the supervisor exiting) is what makes the kernel reclaim them.
"""

from __future__ import annotations

import attrs


@attrs.define
class Network:
    """The proxy's namespace and TUN, and each host's namespace, TUN and name, by host index."""

    proxy_ns: int
    proxy_tun: int
    host_ns: list[int] = attrs.Factory(list)
    host_tun: list[int] = attrs.Factory(list)
    host_names: list[str] = attrs.Factory(list)
