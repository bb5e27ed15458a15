"""Frozen copy of app/core/sketch.py and windows.py before their read-path speed-ups: the
reference that tests/unit/test_window_equivalence.py holds the live ones to, bit for bit."""
# ruff: noqa
from __future__ import annotations

import base64
import math
import sys
from array import array
from collections.abc import Iterable, Sequence
from itertools import accumulate, pairwise

from app.core.stats import MetricStats

MIN_VALUE = 1e-9  # below this a value counts as zero (ratios never need more resolution)
ZERO_KEY = -(2**31)  # bucket key of the zero bucket, below every real key
SUMMARY_QS = (0.5, 0.9, 0.95, 0.99)


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
                 "lo", "hi", "integral", "floor", "_sorted")

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

    # -- writing -----------------------------------------------------------------------
    def key(self, x: float) -> int:
        return bucket_key(x, self._inv_ln)

    def add(self, x: float, key: int | None = None) -> None:
        """Add one value, finite and >= 0 (``key``: its bucket, if the caller has it)."""
        if not 0.0 <= x < math.inf:
            raise ValueError(f"sketch values must be finite and >= 0, got {x!r}")
        self._note(x)
        if x < MIN_VALUE:
            self.zeros += 1
            return
        self.add_key(math.ceil(math.log(x) * self._inv_ln) if key is None else key)

    def _note(self, x: float) -> None:
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

    def add_key(self, k: int, n: int = 1) -> None:
        """Count ``n`` more in bucket ``k`` (bookkeeping of count/sum is the caller's)."""
        if self.floor is not None and k < self.floor:
            k = self.floor
        bins = self.bins
        if k in bins:
            bins[k] += n
            return
        bins[k] = n
        self._sorted = None
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
            self._sorted = None

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
        ranks = [max(1, math.ceil(q * self.count - 1e-9)) for q in qs]
        out = [ZERO_KEY] * len(qs)
        keys, bins = self.sorted_keys(), self.bins
        cum, j = self.zeros, 0
        for i in sorted(range(len(qs)), key=ranks.__getitem__):
            while cum < ranks[i]:
                cum += bins[keys[j]]
                j += 1
            out[i] = ZERO_KEY if j == 0 else keys[j - 1]
        return out

    def value_of(self, k: int) -> float:
        """Representative value of bucket ``k``, clamped to [min, max]."""
        if k == ZERO_KEY:
            return min(max(0.0, self.lo), self.hi)
        v = 2.0 * math.exp(k / self._inv_ln) / (1.0 + math.exp(1.0 / self._inv_ln))
        if self.integral and k != self.floor:
            v = self._snap(k, v)
        return min(max(v, self.lo), self.hi)

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
        p50, p90, p95, p99 = self.quantiles(SUMMARY_QS)
        return MetricStats(self.count, self.mean, p50, p90, p95, p99, self.hi)

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
        s._sorted = keys
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
class RollingWindow:
    """The last ``size`` values: ring of raw values + sketch of the same values."""

    __slots__ = ("ring", "pos", "n", "sketch", "lo", "hi", "_stale", "nonint")

    def __init__(self, size: int = 1024, rel_acc: float = 0.01, max_buckets: int = 2048) -> None:
        if size < 1:
            raise ValueError("window size must be >= 1")
        self.ring = array("d", bytes(8 * size))  # unused slots stay 0.0
        self.pos = 0  # next slot to write
        self.n = 0  # values in the window (<= size)
        self.sketch = Sketch(rel_acc, max_buckets)  # count/zeros/buckets; sum etc. on read
        self.lo = self.hi = 0.0
        self._stale = False  # an evicted value was the min or max
        self.nonint = 0  # non-integer values in the window (the sketch's integral flag)

    @property
    def size(self) -> int:
        return len(self.ring)

    def add(self, x: float, key: int | None = None) -> None:
        """Add ``x`` (``key``: its sketch bucket, when the caller has it already)."""
        if not 0.0 <= x < math.inf:
            raise ValueError(f"window values must be finite and >= 0, got {x!r}")
        ring, pos, s = self.ring, self.pos, self.sketch
        if self.n == len(ring):
            self._evict(ring[pos])
        else:
            self.n += 1
        ring[pos] = x
        self.pos = (pos + 1) % len(ring)
        s.count += 1
        if x < MIN_VALUE:
            s.zeros += 1
        else:
            s.add_key(s.key(x) if key is None else key)
        if not float(x).is_integer():
            self.nonint += 1
        if self.n == 1:
            self.lo = self.hi = float(x)
        elif x > self.hi:
            self.hi = float(x)
        elif x < self.lo:
            self.lo = float(x)

    def _evict(self, old: float) -> None:
        s = self.sketch
        s.count -= 1
        if old < MIN_VALUE:
            s.zeros -= 1
        else:
            s.remove_key(s.key(old))
        if not old.is_integer():
            self.nonint -= 1
        if old >= self.hi or old <= self.lo:
            self._stale = True

    def last(self, m: int) -> list[float]:
        """The last ``m`` values (fewer if fewer are kept), oldest first."""
        m = min(m, self.n)
        if m <= 0:
            return []
        start = self.pos - m
        if start >= 0:
            return self.ring[start:self.pos].tolist()
        return self.ring[start:].tolist() + self.ring[:self.pos].tolist()

    def _sync(self) -> Sketch:
        """The sketch, with sum/min/max/integral set for the values now in the window."""
        s = self.sketch
        if self._stale:
            kept = self.last(self.n)
            self.lo, self.hi, self._stale = min(kept), max(kept), False
        # exact and independent of history: the same window always reads the same
        s.total = math.fsum(self.ring)
        s.lo, s.hi, s.integral = self.lo, self.hi, self.nonint == 0
        return s

    def stats(self) -> MetricStats | None:
        """n, mean, p50, p90, p95, p99, max of the window (None while empty)."""
        return self._sync().stats() if self.n else None

    def to_sketch(self) -> Sketch:
        """A standalone copy of the window's sketch (e.g. to merge across segments)."""
        return self._sync().copy()

    def to_dict(self) -> dict:
        """Plain data that depends only on the values in the window (not on reads)."""
        if self._stale:
            self._sync()
        ring, pos = self.ring, self.pos
        kept = ring[pos:] + ring[:pos] if self.n == len(ring) else ring[:self.n]
        if sys.byteorder == "big":  # stored little-endian whatever the host
            kept.byteswap()
        sk = self.sketch.to_dict()
        sk.update(s=0.0, lo=0.0, hi=0.0, i=0)  # derived from the ring on read
        return {"size": len(self.ring), "v": base64.b64encode(kept.tobytes()).decode("ascii"),
                "lo": self.lo, "hi": self.hi, "nonint": self.nonint, "sketch": sk}

    @classmethod
    def from_dict(cls, d: dict) -> RollingWindow:
        sk = Sketch.from_dict(d["sketch"])
        w = cls(d["size"], sk.rel_acc, sk.max_buckets)
        kept = array("d", base64.b64decode(d["v"]))
        if sys.byteorder == "big":
            kept.byteswap()
        w.n = len(kept)
        w.ring[:w.n] = kept
        w.pos = w.n % len(w.ring)
        w.sketch, w.lo, w.hi, w.nonint = sk, d["lo"], d["hi"], d["nonint"]
        return w
