"""The current window of one metric: the last ``size`` values, raw and as a sketch.

A ring of the raw values (float64) plus a sketch of exactly those values: a new value is
added to the sketch and the value it evicts from the ring is taken out of it again (bucket
counts are additive, so that is exact). Reading the window is a read of one sketch, cheap
enough for every session, and the window is exact: the last ``size`` sessions, not "give or
take a block". The raw ring also yields the post-change sample a detector points at ("the
last 40 sessions"), so an alert compares what happened *after* the change with the
baseline instead of a window diluted by pre-change sessions. Stored compactly: the ring is
one base64 string (8 bytes a value), the sketch's buckets are small integer lists.

>>> w = RollingWindow(size=8)
>>> for x in range(20):
...     w.add(float(x))
>>> w.n, w.stats().max, w.stats().p50, w.last(3)
(8, 19.0, 15.0, [17.0, 18.0, 19.0])
>>> RollingWindow.from_dict(w.to_dict()).stats() == w.stats()
True
"""

from __future__ import annotations

import base64
import math
import sys
from array import array

from app.core.sketch import MIN_VALUE, Sketch
from app.core.stats import MetricStats


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
