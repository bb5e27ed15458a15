"""How early could *any* calibrated test call a change? The evidence limits of two scenarios.

``tail_rows``: tail-only. ``location_rows``: context-creep (below).

In ``tail-only``, 3% of one segment's sessions need 4-6x the context; the median stays.
ADWIN(clock=1) catches half of these changes within ~27 sessions, each time after a single
value beyond the pre-change max: its bound assumes values in [0, 1], so on token counts one
outlier is enough (and the same reaction gives it its false alarms on steady traffic).

A calibrated test must say how unlikely the recent values are under the baseline. Here every
post-change value ``x`` gets its tail probability ``q(x) = P0(X > x)`` under a null model of the
baseline (the ``baseline_n`` sessions before the change), and a window ending now gets the
evidence ``max_j -ln P(Binomial(n, q_(j)) >= j)`` (``q_(j)``: its j-th smallest q), the exact
tail the gate's short windows use. The delay is the first session at which some window
reaches ``nats`` (18: the least the gate ever alerts on). Three null models:

* ``beyond_max``: distribution-free; only how many values of the window lie above the
  baseline max counts: k of n with probability C(n, k) / C(n0 + n, k) under exchangeability
  (the k largest of both samples are all new ones). What counting exceedances can reach.
* ``log_exponential``: an extreme-value fit, conservative for light tails: ln x above the
  baseline P95 is exponential (a generalized Pareto tail of shape 0 in log space), its scale
  the mean excess raised by 2 / sqrt(m) of the m excesses (an upper bound), its share the
  P95's raised by 2 sigma. It does not fake evidence where the true tail is lognormal,
  exponential or bounded; a real workload's tail is not known to be any lighter.
* ``lognormal``: ln x is normal with the baseline's mean and sd. The simulator's own family
  (an oracle: no real workload promises it), so the earliest calibrated detection possible
  on this data.

>>> q, evidence = beyond_max_model([1.0, 2.0, 3.0])
>>> q(3.5), q(2.5), round(evidence([0.0, 0.0], 2), 2)  # both of 2 above a max of 3: 1 in 10
(0.0, 1.0, 2.3)
>>> round(window_nats([1e-4, 1.0, 2e-4], 3), 1)  # two values at ~1e-4 in a window of 3
15.9
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence

from bench.common import Row

MAX_WINDOW = 512  # the gate's longest post-change window
SMALL_Q = 0.01  # values less extreme than this add nothing a count test would not


Model = tuple[Callable[[float], float], Callable[[Sequence[float], int], float]]


def beyond_max_model(base: Sequence[float]) -> Model:
    top, n0 = max(base), len(base)

    def evidence(qs: Sequence[float], n: int) -> float:
        k = len(qs)
        return math.lgamma(n0 + n + 1) - math.lgamma(n0 + n - k + 1) \
            - math.lgamma(n + 1) + math.lgamma(n - k + 1)

    return (lambda x: 0.0 if x > top else 1.0), evidence


def log_exponential_model(base: Sequence[float]) -> Model:
    srt = sorted(base)
    n0 = len(srt)
    u = srt[int(0.95 * n0)]
    excess = [math.log(x / u) for x in srt if x > u]
    m = len(excess)
    scale = statistics.fmean(excess) * (1.0 + 2.0 / math.sqrt(m))
    share = (m + 2.0 * math.sqrt(m)) / n0
    return (lambda x: share * math.exp(-math.log(x / u) / scale) if x > u else 1.0), window_nats


def lognormal_model(base: Sequence[float]) -> Model:
    logs = [math.log(x) for x in base if x > 0.0]
    mean, sd = statistics.fmean(logs), statistics.pstdev(logs)

    def q(x: float) -> float:
        return 0.5 * math.erfc((math.log(x) - mean) / (sd * math.sqrt(2.0))) if x > 0.0 else 1.0

    return q, window_nats


MODELS = {"beyond_max": beyond_max_model, "log_exponential": log_exponential_model,
          "lognormal": lognormal_model}


def binomial_tail_nats(k: int, n: int, p: float) -> float:
    """-ln P(X >= k), X ~ Binomial(n, p) (terms past k + 60 are negligible for p <= 0.01)."""
    terms = (math.comb(n, j) * p**j * (1.0 - p) ** (n - j) for j in range(k, min(n, k + 60) + 1))
    return -math.log(max(math.fsum(terms), 1e-300))


def window_nats(qs: Sequence[float], n: int) -> float:
    """Evidence of a window of ``n`` values holding the tail probabilities ``qs`` (< 1)."""
    return max((binomial_tail_nats(j, n, q) for j, q in enumerate(sorted(qs), start=1)
                if q < SMALL_Q), default=0.0)


def delay(post: Sequence[float], model: Model, nats: float) -> int | None:
    """First index of ``post`` at which a window ending there has ``nats`` of evidence. The
    best window starts at an extreme value (a longer one only dilutes), so only those starts
    are tried."""
    q, evidence = model
    extreme: list[tuple[int, float]] = []  # (index, q) of values with q < SMALL_Q
    for i, x in enumerate(post):
        if (qx := q(x)) < SMALL_Q:
            extreme.append((i, qx))
            extreme = [(j, qj) for j, qj in extreme if i - j < MAX_WINDOW]
            for s, (start, _) in enumerate(extreme):
                if evidence([qj for _, qj in extreme[s:]], i - start + 1) >= nats:
                    return i
    return None


Case = tuple[int, str, list[float], int]  # (seed, metric, the segment's values, change index)


def tail_rows(cases: Sequence[Case], baseline_n: int, nats: float = 18.0) -> list[Row]:
    """One row per null model: delays over ``cases`` of (seed, metric, values, change index)."""
    return [_row(f"tail-only: earliest {nats:g} nats under a {name} null",
                 [delay(xs[cut:], model(xs[cut - baseline_n:cut]), nats) for _, _, xs, cut in cases])
            for name, model in MODELS.items()]


def _row(measure: str, delays: list[int | None]) -> Row:
    found = [d for d in delays if d is not None]
    return Row("4 Detection", f"{measure} (not a detector: the limit of the evidence)",
               f"{len(found)}/{len(delays)} reached; median "
               f"{statistics.median(found) if found else '-'}; {delays}",
               note="bench/evidence_limits.py; same order as the delays row")


# context-creep: every session's context demand creeps up (6K -> 20K over 6,000 sessions).
# ADWIN(clock=1) fires on context tokens 132-171 sessions into the ramp. The best a test of
# location can do on lognormal data is a z-test of the mean of ln x over the windows ending
# now, with the baseline's mean and sd taken as exact (an oracle: a real test must also
# estimate them). ``location_rows`` gives the first session at which that scan reaches each
# of ``LOCATION_NATS``: what ADWIN's detections correspond to, and where a threshold that
# keeps 1,000,000 steady sessions free of false alarms (18-24 nats) puts the limit.
LOCATION_NATS = (9.0, 18.0, 24.0)


def location_delays(post: Sequence[float], mean: float, sd: float, thresholds: Sequence[float],
                    min_n: int = 20, horizon: int = 2000) -> list[int | None]:
    """First index of ``post`` at which some window ending there (``min_n`` values or more)
    has ``z^2 / 2`` of its mean log(1 + x) against (``mean``, ``sd``) >= each threshold.

    >>> location_delays([1.0] * 30 + [1.5] * 60, math.log(2.0), 0.2, (4.0, 1e9))
    [41, None]
    """
    logs = [math.log1p(x) for x in post[:horizon]]
    found: list[int | None] = [None] * len(thresholds)
    scale = 2.0 * sd * sd
    for t in range(min_n - 1, len(logs)):
        total, best = 0.0, 0.0
        for n in range(1, t + 2):
            total += logs[t + 1 - n]
            if n >= min_n:
                best = max(best, (total / n - mean) ** 2 * n / scale)
        for i, th in enumerate(thresholds):
            if found[i] is None and best >= th:
                found[i] = t
        if None not in found:
            break
    return found


def location_rows(cases: Sequence[Case], baseline_n: int) -> list[Row]:
    """One row per threshold of ``LOCATION_NATS``: the oracle's delays over ``cases``."""
    per_case = []
    for _, _, xs, cut in cases:
        base = [math.log1p(x) for x in xs[cut - baseline_n:cut]]
        per_case.append(location_delays(xs[cut:], statistics.fmean(base),
                                        statistics.pstdev(base), LOCATION_NATS))
    return [_row(f"context-creep: earliest {nats:g} nats of an oracle z-scan of mean log(1 + x)",
                 [d[i] for d in per_case]) for i, nats in enumerate(LOCATION_NATS)]
