"""Mergeable relative-error quantile sketch (DDSketch-style logarithmic buckets).

A value ``x > 0`` falls in bucket ``k = ceil(log(x) / log(gamma))`` with
``gamma = (1 + a) / (1 - a)``; every value of a bucket lies within relative error ``a`` of
the bucket's representative ``2 * gamma**k / (gamma + 1)``, so a quantile is answered within
``a`` (1% by default) of the exact order statistic (numpy ``method="inverted_cdf"``).
Values below ``MIN_VALUE`` (zeros) have their own count. Memory is bounded: beyond
``max_buckets`` the lowest buckets collapse into one, which spoils only low quantiles; the
tail, which is what we watch, keeps its guarantee. Count, exact sum, min and max are kept.

While every value added is an integer, a bucket that can hold only one integer reports that
integer exactly (small counts read ``3``, not ``3.02``: assumptions like "p50 <= 3" need it).

>>> s = Sketch()
>>> for x in [0, 1, 2, 3, 4, 100]:
...     s.add(x)
>>> s.count, round(s.mean, 3), s.max, s.quantile(0.5), s.quantile(0.99)
(6, 18.333, 100.0, 2.0, 100.0)
>>> t = Sketch.from_dict(s.to_dict()); t.add(2.5); t.merge(s)
>>> t.count, abs(t.quantile(0.5) - 2.5) <= 0.01 * 2.5   # exact answer: 2.5
(13, True)
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections.abc import Iterable, Sequence
from itertools import accumulate, pairwise

from app.core.stats import MetricStats

MIN_VALUE = 1e-9  # below this a value counts as zero (ratios never need more resolution)
ZERO_KEY = -(2**31)  # bucket key of the zero bucket, below every real key
SUMMARY_QS = (0.5, 0.9, 0.95, 0.99)

# Bucket representatives depend only on the mapping (1 / log gamma) and the key: computed once.
# inverse log gamma -> key -> [representative, the same as read while all values are integers
# (None until needed)]. Bounded: keys of finite floats lie within about +-36,000 at 1% accuracy.
_REPRESENTATIVES: dict[float, dict[int, list]] = {}


def inverse_log_gamma(rel_acc: float) -> float:
    """1 / log(gamma) of the bucket mapping for relative accuracy ``rel_acc``."""
    if not 0.0 < rel_acc < 1.0:
        raise ValueError(f"rel_acc must be in (0, 1), got {rel_acc!r}")
    return 1.0 / math.log((1.0 + rel_acc) / (1.0 - rel_acc))


def bucket_key(x: float, inv_ln: float) -> int:
    """Bucket key of ``x`` (``ZERO_KEY`` for zeros).

    >>> inv = inverse_log_gamma(0.01)
    >>> bucket_key(0.0, inv) == ZERO_KEY, bucket_key(3.0, inv) < bucket_key(3.1, inv)
    (True, True)
    """
    return ZERO_KEY if x < MIN_VALUE else math.ceil(math.log(x) * inv_ln)


class Sketch:
    """Relative-error quantile sketch; ``add``, ``merge``, ``quantile``; plain-data state."""

    __slots__ = ("rel_acc", "max_buckets", "_inv_ln", "bins", "zeros", "count", "total",
                 "lo", "hi", "integral", "floor", "_sorted", "_reps")

    def __init__(self, rel_acc: float = 0.01, max_buckets: int = 2048) -> None:
        if max_buckets < 2:
            raise ValueError("max_buckets must be >= 2")
        self._inv_ln = inverse_log_gamma(rel_acc)
        self.rel_acc, self.max_buckets = rel_acc, max_buckets
        self.bins: dict[int, int] = {}
        self.zeros = self.count = 0
        self.total = self.lo = self.hi = 0.0
        self.integral = True
        self.floor: int | None = None  # set once low buckets were collapsed
        self._sorted: list[int] | None = []  # cached sorted keys; None = stale
        self._reps = _REPRESENTATIVES.setdefault(self._inv_ln, {})

    # -- writing -----------------------------------------------------------------------
    def key(self, x: float) -> int:
        """``bucket_key(x, ...)`` of this sketch's mapping."""
        return ZERO_KEY if x < MIN_VALUE else math.ceil(math.log(x) * self._inv_ln)

    def add(self, x: float, key: int | None = None) -> None:
        """Add one value, finite and >= 0 (``key``: its bucket, if the caller has it)."""
        if not 0.0 <= x < math.inf:
            raise ValueError(f"sketch values must be finite and >= 0, got {x!r}")
        # count, sum, min, max, integral (inline: once per value while a baseline is collected)
        if self.count == 0:
            self.lo = self.hi = float(x)
        elif x > self.hi:
            self.hi = float(x)
        elif x < self.lo:
            self.lo = float(x)
        self.count += 1
        self.total += x
        if self.integral and not float(x).is_integer():
            self.integral = False
        if x < MIN_VALUE:
            self.zeros += 1
            return
        k = math.ceil(math.log(x) * self._inv_ln) if key is None else key
        bins = self.bins
        if self.floor is None and k in bins:  # the common case, inline
            bins[k] += 1
        else:
            self.add_key(k)

    def add_key(self, k: int, n: int = 1) -> None:
        """Count ``n`` more in bucket ``k`` (bookkeeping of count/sum is the caller's)."""
        if self.floor is not None and k < self.floor:
            k = self.floor
        bins = self.bins
        if k in bins:
            bins[k] += n
            return
        bins[k] = n
        if self._sorted is not None:  # kept sorted as keys come and go: reads never sort
            insort(self._sorted, k)
        if len(bins) > self.max_buckets:
            self._collapse()

    def remove_key(self, k: int) -> None:
        """Take one value out of bucket ``k`` (it must have been counted there)."""
        if self.floor is not None and k < self.floor:
            k = self.floor
        left = self.bins[k] - 1
        if left:
            self.bins[k] = left
        else:
            del self.bins[k]
            if self._sorted is not None:
                del self._sorted[bisect_left(self._sorted, k)]

    def _collapse(self) -> None:
        keys = self.sorted_keys()
        new_floor = keys[len(keys) - self.max_buckets]
        self._fold_below(new_floor)

    def _fold_below(self, floor: int) -> None:
        moved = sum(c for k, c in self.bins.items() if k < floor)
        self.bins = {k: c for k, c in self.bins.items() if k >= floor}
        self.bins[floor] = self.bins.get(floor, 0) + moved
        self.floor, self._sorted = floor, None

    def merge(self, other: Sketch) -> None:
        """Add every value of ``other`` to this sketch (same accuracy required)."""
        if other.rel_acc != self.rel_acc:
            raise ValueError("cannot merge sketches of different relative accuracy")
        if other.count == 0:
            return
        if self.count == 0:
            self.lo, self.hi = other.lo, other.hi
        else:
            self.lo, self.hi = min(self.lo, other.lo), max(self.hi, other.hi)
        self.count += other.count
        self.total += other.total
        self.zeros += other.zeros
        self.integral = self.integral and other.integral
        if other.floor is not None and (self.floor is None or other.floor > self.floor):
            self._fold_below(other.floor)
        for k, c in other.bins.items():
            self.add_key(k, c)

    # -- reading -----------------------------------------------------------------------
    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    @property
    def max(self) -> float:
        return self.hi

    @property
    def min(self) -> float:
        return self.lo

    def sorted_keys(self) -> list[int]:
        if self._sorted is None:
            self._sorted = sorted(self.bins)
        return self._sorted

    def quantile(self, q: float) -> float:
        return self.quantiles((q,))[0]

    def quantiles(self, qs: Sequence[float]) -> list[float]:
        """Several quantiles in one sweep over the buckets (inverted-CDF ranks)."""
        return [self.value_of(k) for k in self.quantile_keys(qs)]

    def quantile_keys(self, qs: Sequence[float]) -> list[int]:
        """Bucket key holding each quantile (``ZERO_KEY`` for the zero bucket)."""
        if self.count == 0:
            raise ValueError("quantile of an empty sketch")
        if any(not 0.0 <= q <= 1.0 for q in qs):
            raise ValueError(f"quantiles must be in [0, 1], got {list(qs)!r}")
        return self._keys_at(qs)

    def _keys_at(self, qs: Sequence[float]) -> list[int]:
        count = self.count
        keys = self.sorted_keys()
        # cum[j]: values in the zero bucket and the first j buckets; a rank's bucket is the
        # first whose cumulative count reaches it
        cum = list(accumulate(map(self.bins.__getitem__, keys), initial=self.zeros))
        out = []
        for q in qs:
            j = bisect_left(cum, max(1, math.ceil(q * count - 1e-9)))
            if j == len(cum):
                raise IndexError("inconsistent sketch: fewer values in buckets than counted")
            out.append(ZERO_KEY if j == 0 else keys[j - 1])
        return out

    def value_of(self, k: int) -> float:
        """Representative value of bucket ``k``, clamped to [min, max]."""
        if k == ZERO_KEY:
            v = 0.0
        else:
            rep = self._reps.get(k)
            if rep is None:
                v = 2.0 * math.exp(k / self._inv_ln) / (1.0 + math.exp(1.0 / self._inv_ln))
                rep = self._reps[k] = [v, None]
            v = rep[0]
            if self.integral and k != self.floor:
                if rep[1] is None:
                    rep[1] = self._snap(k, v)
                v = rep[1]
        # min(max(v, lo), hi), the same object for every input, without the builtins' calls
        v = self.lo if self.lo > v else v
        return self.hi if self.hi < v else v

    def _snap(self, k: int, v: float) -> float:
        # only a bucket holding a single integer can be answered exactly
        c = round(v)
        if c >= 1 and self.key(c) == k and self.key(c + 1) != k and self.key(c - 1) != k:
            return float(c)
        return v

    def count_above(self, k: int) -> int:
        """How many values lie in buckets above key ``k``."""
        return sum(c for key, c in self.bins.items() if key > k)

    def count_below(self, k: int) -> int:
        """How many values lie in buckets below key ``k`` (zeros included)."""
        below = sum(c for key, c in self.bins.items() if key < k)
        return below + (self.zeros if k > ZERO_KEY else 0)

    def stats(self) -> MetricStats:
        """n, mean, p50, p90, p95, p99, max (the stage-2 currency)."""
        if self.count == 0:
            raise ValueError("quantile of an empty sketch")
        value_of = self.value_of
        p50, p90, p95, p99 = [value_of(k) for k in self._keys_at(SUMMARY_QS)]
        return MetricStats(self.count, self.total / self.count, p50, p90, p95, p99, self.hi)

    # -- plain data --------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Compact plain data: keys delta-encoded, counts aligned with them."""
        keys = self.sorted_keys()
        deltas = [b - a for a, b in pairwise(keys)]
        return {"a": self.rel_acc, "b": self.max_buckets, "n": self.count, "z": self.zeros,
                "s": self.total, "lo": self.lo, "hi": self.hi, "i": int(self.integral),
                "f": self.floor, "k": keys[:1] + deltas, "c": [self.bins[k] for k in keys]}

    @classmethod
    def from_dict(cls, d: dict) -> Sketch:
        s = cls(d["a"], d["b"])
        keys = list(accumulate(d["k"]))
        if len(keys) != len(d["c"]) or d["z"] + sum(d["c"]) != d["n"]:
            raise ValueError("inconsistent sketch data")
        s.bins = dict(zip(keys, d["c"], strict=True))
        # kept sorted from here on (to_dict writes increasing keys; anything else is re-sorted)
        s._sorted = keys if all(b > a for a, b in pairwise(keys)) else None
        s.count, s.zeros, s.total = d["n"], d["z"], d["s"]
        s.lo, s.hi, s.integral, s.floor = d["lo"], d["hi"], bool(d["i"]), d["f"]
        return s

    def copy(self) -> Sketch:
        return Sketch.from_dict(self.to_dict())

    @classmethod
    def of(cls, values: Iterable[float], rel_acc: float = 0.01, max_buckets: int = 2048) -> Sketch:
        """A sketch of ``values``.

        >>> Sketch.of([5, 5, 5]).quantile(0.99)
        5.0
        """
        s = cls(rel_acc, max_buckets)
        for x in values:
            s.add(x)
        return s
