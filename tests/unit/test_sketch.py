"""Quantile sketch and rolling window: accuracy vs numpy, merge = add-all, bounded memory."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.sketch import ZERO_KEY, Sketch
from app.core.windows import RollingWindow

QS = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)


def heavy(name: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return {
        "lognormal": lambda: rng.lognormal(9.0, 1.5, n),
        "pareto": lambda: (rng.pareto(1.2, n) + 1.0) * 50.0,
        "poisson": lambda: rng.poisson(3.0, n).astype(float),
        "mostly_zero": lambda: (rng.random(n) < 0.05) * rng.lognormal(0, 1, n),
        "wide": lambda: np.exp(rng.uniform(math.log(1e-6), math.log(1e9), n)),
    }[name]()


def assert_close(sketch: Sketch, xs: np.ndarray, rel: float = 0.01) -> None:
    exact = np.quantile(xs, QS, method="inverted_cdf")
    got = sketch.quantiles(QS)
    for q, e, g in zip(QS, exact, got, strict=True):
        assert abs(g - e) <= rel * abs(e) + 1e-12, (q, e, g)


@pytest.mark.parametrize("shape", ["lognormal", "pareto", "poisson", "mostly_zero", "wide"])
@pytest.mark.parametrize("seed", [1, 2])
def test_quantiles_within_one_percent_of_numpy(shape, seed):
    xs = heavy(shape, 20_000, seed)
    s = Sketch.of(xs.tolist())
    assert_close(s, xs)
    assert s.count == len(xs) and s.max == xs.max() and s.min == xs.min()
    assert s.mean == pytest.approx(xs.mean(), rel=1e-12)  # exact sum


def test_integer_values_read_back_exactly():
    xs = np.random.default_rng(3).poisson(3.0, 5000).astype(float)
    s = Sketch.of(xs.tolist())
    assert s.quantiles(QS) == np.quantile(xs, QS, method="inverted_cdf").tolist()
    assert s.stats().p50 == 3.0


def test_zero_and_constant():
    z = Sketch.of([0.0] * 10)
    assert z.quantiles((0.5, 0.99)) == [0.0, 0.0] and z.mean == 0.0
    c = Sketch.of([7.25] * 100)
    assert c.quantiles((0.0, 0.5, 1.0)) == [7.25, 7.25, 7.25]


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        Sketch().add(bad)
    with pytest.raises(ValueError):
        RollingWindow(4).add(bad)


def test_empty_sketch_and_bad_quantile():
    with pytest.raises(ValueError):
        Sketch().quantile(0.5)
    with pytest.raises(ValueError):
        Sketch.of([1.0]).quantile(1.5)


def test_memory_is_bounded_and_the_tail_keeps_its_accuracy():
    xs = heavy("wide", 50_000, 4)
    s = Sketch.of(xs.tolist(), max_buckets=256)
    assert len(s.bins) <= 256 and s.floor is not None
    exact = np.quantile(xs, [0.9, 0.99, 1.0], method="inverted_cdf")
    for e, g in zip(exact, s.quantiles((0.9, 0.99, 1.0)), strict=True):
        assert abs(g - e) <= 0.01 * e


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1e9, allow_nan=False), max_size=300),
       st.lists(st.floats(0, 1e9, allow_nan=False), max_size=300),
       st.integers(8, 64))
def test_merge_equals_add_all(a, b, max_buckets):
    left, right = Sketch.of(a, max_buckets=max_buckets), Sketch.of(b, max_buckets=max_buckets)
    left.merge(right)
    both = Sketch.of(a + b, max_buckets=max_buckets)
    assert (left.count, left.zeros, left.max, left.min) == (both.count, both.zeros, both.max, both.min)
    assert left.total == pytest.approx(both.total, rel=1e-9, abs=1e-9)
    # buckets above the collapsed floor (all of them, without a collapse) are identical
    floor = max(f for f in (left.floor, both.floor, -(2**40)) if f is not None)
    assert {k: c for k, c in left.bins.items() if k > floor} == {
        k: c for k, c in both.bins.items() if k > floor}
    if both.count and left.floor is None and both.floor is None:
        assert left.bins == both.bins and left.quantiles(QS) == both.quantiles(QS)


def test_merge_seeded_heavy_tails():
    xs = heavy("pareto", 30_000, 5)
    parts = [Sketch.of(xs[i::3].tolist()) for i in range(3)]
    merged = Sketch()
    for p in parts:
        merged.merge(p)
    assert merged.bins == Sketch.of(xs.tolist()).bins
    assert_close(merged, xs)


def test_merge_refuses_other_accuracy():
    with pytest.raises(ValueError):
        Sketch(0.01).merge(Sketch.of([1.0], rel_acc=0.02))


def test_plain_data_roundtrip_is_compact_and_exact():
    xs = heavy("lognormal", 10_000, 6)
    s = Sketch.of(xs.tolist())
    raw = orjson.dumps(s.to_dict())
    back = Sketch.from_dict(orjson.loads(raw))
    assert back.quantiles(QS) == s.quantiles(QS) and back.total == s.total
    assert len(raw) < 12 * len(s.bins) + 200  # delta-encoded keys + counts
    with pytest.raises(ValueError):
        Sketch.from_dict({**s.to_dict(), "n": s.count + 1})


@pytest.mark.parametrize("shape", ["lognormal", "poisson", "mostly_zero"])
def test_rolling_window_is_the_last_w_values(shape):
    xs = heavy(shape, 7_000, 7)
    w = RollingWindow(size=1000)
    for x in xs.tolist():
        w.add(x)
    tail = xs[-1000:]
    st_ = w.stats()
    assert st_.n == 1000 and st_.max == tail.max()
    assert st_.mean == pytest.approx(tail.mean(), rel=1e-12)
    exact = np.quantile(tail, [0.5, 0.9, 0.95, 0.99], method="inverted_cdf")
    for e, g in zip(exact, (st_.p50, st_.p90, st_.p95, st_.p99), strict=True):
        assert abs(g - e) <= 0.01 * e + 1e-12
    assert w.last(3) == tail[-3:].tolist()
    back = RollingWindow.from_dict(orjson.loads(orjson.dumps(w.to_dict())))
    assert back.stats() == st_ and back.to_dict() == w.to_dict()


def _value_of_reference(s: Sketch, k: int) -> float:
    """``Sketch.value_of`` as first written (clamped with the min / max builtins)."""
    if k == ZERO_KEY:
        return min(max(0.0, s.lo), s.hi)
    v = 2.0 * math.exp(k / s._inv_ln) / (1.0 + math.exp(1.0 / s._inv_ln))
    if s.integral and k != s.floor:
        v = s._snap(k, v)
    return min(max(v, s.lo), s.hi)


@pytest.mark.parametrize("seed", range(4))
def test_value_of_is_the_reference_clamp(seed):
    # the clamp written as comparisons returns what min(max(v, lo), hi) returned: the same
    # value and type (int bounds from stored state, -0.0 against 0.0, bounds inside a bucket)
    rng = np.random.default_rng(seed)
    for _ in range(300):
        xs = [float(v) for v in rng.choice([0.0, -0.0, 1.0, 3.0, 7.5, 100.0, 2e6], 5)]
        s = Sketch.of(xs)
        if rng.random() < 0.3:  # bounds as a loaded state may hold them
            s.lo, s.hi = int(s.lo), int(s.hi)
        for k in [ZERO_KEY, *s.bins, *(s.key(x) for x in (0.5, 2.0, 9e6))]:
            got, want = s.value_of(k), _value_of_reference(s, k)
            assert (type(got), repr(got)) == (type(want), repr(want))


class _F(float):
    """A float the window does not take as one: it reads the value back from its ring."""


@pytest.mark.parametrize("seed", range(4))
def test_window_add_of_a_float_is_the_ring_read_back(seed):
    # add_keyed keeps a float x itself rather than reading it back: the same state, bit for bit
    rng = np.random.default_rng(seed)
    pool = [0.0, -0.0, 1.0, 2.0, 2.5, 3.0, 1e-12, 7.25, 40.0, 1e9]
    xs = [pool[i] for i in rng.integers(0, len(pool), 3000)]
    a, b = RollingWindow(64), RollingWindow(64)
    for i, x in enumerate(xs):
        a.add(x)
        b.add(_F(x))
        if i % 13 == 0:
            assert a.stats() == b.stats() and a.read("p99") == b.read("p99")
        assert [math.copysign(1.0, v) for v in (a.lo, a.hi)] == \
            [math.copysign(1.0, v) for v in (b.lo, b.hi)]
        assert (a.lo, a.hi, a.nonint) == (b.lo, b.hi, b.nonint)
    assert orjson.dumps(a.to_dict()) == orjson.dumps(b.to_dict())


def test_window_bytes_do_not_depend_on_reads():
    a, b = RollingWindow(50), RollingWindow(50)
    for i, x in enumerate(heavy("lognormal", 500, 8).tolist()):
        a.add(x)
        b.add(x)
        if i % 7 == 0:
            a.stats()  # reading must not change what is stored
    assert orjson.dumps(a.to_dict()) == orjson.dumps(b.to_dict())
