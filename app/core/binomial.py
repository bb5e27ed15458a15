"""Binomial evidence, in nats: how strongly ``k`` hits in ``n`` say the share moved.

The significance gate (``app.core.gate``) judges each aspect's share of sessions with these:
``g_stat``, the two-sample likelihood-ratio statistic G of "share in this window" vs "share
in the baseline" (it counts the baseline's own sampling error too), for windows of
``min_post_n`` sessions and more; ``tail_nats``, the exact binomial tail -ln P(at least k of
n), for the shorter windows where G is not calibrated.
"""

from __future__ import annotations

import math


def g_stat(k: int, n: int, k0: int, n0: int) -> float:
    """Binomial likelihood-ratio statistic (nats) of k/n vs k0/n0.

    >>> round(g_stat(30, 40, 1000, 2000), 2), g_stat(20, 40, 1000, 2000)
    (5.13, 0.0)
    """
    p = (k + k0) / (n + n0)
    return n * _kl(k / n, p) + n0 * _kl(k0 / n0, p)


def _kl(a: float, b: float) -> float:
    out = 0.0
    if a > 0.0:
        out += a * math.log(a / b)
    if a < 1.0:
        out += (1.0 - a) * math.log((1.0 - a) / (1.0 - b))
    return out


def tail_nats(k: int, n: int, p: float) -> float:
    """-ln P(X >= k) for X ~ Binomial(n, p): the exact evidence of ``k`` hits in ``n``.

    >>> round(tail_nats(4, 4, 0.002), 1), round(tail_nats(6, 6, 0.0156), 1), tail_nats(0, 9, 0.1)
    (24.9, 25.0, 0.0)
    """
    if k <= 0:
        return 0.0
    q = 1.0 - p
    return -math.log(math.fsum(math.comb(n, j) * p**j * q ** (n - j) for j in range(k, n + 1)))
