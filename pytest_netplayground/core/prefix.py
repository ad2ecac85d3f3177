"""How far two strings agree from their start: the one helper every comparison uses."""

from __future__ import annotations

__all__ = ["common_prefix"]


def common_prefix(a: bytes | str, b: bytes | str) -> int:
    """The length of the longest common start of ``a`` and ``b`` (bytes or str).

    A binary search on slice equality, so long equal runs compare at memcmp
    speed rather than a byte at a time in Python.
    """
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low
