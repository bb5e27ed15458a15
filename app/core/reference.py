"""The frozen baseline of one metric, digested for detectors and the significance gate.

A ``Reference`` is read once from the baseline sketch when it is frozen: its summary
(n, mean, p50, p95, p99, max) and, for the bucket keys of its p50/p95/p99, how many baseline
values fell above (and below the p50). Tests compare *bucket keys*, not values, so live
values are classified exactly as the baseline was, and discrete metrics (a P99 of 8 tool
calls that only 0.4% of sessions exceed) get their true exceedance rate, not a nominal 1%.

>>> from app.core.sketch import Sketch
>>> ref = Reference.from_sketch(Sketch.of([1, 2, 2, 3, 3, 3, 4, 4, 5, 9]))
>>> ref.n, ref.p50, ref.p99, ref.above[2], ref.below50
(10, 3.0, 9.0, 0, 3)
>>> Reference.from_dict(ref.to_dict()) == ref
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from app.core.sketch import Sketch

LEVEL_NAMES = ("p50", "p95", "p99", "max")
LEVEL_QS = (0.5, 0.95, 0.99, 1.0)


@dataclass(frozen=True, slots=True)
class Reference:
    n: int
    mean: float
    p50: float
    p95: float
    p99: float
    max: float
    rel_acc: float
    keys: tuple[int, ...]  # bucket keys of p50, p95, p99, max
    above: tuple[int, ...]  # baseline values in buckets above each key
    below50: int  # baseline values in buckets below the p50 key

    @classmethod
    def from_sketch(cls, s: Sketch) -> Reference:
        keys = tuple(s.quantile_keys(LEVEL_QS))
        p50, p95, p99 = (s.value_of(k) for k in keys[:3])
        return cls(n=s.count, mean=s.mean, p50=p50, p95=p95, p99=p99, max=s.max,
                   rel_acc=s.rel_acc, keys=keys, above=tuple(s.count_above(k) for k in keys),
                   below50=s.count_below(keys[0]))

    def quantile(self, name: str) -> float:
        return {"p50": self.p50, "p95": self.p95, "p99": self.p99}[name]

    def summary(self) -> dict[str, float]:
        """n/mean/p50/p95/p99: the ``DistributionSummary`` of the alert contract."""
        return {"n": self.n, "mean": self.mean, "p50": self.p50, "p95": self.p95, "p99": self.p99}

    def to_dict(self) -> dict:
        return {f: getattr(self, f) for f in FIELDS}

    @classmethod
    def from_dict(cls, d: dict) -> Reference:
        return cls(**{**d, "keys": tuple(d["keys"]), "above": tuple(d["above"])})


FIELDS = tuple(f.name for f in fields(Reference))


def conservative_rate(k: int, n: int) -> float:
    """Upper ~2-sigma bound of a rate seen as ``k`` of ``n`` (never 0: a baseline that
    never exceeded still allows the odd exceedance).

    >>> round(conservative_rate(20, 2000), 4), round(conservative_rate(0, 2000), 4)
    (0.0156, 0.002)
    """
    return min(0.5, (k + 2.0 + 2.0 * math.sqrt(k + 1.0)) / max(n, 1))
