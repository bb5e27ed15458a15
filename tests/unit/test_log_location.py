"""The log-location test of the gate (``app.core.log_location``): a ramp that moves every
session a little is confirmed sooner than the quantile shares confirm it; the test is used
only on continuous baselines; and it is derived state, equal after a restart."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from app.core.gate import GateConfig, judge
from app.core.log_location import MAX_MODE_SHARE, LogLocation
from app.core.metricwatch import MetricState, Origin, observe
from app.core.monitor_config import MonitorConfig
from app.core.reference import Reference
from app.core.sketch import Sketch

BASE = 2000


def ramp(seed: int, n_after: int = 800) -> list[float]:
    """Context tokens: lognormal around 6K, then a linear ramp of the median to +60%."""
    rng = np.random.default_rng(seed)
    before = rng.lognormal(np.log(6000), 0.45, BASE)
    scale = 6000 * (1 + 0.6 * np.arange(1, n_after + 1) / n_after)
    after = rng.lognormal(np.log(scale), 0.45)
    return [float(x) for x in np.concatenate([before, after])]


def first_drift(values: list[float], cfg: MonitorConfig) -> tuple[int, str] | None:
    st = MetricState.initial(cfg)
    for i, x in enumerate(values):
        out = observe(st, x, "context_tokens", Origin("dev", f"s{i}", i, i), cfg)
        if out is not None and out.kind == "drift":
            return i - BASE, out.verdict.aspect
    return None


def test_a_ramp_is_confirmed_sooner_with_the_log_location_test():
    """Over 8 seeds: never later than the quantile shares alone, and sooner in most (where
    the shares win, they win at the same session: the log test only adds a way to pass)."""
    off = MonitorConfig(gate=GateConfig(log_location_nats=float("inf")))
    pairs = [(first_drift(ramp(seed), MonitorConfig()), first_drift(ramp(seed), off))
             for seed in range(1, 9)]
    assert all(a is not None and b is not None and a[0] <= b[0] for a, b in pairs), pairs
    sooner = [b[0] - a[0] for a, b in pairs if a[0] < b[0]]
    assert len(sooner) >= 5 and all(a[1] == "log_mean_up" for a, b in pairs if a[0] < b[0])


def test_golden_ramp():
    """Fixed seed: where and by which aspect the ramp is confirmed (moves only by design)."""
    assert first_drift(ramp(2), MonitorConfig()) == (360, "log_mean_up")


def test_only_continuous_baselines_get_the_test():
    rng = np.random.default_rng(0)
    assert LogLocation.of(Sketch.of(rng.poisson(3, BASE).astype(float).tolist())) is None
    mostly_zero = [0.0] * 1900 + rng.uniform(1, 5, 100).tolist()
    assert LogLocation.of(Sketch.of(mostly_zero)) is None
    assert LogLocation.of(Sketch.of([5.0] * BASE)) is None
    tokens = LogLocation.of(Sketch.of(rng.lognormal(8.7, 0.45, BASE).tolist()))
    assert tokens is not None and tokens.sd == pytest.approx(0.45, rel=0.1)
    assert MAX_MODE_SHARE <= 0.05


def test_unmoved_windows_stay_far_below_the_threshold():
    """200 windows of 512 values from the baseline's own distribution: the strongest
    window's evidence stays far below ``log_location_nats``."""
    rng = np.random.default_rng(11)
    loc = LogLocation.of(Sketch.of(rng.lognormal(8.7, 0.45, BASE).tolist()))
    worst = max(loc.scan(rng.lognormal(8.7, 0.45, 512).tolist(), 20)[0] for _ in range(200))
    assert worst < GateConfig().log_location_nats / 2


def test_judge_names_the_log_location_and_keeps_the_practical_test():
    rng = np.random.default_rng(3)
    base = Sketch.of(rng.lognormal(8.7, 0.45, BASE).tolist())
    ref, loc = Reference.from_sketch(base), LogLocation.of(base)
    up = np.random.default_rng(100).lognormal(8.7 + 0.25, 0.45, 300).tolist()  # +28%
    assert not judge(up, ref).passed  # the shares are not sure yet
    assert judge(up, ref, GateConfig(), loc).aspect == "log_mean_up"
    narrow = Sketch.of(rng.lognormal(8.7, 0.25, BASE).tolist())  # a tighter baseline
    ref, loc = Reference.from_sketch(narrow), LogLocation.of(narrow)
    small = rng.lognormal(8.7 + 0.11, 0.25, 512).tolist()  # +12%: significant, immaterial
    assert loc.scan(small, 20)[0] >= GateConfig().log_location_nats
    assert not judge(small, ref, GateConfig(), loc).passed


def test_the_log_location_is_derived_and_equal_after_a_restart():
    cfg = MonitorConfig()
    st = MetricState.initial(cfg)
    for i, x in enumerate(ramp(2)[:BASE + 50]):
        observe(st, x, "context_tokens", Origin("dev", f"s{i}", i, i), cfg)
    assert st.log_loc is not None
    stored = orjson.dumps(st.to_dict())
    assert b"log" not in stored.replace(b"log_", b"")  # not stored: derived from the baseline
    again = MetricState.from_dict(orjson.loads(stored))
    assert again.log_loc == st.log_loc
