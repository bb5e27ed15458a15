"""When to log about a count that keeps growing: at 1, 2, 4, 8, ... (not once per event),
so a flood of evictions or spills leaves a handful of lines, and the latest total."""

from __future__ import annotations


def crossed_power_of_two(before: int, after: int) -> bool:
    """Whether a count going from ``before`` to ``after`` reached a power of two.

    >>> [n for n in range(1, 20) if crossed_power_of_two(n - 1, n)]
    [1, 2, 4, 8, 16]
    >>> crossed_power_of_two(5, 9), crossed_power_of_two(9, 15)
    (True, False)
    """
    return after.bit_length() > before.bit_length()
