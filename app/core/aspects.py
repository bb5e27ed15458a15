"""The five aspects of a metric's distribution the significance gate judges, and counting
values on each aspect's side of the baseline.

An aspect is a baseline bucket and a direction: sessions above the baseline median bucket
(``median_up``) or below it (``median_down``), above its p95, p99 and max buckets
(``tail_p95``, ``tail_p99``, ``tail_max``); each names the statistic its practical test
judges (``app.core.gate``). ``aspect_hits`` counts a window's values per aspect at once;
``add_hit`` counts one more value in, so a caller can keep a window's counts up to date
(``metricwatch`` does, for the sessions since a change hint).
"""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType

from app.core.reference import Reference
from app.core.sketch import bucket_key, inverse_log_gamma

# aspect -> (index into Reference.keys, direction, statistic judged for practical change)
ASPECTS = MappingProxyType({
    "median_up": (0, 1, "location"), "median_down": (0, -1, "location"),
    "tail_p95": (1, 1, "p95"), "tail_p99": (2, 1, "p99"), "tail_max": (3, 1, "p99")})


def aspect_hits(values: Iterable[float], ref: Reference) -> list[int]:
    """Per aspect (``ASPECTS`` order): how many of ``values`` fall on its side of the baseline
    bucket (above it, or below the median's for ``median_down``).

    >>> from app.core.sketch import Sketch
    >>> ref = Reference.from_sketch(Sketch.of([3.0, 2.0, 4.0, 3.0, 1.0, 5.0, 3.0, 2.0] * 250))
    >>> aspect_hits([1.0, 3.0, 4.0, 9.0], ref)
    [2, 1, 1, 1, 1]
    """
    hits = [0] * len(ASPECTS)
    for x in values:
        add_hit(hits, x, ref)
    return hits


def add_hit(hits: list[int], x: float, ref: Reference) -> None:
    """Count ``x`` into ``hits`` (``aspect_hits``'s counts), in place."""
    count_key(hits, bucket_key(x, inverse_log_gamma(ref.rel_acc)), ref.keys)


def count_key(hits: list[int], k: int, keys: tuple[int, ...]) -> None:
    """Count bucket key ``k`` into the per-aspect ``hits`` (``ASPECTS`` order)."""
    for i, (j, direction, _) in enumerate(ASPECTS.values()):
        if (k > keys[j]) if direction > 0 else (k < keys[j]):
            hits[i] += 1
