"""The sketch and window read paths were sped up (exact running sum, counted min/max copies,
memoised bucket representatives, bisected quantile ranks): what they return must not change by
a bit. Random histories, reads at random points, against a frozen copy of the old code."""

from __future__ import annotations

import struct

import legacy_sketch as old
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.sketch import SUMMARY_QS, Sketch
from app.core.windows import RollingWindow


def bits(v):
    """Floats by their bits (-0.0 is not 0.0), recursively."""
    if isinstance(v, float):
        return ("f", struct.pack("<d", v))
    if isinstance(v, dict):
        return {k: bits(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [bits(x) for x in v]
    return v


def stats_bits(s):
    return None if s is None else bits([s.n, s.mean, s.p50, s.p90, s.p95, s.p99, s.max])


def outcome(fn, *args):
    """What a read returns, or the type of what it raises (both sides must agree)."""
    try:
        return fn(*args)
    except (OverflowError, ValueError) as exc:
        return type(exc)


def stats_of(w):
    got = outcome(w.stats)
    return got if isinstance(got, type) else stats_bits(got)


values = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, 2.0, 3.0, 1e-10, 5e-324, 1e-9, 0.5, 1e300]),
    st.integers(0, 12).map(float),
    st.integers(0, 200_000),
    st.floats(0, 1, allow_nan=False),
    st.floats(0, 1e6, allow_nan=False),
    st.floats(0, 1e308, allow_nan=False),
)
ops = st.lists(st.one_of(values.map(lambda x: ("add", x)),
                         st.sampled_from([("stats",), ("dict",), ("last",), ("sketch",),
                                          ("reload",)])), min_size=1, max_size=400)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 40), ops, st.sampled_from([0.01, 0.05]), st.sampled_from([2048, 8]))
def test_window_reads_bit_identical(size, history, rel_acc, max_buckets):
    new, ref = RollingWindow(size, rel_acc, max_buckets), old.RollingWindow(size, rel_acc, max_buckets)
    for op in history:
        if op[0] == "add":
            new.add(op[1])
            ref.add(op[1])
        elif op[0] == "reload":  # a worker's checkpoint: the derived bookkeeping is rebuilt
            a, b = outcome(reload, new, RollingWindow), outcome(reload, ref, old.RollingWindow)
            assert (a is OverflowError) == (b is OverflowError)
            if a is not OverflowError:
                new, ref = a, b
        else:
            assert read(op[0], new, size) == read(op[0], ref, size), op
    assert read("stats", new, size) == read("stats", ref, size)
    assert read("dict", new, size) == read("dict", ref, size)
    assert new.sketch.sorted_keys() == sorted(new.sketch.bins)  # kept sorted incrementally


def reload(w, cls):
    return cls.from_dict(orjson.loads(orjson.dumps(w.to_dict())))


def read(what: str, w, size: int):
    if what == "stats":
        return stats_of(w)
    if what == "dict":
        got = outcome(w.to_dict)
        return got if isinstance(got, type) else orjson.dumps(got)
    if what == "last":
        return bits(w.last(size))
    if not w.n:
        return None
    sk = outcome(w.to_sketch)
    if isinstance(sk, type):
        return sk
    return orjson.dumps(sk.to_dict()), bits(outcome(sk.quantiles, (0.0, 0.1, 0.5, 1.0)))


@settings(max_examples=200, deadline=None)
@given(st.lists(values, min_size=1, max_size=300), st.lists(values, max_size=50),
       st.sampled_from([2048, 16]),
       st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=6))
def test_sketch_reads_bit_identical(xs, ys, max_buckets, qs):
    new, ref = Sketch(0.01, max_buckets), old.Sketch(0.01, max_buckets)
    for x in xs:
        new.add(x)
        ref.add(x)
    new.merge(Sketch.of(ys, max_buckets=max_buckets))
    ref.merge(old.Sketch.of(ys, max_buckets=max_buckets))
    assert stats_of(new) == stats_of(ref)
    assert bits(outcome(new.quantiles, qs)) == bits(outcome(ref.quantiles, qs))
    assert new.quantile_keys(qs) == ref.quantile_keys(qs)
    assert new.quantile_keys(SUMMARY_QS) == ref.quantile_keys(SUMMARY_QS)
    for k in [*new.sorted_keys(), -(2**31)]:
        assert bits(outcome(new.value_of, k)) == bits(outcome(ref.value_of, k))
    assert orjson.dumps(new.to_dict()) == orjson.dumps(ref.to_dict())
    assert new.sorted_keys() == sorted(new.bins)
