"""The current window of one metric: the last ``size`` values, raw and as a sketch.

A ring of the raw values (float64) plus a sketch of exactly those values: a new value is
added to the sketch and the value it evicts from the ring is taken out of it again (bucket
counts are additive, so that is exact). Reading the window is a read of one sketch, cheap
enough for every session, and the window is exact: the last ``size`` sessions, not "give or
take a block". The raw ring also yields the post-change sample a detector points at ("the
last 40 sessions"), so an alert compares what happened *after* the change with the
baseline instead of a window diluted by pre-change sessions. Stored compactly: the ring is
one base64 string (8 bytes a value), the sketch's buckets are small integer lists.

Reads are kept cheap without changing a bit of what they return: a quantile read does not
touch the sum (only mean/stats compute it, as ``math.fsum`` over the ring: correctly rounded,
so independent of history), and min/max are re-scanned only when the last copy of the
minimum or maximum left the window (copies are counted), not whenever one copy did; a
quantile read walks the sketch from where the last read of that quantile ended
(``app.core.window_quantiles``).

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
from app.core.stats import STAT_NAMES, MetricStats
from app.core.window_quantiles import STAT_Q, cursor_key_at


class RollingWindow:
    """The last ``size`` values: ring of raw values + sketch of the same values."""

    __slots__ = ("ring", "cap", "pos", "n", "sketch", "lo", "hi", "_stale", "nonint",
                 "_n_lo", "_n_hi", "_gone", "_negz", "_keys", "_cursors")

    def __init__(self, size: int = 1024, rel_acc: float = 0.01, max_buckets: int = 2048) -> None:
        if size < 1:
            raise ValueError("window size must be >= 1")
        # grown as values come, up to ``cap``: a segment seen a few times costs a few values,
        # not the full ring (a fresh segment: ~188 KB live with preallocated rings, ~20 KB now)
        self.ring = array("d")
        self.cap = size
        self.pos = 0  # next slot to write
        self.n = 0  # values in the window (<= size)
        self.sketch = Sketch(rel_acc, max_buckets)  # count/zeros/buckets; sum etc. on read
        self.lo = self.hi = 0.0
        self._stale = False  # an evicted value was the min or max
        self.nonint = 0  # non-integer values in the window (the sketch's integral flag)
        # read-speed bookkeeping (derived, never stored): copies of lo / hi in the window; a
        # min or max really left; -0.0 values
        self._n_lo = self._n_hi = 0
        self._gone = False
        self._negz = 0
        # the sketch bucket of each ring slot (an evicted value's bucket is not recomputed)
        self._keys: list[int] = []
        # quantile -> [bucket key, values in the buckets below it]: where ``read`` found it
        # last, kept true as values come and go, so the next read walks a bucket or two
        self._cursors: dict[float, list[int]] = {}

    @property
    def size(self) -> int:
        return self.cap

    def add(self, x: float, key: int | None = None) -> None:
        """Add ``x`` (``key``: its sketch bucket, when the caller has it already)."""
        if not 0.0 <= x < math.inf:
            raise ValueError(f"window values must be finite and >= 0, got {x!r}")
        if key is None or x < MIN_VALUE:  # a zero's key is ZERO_KEY whatever was passed
            key = self.sketch.key(x)
        self.add_keyed(x, key)

    def add_keyed(self, x: float, k: int) -> None:
        """``add(x)`` for an ``x`` already checked (finite, >= 0) and ``k``, its bucket key
        (``ZERO_KEY`` for zeros): ``metricwatch.observe`` has both (once per value)."""
        ring, pos, s = self.ring, self.pos, self.sketch
        if self.n == self.cap:
            old = ring[pos]
            if old == x and not self._negz and (x or math.copysign(1.0, x) > 0.0):
                # x replaces an equal value (a third of all adds, counts repeat): the window
                # holds the same values, so only the ring position moves. Not with a -0.0 in
                # or coming (lo/hi re-scans read the first zero in ring order, of either sign)
                self.pos = (pos + 1) % self.cap
                return
            # in the bucket of the value it replaces (often so, for counts) x leaves the
            # sketch's counts as they are
            old_k = self._keys[pos]
            same = old_k == k
            self._evict(old, old_k, same)
            ring[pos] = x
            self._keys[pos] = k
        else:
            self._grow(x, k)
            same = False
        # float(x) as the ring holds it: x itself when a float (bit for bit), without a read
        stored = x if x.__class__ is float else ring[pos]
        self.pos = (pos + 1) % self.cap
        if x < MIN_VALUE:
            if not same:
                s.count += 1
                s.zeros += 1
            if stored == 0.0 and math.copysign(1.0, stored) < 0.0:
                self._negz += 1
        elif not same:
            s.count += 1
            bins = s.bins
            if s.floor is None and k in bins:  # Sketch.add_key's common case, inline
                bins[k] += 1
            else:
                s.add_key(k)
            if self._cursors:
                for cursor in self._cursors.values():
                    if k < cursor[0]:
                        cursor[1] += 1
        if not stored.is_integer():
            self.nonint += 1
        if self.n == 1:
            self.lo = self.hi = stored
            self._n_lo = self._n_hi = 1
            self._gone = False
        elif x > self.hi:
            self.hi = stored
            self._n_hi = 1
        elif x < self.lo:
            self.lo = stored
            self._n_lo = 1
        else:
            if x == self.hi:
                self._n_hi += 1
            if x == self.lo:
                self._n_lo += 1

    def _grow(self, x: float, k: int) -> None:
        """Append ``x`` (bucket ``k``) to a ring not full yet; once full, trim the spare room
        the appends left (the ring then only turns)."""
        self.ring.append(x)
        self._keys.append(k)
        self.n += 1
        if self.n == self.cap:
            self.ring, self._keys = array("d", self.ring), list(self._keys)

    def _evict(self, old: float, k: int, same: bool) -> None:
        """Take ``old`` (bucket ``k``) out; ``same``: the value replacing it goes to bucket
        ``k`` too, so the sketch's counts are left as they are."""
        s = self.sketch
        if old < MIN_VALUE:
            if not same:
                s.count -= 1
                s.zeros -= 1
            if old == 0.0 and math.copysign(1.0, old) < 0.0:
                self._negz -= 1
                self._gone = True  # lo/hi may hold this -0.0: re-scan (zero signs must match)
        elif not same:
            s.count -= 1
            bins = s.bins
            if s.floor is None and bins.get(k, 0) > 1:  # Sketch.remove_key's common case
                bins[k] -= 1
            else:
                s.remove_key(k)
            if self._cursors:
                for cursor in self._cursors.values():
                    if k < cursor[0]:
                        cursor[1] -= 1
        if not old.is_integer():
            self.nonint -= 1
        if old >= self.hi or old <= self.lo:
            self._stale = True
            if old == self.hi:
                self._n_hi -= 1
                if self._n_hi <= 0:
                    self._gone = True
            if old == self.lo:
                self._n_lo -= 1
                if self._n_lo <= 0:
                    self._gone = True

    def last(self, m: int) -> list[float]:
        """The last ``m`` values (fewer if fewer are kept), oldest first."""
        m = min(m, self.n)
        if m <= 0:
            return []
        start = self.pos - m
        if start >= 0:
            return self.ring[start:self.pos].tolist()
        return self.ring[start:].tolist() + self.ring[:self.pos].tolist()

    def _sync(self, total: bool = True) -> Sketch:
        """The sketch, with min/max/integral (and, if ``total``, the sum) set for the values
        now in the window."""
        s = self.sketch
        if self._stale:
            # a copy of the min or max left: re-scan only if it was the last copy (or zeros
            # of both signs are about, which compare equal but read differently)
            if self._gone or self._negz:
                self._rescan()
            self._stale = False
        if total:
            # correctly rounded, so independent of history: the same window reads the same
            # (a running sum would cost every add and evict; the sum is read far less often)
            s.total = math.fsum(self.ring)  # the values in the window, no more
        s.lo, s.hi, s.integral = self.lo, self.hi, self.nonint == 0
        return s

    def _rescan(self) -> None:
        kept = self.last(self.n)
        self.lo, self.hi = min(kept), max(kept)
        self._n_lo, self._n_hi = kept.count(self.lo), kept.count(self.hi)
        self._gone = False

    def stats(self) -> MetricStats | None:
        """n, mean, p50, p90, p95, p99, max of the window (None while empty)."""
        return self._sync().stats() if self.n else None

    def read(self, stat: str) -> float:
        """``self.stats().get(stat)``, bit for bit, without computing the other statistics
        (an assumption check reads one quantile of a window every session).

        >>> w = RollingWindow(size=8)
        >>> for x in [1.0, 2.0, 2.0, 3.0, 40.0]:
        ...     w.add(x)
        >>> [w.read(k) == w.stats().get(k) for k in ("mean", "p50", "p90", "p95", "p99", "max")]
        [True, True, True, True, True, True]
        """
        if not self.n:
            raise ValueError("quantile of an empty window")
        q = STAT_Q.get(stat)
        s = self._sync(q is None)  # total: only mean needs it
        if q is None:
            if stat == "max":
                return float(s.hi)
            if stat == "mean":
                return float(s.total / s.count)
            raise KeyError(f"unknown stat {stat!r}; expected one of {', '.join(STAT_NAMES)}")
        return float(s.value_of(cursor_key_at(s, self._cursors, q)))

    def to_sketch(self) -> Sketch:
        """A standalone copy of the window's sketch (e.g. to merge across segments)."""
        return self._sync().copy()

    def to_dict(self) -> dict:
        """Plain data that depends only on the values in the window (not on reads)."""
        if self._stale:
            self._sync(total=False)
        ring, pos = self.ring, self.pos
        kept = ring[pos:] + ring[:pos] if self.n == self.cap else ring[:self.n]
        if sys.byteorder == "big":  # stored little-endian whatever the host
            kept.byteswap()
        sk = self.sketch.to_dict()
        sk.update(s=0.0, lo=0.0, hi=0.0, i=0)  # derived from the ring on read
        return {"size": self.cap, "v": base64.b64encode(kept.tobytes()).decode("ascii"),
                "lo": self.lo, "hi": self.hi, "nonint": self.nonint, "sketch": sk}

    @classmethod
    def from_dict(cls, d: dict) -> RollingWindow:
        sk = Sketch.from_dict(d["sketch"])
        w = cls(d["size"], sk.rel_acc, sk.max_buckets)
        kept = array("d", base64.b64decode(d["v"]))
        if sys.byteorder == "big":
            kept.byteswap()
        w.n = len(kept)
        w.ring = kept
        w.pos = w.n % w.cap
        w.sketch, w.lo, w.hi, w.nonint = sk, d["lo"], d["hi"], d["nonint"]
        w._keys = list([sk.key(v) for v in kept])  # list(): no spare room from the appends
        w._negz = sum(1 for v in kept if v == 0.0 and math.copysign(1.0, v) < 0.0)
        w._n_lo, w._n_hi = kept.count(w.lo), kept.count(w.hi)
        w._gone = w.n > 0 and not (w._n_lo and w._n_hi)
        return w

