"""Which sketch bucket holds a quantile, for ``RollingWindow.read``: walked from scratch, or
from a cursor left where the last read of that quantile found it.

A window's sketch is always consistent (zeros + bucket counts = count), so the bucket at a
quantile is the first whose cumulative count reaches the rank ``max(1, ceil(q * n - 1e-9))``,
as ``Sketch.quantile_keys`` finds it. ``key_at`` walks the buckets once (high quantiles down
from the top bucket); ``cursor_key_at`` keeps, per quantile, ``[bucket key, values in the
buckets below it]`` and walks only from there, a bucket or two a read. The window keeps
those cursors true as values come and go (``RollingWindow.add_keyed`` and ``_evict``).

>>> from app.core.sketch import Sketch
>>> s = Sketch.of([1.0, 2.0, 2.0, 3.0, 40.0])
>>> cursors = {}
>>> [s.value_of(cursor_key_at(s, cursors, STAT_Q[k])) for k in ("p50", "p99")]
[2.0, 40.0]
>>> [key_at(s, q) for q in (0.5, 0.99)] == s.quantile_keys((0.5, 0.99)) == [c[0] for c in cursors.values()]
True
"""

from __future__ import annotations

import math
from bisect import bisect_left
from itertools import accumulate

from app.core.sketch import ZERO_KEY, Sketch

STAT_Q = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}  # as sketch.SUMMARY_QS


def cursor_key_at(s: Sketch, cursors: dict[float, list[int]], q: float) -> int:
    """``key_at(s, q)``, walked from ``cursors[q]``, where the last read of ``q`` found it
    (``[bucket key, values in the buckets below it]``, kept true by the caller)."""
    rank = math.ceil(q * s.count - 1e-9) or 1  # max(1, ...): it is never below 0
    if s.zeros >= rank:
        return ZERO_KEY
    if s.floor is not None:  # collapsed buckets: counts moved under the cursors
        cursors.clear()
        return key_at(s, q)
    cursor = cursors.get(q)
    if cursor is None:
        k = key_at(s, q)
        keys, bins = s.sorted_keys(), s.bins
        cursors[q] = [k, sum(map(bins.__getitem__, keys[:bisect_left(keys, k)]))]
        return k
    keys, bins = s.sorted_keys(), s.bins
    k, below = cursor
    i = bisect_left(keys, k)  # k's bucket, or (emptied since) the next one up
    rank -= s.zeros
    while below >= rank:
        i -= 1
        below -= bins[keys[i]]
    while below + bins[keys[i]] < rank:
        below += bins[keys[i]]
        i += 1
    cursor[0], cursor[1] = keys[i], below
    return keys[i]


def key_at(s: Sketch, q: float) -> int:
    """``s._keys_at((q,))[0]`` (the bucket holding rank ``max(1, ceil(q * n - 1e-9))``, the
    first whose cumulative count reaches it), for a consistent sketch (zeros + bucket counts =
    count, as a window's always is): high quantiles walk down from the top bucket."""
    count = s.count
    rank = max(1, math.ceil(q * count - 1e-9))
    if s.zeros >= rank:
        return ZERO_KEY
    keys, bins = s.sorted_keys(), s.bins
    if q < 0.75:
        cum = list(accumulate(map(bins.__getitem__, keys), initial=s.zeros))
        j = bisect_left(cum, rank)
        if j == len(cum):
            raise IndexError("inconsistent sketch: fewer values in buckets than counted")
        return keys[j - 1]
    # the lowest bucket i with zeros + counts up to i >= rank, i.e. at most count - rank
    # values in the buckets above it
    room = count - rank
    above = 0
    i = len(keys) - 1
    while i > 0:
        above += bins[keys[i]]
        if above > room:
            break
        i -= 1
    return keys[i]
