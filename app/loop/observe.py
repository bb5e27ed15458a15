"""Exact per-segment distributions from closed sessions (offline use: CLI checks, tests).

Stage 2 keeps sketches; offline, a file of sessions is small enough for numpy to give exact
quantiles of the same ``MetricStats`` shape.

>>> from schemas import SessionShape, Segment
>>> ss = [SessionShape(session_id=f"s{i}", segment=Segment(agent="dev"), spans=1,
...                    start_time_unix_nano=i, end_time_unix_nano=i + 1, closed_by="flush",
...                    fanout=i) for i in range(1, 6)]
>>> st = segment_stats(ss)
>>> st["dev"]["fanout"]
MetricStats(n=5, mean=3.0, p50=3.0, p90=4.6, p95=4.8, p99=4.96, max=5.0)
>>> "cache_age_s" in st["dev"]   # no session had a value
False
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from app.core.stats import MetricStats
from schemas.session import METRICS, SessionShape

# ``retries`` is not a drift metric, but the recalibrator sizes retry budgets from it.
DEFAULT_METRICS: tuple[str, ...] = (*METRICS, "retries")


def metric_stats(values: Sequence[float]) -> MetricStats | None:
    """Exact summary of ``values`` (None when empty).

    >>> metric_stats([1.0, 2.0, 3.0]).p50
    2.0
    >>> metric_stats([]) is None
    True
    """
    if len(values) == 0:
        return None
    arr = np.asarray(values, dtype=float)
    p50, p90, p95, p99 = (float(q) for q in np.quantile(arr, [0.5, 0.9, 0.95, 0.99]))
    return MetricStats(
        n=int(arr.size), mean=float(arr.mean()), p50=p50, p90=p90, p95=p95, p99=p99,
        max=float(arr.max()),
    )


def segment_stats(
    sessions: Iterable[SessionShape], metrics: Sequence[str] = DEFAULT_METRICS
) -> dict[str, dict[str, MetricStats]]:
    """``{segment_key: {metric: MetricStats}}`` over all sessions, Nones skipped."""
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for s in sessions:
        per_metric = values[s.segment.key]
        for m in metrics:
            v = s.metric(m)
            if v is not None:
                per_metric[m].append(v)
    out: dict[str, dict[str, MetricStats]] = {}
    for key in sorted(values):
        out[key] = {m: st for m, vs in values[key].items() if (st := metric_stats(vs)) is not None}
    return out


def matching_stats(sessions: Iterable[SessionShape], segment, metric: str) -> MetricStats | None:
    """Stats of ``metric`` over the sessions that fall in ``segment`` (agent-only: all types).

    >>> from schemas import SessionShape, Segment
    >>> ss = [SessionShape(session_id=f"s{i}", segment=Segment(agent="a", task_type=t), spans=1,
    ...                    start_time_unix_nano=0, end_time_unix_nano=1, closed_by="flush",
    ...                    fanout=i) for i, t in enumerate(["x", "y", None])]
    >>> matching_stats(ss, Segment(agent="a"), "fanout").n
    3
    >>> matching_stats(ss, Segment(agent="a", task_type="y"), "fanout").max
    1.0
    """
    values = [v for s in sessions if segment.matches(s.segment) and (v := s.metric(metric)) is not None]
    return metric_stats(values)
