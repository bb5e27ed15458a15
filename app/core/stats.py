"""Summary statistics of one metric's distribution over a window.

The common currency between stage 2 (which keeps sketches), assumption checks and the
recalibrator: they read ``MetricStats``, never a sketch.

>>> s = MetricStats(n=3, mean=2.0, p50=2.0, p90=3.0, p95=3.0, p99=3.0, max=3.0)
>>> s.get("p95"), s.get("max")
(3.0, 3.0)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

STAT_NAMES = ("mean", "p50", "p90", "p95", "p99", "max")


@dataclass(frozen=True, slots=True)
class MetricStats:
    n: int
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float

    def get(self, stat: str) -> float:
        if stat not in STAT_NAMES:
            raise KeyError(f"unknown stat {stat!r}; expected one of {', '.join(STAT_NAMES)}")
        return float(getattr(self, stat))

    def summary(self) -> dict[str, float]:
        """n/mean/p50/p95/p99, the evidence shape of the alert contract."""
        d = asdict(self)
        return {k: d[k] for k in ("n", "mean", "p50", "p95", "p99")}


# Per-segment statistics: metric name -> stats over the current window.
SegmentStats = dict[str, MetricStats]
