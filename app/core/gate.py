"""Significance gate: is the post-change sample really, and materially, off the baseline?

Detectors say *when* something may have changed; the gate decides whether it is worth an
alert. It scans windows ending now (1 .. ``max_post_n`` sessions) and, per *aspect*, takes
the window with the largest evidence: the likelihood-ratio estimate of where the change
began, so the post-change part is compared without diluting it with pre-change sessions
(and an alert waits until that part holds ``min_post_n`` sessions). The five aspects:
share of sessions above / below the baseline median bucket, above its p95, p99 and max
buckets (``app.core.aspects``). An aspect passes when both hold:

* statistical, windows of ``min_post_n`` (20) sessions and more: the two-sample binomial
  likelihood-ratio statistic (G, in nats) of "share in this window" vs "share in the
  baseline" is at least ``nats_needed(window)``: ``min_nats`` (24) at 20 sessions, falling
  as 1/n to ``long_nats`` (18) from 27 sessions on. G (``app.core.binomial``) counts the
  baseline's own sampling error, so a 2,000-session baseline does not pretend to know its
  P99 exactly. Short windows need more: every length up to 32 is scanned (longer ones
  coarsely and overlapping), and a handful of discrete values fakes a large G there far more
  often than the chi-square tail says;
* statistical, windows of ``min_short_n`` (4) to 19 sessions: the *exact* binomial tail
  -ln P(at least k of n) at the baseline share raised by ~2 sigma of its sampling error
  (``conservative_rate``) is at least ``short_nats`` (18, what G needs of long windows).
  Only an extreme move gets there (4 of 4 sessions above the baseline max, 5 of 5 above
  its P99), and then it need not wait for 20 sessions: a step of fan-out 3 -> 11 pages
  after 5-12 sessions, not 20. The exact tail is calibrated where G is not, and the
  raised baseline share keeps a baseline that undershot its tail from faking evidence;
* practical: the window moved the aspect's statistic by at least a configured fraction of
  the baseline's - mean or p50 for location (``min_rel_location``), the p95 / p99 for the
  tail aspects (``min_rel_tail``). Relative to ``max(|baseline stat|, scale_floor * p99)``
  so a mostly-zero metric (p50 = 0) still has a sane scale.

The verdict picks the passing aspect with the largest G; its window's summary is the
alert's ``current``. Where no share passes, a continuous metric gets one more test: the
mean of log(1 + x) (``app.core.log_location``; ``log_location_nats`` 24, the same practical
test as the location aspects), which sees a ramp that moves every session a little.
``corroborate`` judges one window whose start is known (another metric
of the segment confirmed a change there): no search over starts, so ``corroborate_nats``
(12) of G suffice.

>>> from app.core.sketch import Sketch
>>> ref = Reference.from_sketch(Sketch.of([3.0, 2.0, 4.0, 3.0, 1.0, 5.0, 3.0, 2.0] * 250))
>>> v = judge([11.0, 12.0, 9.0, 10.0] * 10, ref)
>>> v.passed, v.aspect, v.window, v.post["p50"]
(True, 'tail_max', 40, 10.0)
>>> judge([3.0, 2.0, 4.0, 3.0, 1.0] * 8, ref).passed
False
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from app.core.aspects import ASPECTS, aspect_hits, count_key
from app.core.binomial import g_stat, tail_nats
from app.core.log_location import LogLocation
from app.core.reference import Reference, conservative_rate
from app.core.sketch import MIN_VALUE, bucket_key, inverse_log_gamma


def scan_lengths(max_n: int) -> tuple[int, ...]:
    """Window lengths scanned: every length up to 32, then coarser (the change-point
    estimate needs precision only while the post-change sample is small).

    >>> scan_lengths(64)[-6:]
    (44, 48, 52, 56, 60, 64)
    """
    out = list(range(1, min(max_n, 32) + 1))
    step = 4
    while out[-1] < max_n:
        out.append(min(out[-1] + step, max_n))
        step = 8 if out[-1] >= 64 else step
        step = 16 if out[-1] >= 128 else step
    return tuple(out)


@dataclass(frozen=True, slots=True)
class GateConfig:
    min_post_n: int = 20  # shortest window judged by G (shorter: the exact tail test)
    min_short_n: int = 4  # shortest window judged at all
    short_nats: float = 18.0  # exact-tail evidence a window shorter than min_post_n needs
    corroborate_nats: float = 12.0  # G of a window whose start is given (``corroborate``)
    max_post_n: int = 512  # longest post-change window scanned
    min_nats: float = 24.0  # evidence a window of min_post_n sessions needs
    long_nats: float = 18.0  # ... falling as 1/n to this floor for longer windows
    log_location_nats: float = 24.0  # evidence the log-location test needs (log_location.py)
    min_rel_location: float = 0.15
    min_rel_tail: float = 0.5
    scale_floor: float = 0.1  # of the baseline p99: the smallest scale a change is judged on

    @property
    def lengths(self) -> tuple[int, ...]:
        return scan_lengths(self.max_post_n)

    def nats_needed(self, n: int) -> float:
        """Evidence a window of ``n`` sessions needs.

        >>> [round(GateConfig().nats_needed(n), 1) for n in (20, 24, 30, 100)]
        [24.0, 20.0, 18.0, 18.0]
        """
        return max(self.long_nats, self.min_nats * self.min_post_n / max(n, 1))


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    aspect: str = ""
    window: int = 0  # sessions in the post-change sample
    nats: float = 0.0
    change: float = 0.0  # relative change of the judged statistic (signed)
    post: dict[str, float] = field(default_factory=dict)  # n, mean, p50, p95, p99
    wait: int = 0  # significant, but the post-change sample is this many sessions short


def judge(values: Sequence[float], ref: Reference, cfg: GateConfig = GateConfig(),
          loc: LogLocation | None = None) -> Verdict:
    """Judge the latest ``values`` (oldest first) against the baseline ``ref`` (and its
    log-location ``loc``, where the baseline is continuous)."""
    verdict = _judge_shares(values, ref, cfg)
    if verdict.passed or loc is None:
        return verdict
    nats, length, direction = loc.scan(values, cfg.min_post_n)
    if nats >= cfg.log_location_nats:
        up = direction > 0
        if (v := _practical(values, "median_up" if up else "median_down", length, nats, ref,
                            cfg)) is not None:
            return replace(v, aspect="log_mean_up" if up else "log_mean_down")
    return verdict


def _judge_shares(values: Sequence[float], ref: Reference, cfg: GateConfig) -> Verdict:
    best, short = _scan(values, ref, cfg, cfg.lengths)
    waits = []
    for aspect, (nats, length) in _strongest(best):
        if nats < cfg.nats_needed(max(length, cfg.min_post_n)):
            continue
        if length < cfg.min_post_n:  # significant by G, too recent for G to describe it
            waits.append(cfg.min_post_n - length)
            continue
        if (v := _practical(values, aspect, length, nats, ref, cfg)) is not None:
            return v
    for aspect, (nats, length) in _strongest(short):
        if nats >= cfg.short_nats:
            if (v := _practical(values, aspect, length, nats, ref, cfg)) is not None:
                return v
        elif nats >= cfg.short_nats / 2:  # an extreme move under way: judge at the next value
            waits.append(1)
    return Verdict(False, wait=min(waits, default=0))


def corroborate(values: Sequence[float], ref: Reference, cfg: GateConfig = GateConfig()) -> Verdict:
    """Judge ``values`` as one window: the sessions since a change that another metric of
    the segment confirmed began. The start is given, not searched for over every window at
    every look, so ``corroborate_nats`` (12) of G suffice; the practical test is the same.

    >>> from app.core.sketch import Sketch
    >>> ref = Reference.from_sketch(Sketch.of([3.0, 2.0, 4.0, 3.0, 1.0, 5.0, 3.0, 2.0] * 250))
    >>> higher = [4.0, 3.0, 5.0, 4.0, 6.0, 4.0, 2.0, 5.0] * 4  # median 3 -> 4: 17 nats
    >>> judge(higher, ref).passed, corroborate(higher, ref).aspect
    (False, 'median_up')
    """
    return corroborate_counts(len(values), aspect_hits(values, ref), ref, cfg, lambda: values)


def corroborate_counts(n: int, hits: list[int], ref: Reference, cfg: GateConfig,
                       values: Callable[[], Sequence[float]]) -> Verdict:
    """``corroborate`` of a window of ``n`` values whose ``aspect_hits`` the caller keeps up
    to date: a look costs O(1) a value; ``values()`` gives the window only for the practical
    test of an aspect whose G passed."""
    if n < cfg.min_post_n:
        return Verdict(False)
    gs = {aspect: (g, n) for aspect, k in zip(ASPECTS, hits, strict=True)
          if (g := _g(aspect, k, n, ref)) > 0.0}
    for aspect, (nats, length) in _strongest(gs):
        if nats >= cfg.corroborate_nats and (
                v := _practical(values(), aspect, length, nats, ref, cfg)) is not None:
            return v
    return Verdict(False)


def _strongest(best: dict[str, tuple[float, int]]) -> list[tuple[str, tuple[float, int]]]:
    return sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))


def _practical(values: Sequence[float], aspect: str, length: int, nats: float,
               ref: Reference, cfg: GateConfig) -> Verdict | None:
    post = summarize(values[len(values) - length:])
    change = _change(aspect, post, ref, cfg)
    return None if change is None else Verdict(True, aspect, length, nats, change, post)


def _scan(values: Sequence[float], ref: Reference, cfg: GateConfig, lengths: tuple[int, ...],
          ) -> tuple[dict[str, tuple[float, int]], dict[str, tuple[float, int]]]:
    """Per aspect, the (G, length) of the window ending now with the largest G: the
    likelihood-ratio estimate of where the change began; and the (exact-tail nats, length)
    of the strongest window from ``min_short_n`` to ``min_post_n - 1`` sessions."""
    inv = inverse_log_gamma(ref.rel_acc)
    keys = ref.keys
    counts = [0] * len(ASPECTS)
    best = dict.fromkeys(ASPECTS, (0.0, 0))
    short = dict.fromkeys(ASPECTS, (0.0, 0))
    todo = [n for n in lengths if n <= len(values)]
    t = 0
    for i, x in enumerate(reversed(values), start=1):
        if t == len(todo):
            break
        count_key(counts, bucket_key(x, inv), keys)
        if i == todo[t]:
            t += 1
            is_short = cfg.min_short_n <= i < cfg.min_post_n
            for aspect, c in zip(ASPECTS, counts, strict=True):
                g = _g(aspect, c, i, ref)
                if g > 0.0 and g >= best[aspect][0]:  # ties: the longer window
                    best[aspect] = (g, i)
                if is_short and g > 0.0 and (e := _exact(aspect, c, i, ref)) >= short[aspect][0]:
                    short[aspect] = (e, i)
    return best, short


def _exact(aspect: str, k: int, n: int, ref: Reference) -> float:
    j, direction, _ = ASPECTS[aspect]
    return tail_nats(k, n, conservative_rate(ref.above[j] if direction > 0 else ref.below50,
                                             ref.n))


def _g(aspect: str, k: int, n: int, ref: Reference) -> float:
    j, direction, _ = ASPECTS[aspect]
    k0 = ref.above[j] if direction > 0 else ref.below50
    if k * ref.n <= k0 * n:  # not moved in this aspect's direction
        return 0.0
    return g_stat(k, n, k0, ref.n)


def _change(aspect: str, post: dict, ref: Reference, cfg: GateConfig) -> float | None:
    """Signed relative change if it is practically significant for ``aspect``, else None."""
    _, direction, stat = ASPECTS[aspect]
    floor = max(cfg.scale_floor * ref.p99, MIN_VALUE)
    if stat == "location":
        rel = max((_rel(post[s], getattr(ref, s), floor) for s in ("mean", "p50")),
                  key=lambda r: r * direction)
        return rel if rel * direction >= cfg.min_rel_location else None
    rel = _rel(post[stat], ref.quantile(stat), floor)
    return rel if rel >= cfg.min_rel_tail else None


def _rel(new: float, old: float, floor: float) -> float:
    return (new - old) / max(abs(old), floor)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """n, mean, p50, p95, p99 of raw values (exact, inverted-CDF quantiles).

    >>> summarize([1.0, 2.0, 3.0, 10.0])
    {'n': 4, 'mean': 4.0, 'p50': 2.0, 'p95': 10.0, 'p99': 10.0}
    """
    xs = sorted(values)
    n = len(xs)

    def q(p: float) -> float:
        return xs[max(1, math.ceil(p * n - 1e-9)) - 1]

    return {"n": n, "mean": math.fsum(xs) / n, "p50": q(0.5), "p95": q(0.95), "p99": q(0.99)}
