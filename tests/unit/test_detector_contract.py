"""Contract every drift detector honours (run over all registered kinds)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import orjson
import pytest

from app.core.drift import KINDS, AdwinDetector, Detector, QuantileCusum, detector_from_state
from app.core.reference import Reference
from app.core.sketch import Sketch

# kind -> factory(baseline values) -> a fresh detector; every registered kind must have one
FACTORIES: dict[str, Callable[[list[float]], Detector]] = {
    "adwin": lambda baseline: AdwinDetector(),
    "quantile_cusum": lambda baseline: QuantileCusum.from_reference(
        Reference.from_sketch(Sketch.of(baseline))),
}


def noise(seed: int, n: int, scale: float = 1.0) -> list[float]:
    return (np.random.default_rng(seed).lognormal(2.0, 0.5, n) * scale).tolist()


def signals(det: Detector, xs: list[float]) -> list[tuple[int, str, int]]:
    return [(i, s.detector, s.age) for i, x in enumerate(xs) if (s := det.update(x)) is not None]


def test_every_kind_is_covered():
    assert set(FACTORIES) == set(KINDS)


@pytest.fixture(params=sorted(FACTORIES))
def make(request):
    return FACTORIES[request.param]


def test_deterministic(make):
    base, xs = noise(1, 2000), noise(2, 3000) + noise(3, 1000, scale=4.0)
    assert signals(make(base), xs) == signals(make(base), xs)


@pytest.mark.parametrize("cut", [1, 500, 2999, 3005])
def test_restored_mid_stream_continues_identically(make, cut):
    base, xs = noise(1, 2000), noise(2, 3000) + noise(3, 1000, scale=4.0)
    whole = signals(make(base), xs)
    det = make(base)
    head = signals(det, xs[:cut])
    state = orjson.loads(orjson.dumps(det.to_state()))  # plain data on the wire
    restored = detector_from_state(state)
    assert type(restored) is type(det) and restored.name == det.name
    tail = [(i + cut, name, age) for i, name, age in signals(restored, xs[cut:])]
    assert head + tail == whole


@pytest.mark.parametrize("value", [0.0, 1.0, 7.5, 48000.0])
def test_no_signal_on_constant_input(make, value):
    assert signals(make([value] * 2000), [value] * 5000) == []


def test_no_signal_on_the_baseline_median(make):
    base = noise(4, 2000)
    median = float(np.quantile(base, 0.5, method="inverted_cdf"))
    assert signals(make(base), [median] * 5000) == []


@pytest.mark.parametrize("step", [0.1, 10.0])
def test_signal_on_a_big_step(make, step):
    base = noise(5, 2000)
    det = make(base)
    signals(det, noise(6, 1000))  # a stationary stretch first
    hits = signals(det, noise(7, 300, scale=step))
    assert hits and hits[0][0] < 50
