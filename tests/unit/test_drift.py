"""Drift detection end to end (river style): golden alert indices on seeded shifts, no alert
on the unchanged metrics, none at all on a long stationary run, the tail test ahead of
ADWIN on a tail-only shift, and ADWIN exactly as a plain ``ADWIN(clock=1)``."""

from __future__ import annotations

import math

import numpy as np
import pytest
from river.drift import ADWIN

from app.core.binomial import g_stat
from app.core.drift import AdwinDetector, QuantileCusum
from app.core.gate import GateConfig, judge
from app.core.metricwatch import MetricState, Origin, observe
from app.core.monitor_config import MonitorConfig
from app.core.reference import Reference, conservative_rate
from app.core.segment import SegmentMonitor
from app.core.sketch import Sketch
from schemas.common import Segment
from schemas.session import METRICS, SessionShape

T0 = 1_700_000_000 * 10**9
SEG = Segment(agent="support")
CHANGE = 3000  # index of the first post-change session (baseline: sessions 0..1999)
INT_METRICS = {"context_tokens", "fanout", "max_parallel_fanout", "reflections", "llm_calls",
               "depth", "distinct_tools", "truncations"}


# -- a tiny local workload generator: one column per metric, every shape we use ------------
def columns(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        "context_utilization": np.minimum(1.0, rng.lognormal(math.log(0.1), 0.3, n)),  # ratio
        "context_tokens": np.round(rng.lognormal(math.log(8000), 0.6, n)),  # lognormal tokens
        "fanout": rng.poisson(3.0, n),  # Poisson count ~3
        "max_parallel_fanout": rng.poisson(1.5, n),
        "retry_rate": (rng.random(n) < 0.1) * rng.integers(1, 4, n) / 8,  # mostly zero ratio
        "reflections": (rng.random(n) < 0.05).astype(int),  # mostly-zero count
        "llm_calls": 1 + rng.poisson(4.0, n),
        "depth": np.full(n, 3),  # constant
        "distinct_tools": rng.poisson(2.0, n),
        "complexity": rng.beta(2, 5, n),  # ratio in [0, 1]
        "truncations": (rng.random(n) < 0.02).astype(int),  # mostly-zero count
        "cache_age_s": np.where(rng.random(n) < 0.5, np.nan, rng.exponential(300.0, n)),  # or none
    }


SHIFTS = {  # scenario -> (metric, post-change column)
    "fanout_3_to_11": ("fanout", lambda rng, n: rng.poisson(11.0, n)),
    "context_8k_to_48k": ("context_tokens",
                          lambda rng, n: np.round(rng.lognormal(math.log(48000), 0.6, n))),
    # P99 x3, same median: sigma 0.3 -> 0.3 + ln(3)/z99 of a lognormal ratio
    "tail_only_utilization": ("context_utilization", lambda rng, n: np.minimum(
        1.0, rng.lognormal(math.log(0.1), 0.3 + math.log(3) / 2.326, n))),
    "retry_storm": ("retry_rate", lambda rng, n: (rng.random(n) < 0.4) * rng.integers(1, 4, n) / 8),
}


def scenario(name: str | None, seed: int, n: int = CHANGE + 400) -> list[SessionShape]:
    rng = np.random.default_rng(seed)
    cols = columns(rng, n)
    if name is not None:
        metric, post = SHIFTS[name]
        cols[metric][CHANGE:] = post(np.random.default_rng(seed + 1000), n - CHANGE)
    return to_shapes(cols)


def to_shapes(cols: dict[str, np.ndarray]) -> list[SessionShape]:
    rows = {m: cols[m].tolist() for m in METRICS}
    proto = SessionShape(session_id="s", segment=SEG, start_time_unix_nano=T0,
                         end_time_unix_nano=T0, closed_by="session_end", spans=10)
    out = []
    for i in range(len(rows["fanout"])):
        kw = {m: int(rows[m][i]) if m in INT_METRICS else rows[m][i] for m in METRICS}
        kw["cache_age_s"] = None if math.isnan(kw["cache_age_s"]) else kw["cache_age_s"]
        out.append(proto.model_copy(update={  # unvalidated, like model_construct, but fast
            "session_id": f"s{i}", "start_time_unix_nano": T0 + i * 10**9,
            "end_time_unix_nano": T0 + i * 10**9 + 5 * 10**8, **kw}))
    return out


def run(shapes, monitor=None):
    monitor = monitor or SegmentMonitor()
    state = monitor.initial(SEG)
    alerts = []
    for shape in shapes:
        state, out = monitor.fold(state, shape)
        alerts += out
    return state, alerts


def index_of(alert) -> int:
    return (alert.detected_at - T0) // 10**9


# -- golden indices ------------------------------------------------------------------------
GOLDEN = {  # scenario -> (alert index, detector, gate aspect, severity); change at 3000
    "fanout_3_to_11": (3006, "adwin", "tail p99", "page"),
    "context_8k_to_48k": (3011, "adwin", "tail p99", "page"),
    "tail_only_utilization": (3019, "tail_max", "tail max", "page"),
    "retry_storm": (3031, "median_up", "median up", "warning"),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_alert_index(name):
    metric, _ = SHIFTS[name]
    _, alerts = run(scenario(name, seed=11))
    assert [(a.kind, a.metric) for a in alerts] == [("drift", metric)]  # nothing else moved
    a = alerts[0]
    assert (index_of(a), a.detector, a.message.split("; ")[-1].rstrip("]"), a.severity) == GOLDEN[name]
    assert 0 <= index_of(a) - CHANGE <= 150
    assert a.current.n >= GateConfig().min_short_n and a.baseline.n == 2000


def test_tail_only_shift_is_caught_by_the_tail_test_before_plain_adwin():
    shapes = scenario("tail_only_utilization", seed=11)
    xs = np.array([s.context_utilization for s in shapes])
    pre, post = xs[:CHANGE], xs[CHANGE:]
    assert np.quantile(post, 0.99) / np.quantile(pre, 0.99) == pytest.approx(3.0, rel=0.25)
    assert np.quantile(post, 0.5) / np.quantile(pre, 0.5) == pytest.approx(1.0, abs=0.05)
    _, alerts = run(shapes)
    plain = ADWIN(clock=1)
    first_adwin = None
    for i, x in enumerate(xs.tolist()):
        plain.update(x)
        if plain.drift_detected and i >= CHANGE and first_adwin is None:
            first_adwin = i
    assert alerts[0].detector.startswith("tail_")
    assert first_adwin is None or index_of(alerts[0]) + 100 < first_adwin


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tail_detector_fires_before_plain_adwin_across_seeds(seed):
    rng = np.random.default_rng(seed)
    base = np.minimum(1.0, rng.lognormal(math.log(0.1), 0.3, 3000))
    post = np.minimum(1.0, rng.lognormal(math.log(0.1), 0.3 + math.log(3) / 2.326, 1000))
    ref = Reference.from_sketch(Sketch.of(base[:2000].tolist()))
    tail, plain = QuantileCusum.from_reference(ref), ADWIN(clock=1)
    first = {}
    for i, x in enumerate(np.concatenate([base[2000:], post]).tolist()):
        sig = tail.update(x)
        plain.update(x)
        if i >= 1000 and sig and sig.detector.startswith("tail_"):
            first.setdefault("tail", i)
        if i >= 1000 and plain.drift_detected:
            first.setdefault("adwin", i)
    assert first["tail"] - 1000 <= 100
    assert first["tail"] + 100 < first.get("adwin", 10**9)


# -- no alerts without a change -------------------------------------------------------------
def test_no_alert_over_50k_stationary_sessions_of_every_shape():
    state, alerts = run(scenario(None, seed=5, n=50_000))
    assert alerts == []
    mon = SegmentMonitor()
    assert set(mon.stats(state)) == set(METRICS)
    assert {ms.episode.phase for ms in state.metrics.values()} == {"watch"}


@pytest.mark.parametrize("seed", [21, 22])
def test_no_alert_on_heavy_tailed_and_pareto_values(seed):
    rng = np.random.default_rng(seed)
    cfg = MonitorConfig()
    for xs in (rng.lognormal(0.0, 1.5, 40_000), (rng.pareto(1.3, 40_000) + 1.0) * 100.0):
        st = MetricState.initial(cfg)
        outs = [observe(st, x, "m", Origin("seg", f"s{i}", i, i), cfg)
                for i, x in enumerate(xs.tolist())]
        assert not any(outs)


# -- ADWIN is plain ADWIN(clock=1) -----------------------------------------------------------
def test_adwin_detector_is_a_plain_clock_1_adwin():
    rng = np.random.default_rng(8)
    xs = np.concatenate([rng.lognormal(9, 0.6, 2500), rng.lognormal(9.6, 0.6, 500)]).tolist()
    ours, plain = AdwinDetector(), ADWIN(clock=1)
    hits_ours, hits_plain = [], []
    for i, x in enumerate(xs):
        if ours.update(x):
            hits_ours.append(i)
        plain.update(x)
        if plain.drift_detected:
            hits_plain.append(i)
    assert hits_ours == hits_plain and hits_plain


def test_the_monitor_feeds_adwin_every_value_from_the_first():
    shapes = scenario("fanout_3_to_11", seed=11)
    state, _ = run(shapes[:2500])
    plain = ADWIN(clock=1)
    for s in shapes[:2500]:
        plain.update(float(s.fanout))
    adwin = state.metrics["fanout"].free[0]
    assert (adwin.estimation, adwin._adwin.width) == (plain.estimation, plain.width)


def test_clock_1_is_not_later_than_the_default_clock():
    xs = [3.0] * 500 + [11.0] * 100
    def first(clock):
        a = ADWIN(clock=clock)
        return next(i for i, x in enumerate(xs) if (a.update(x), a.drift_detected)[1])
    assert first(1) <= first(32)


# -- gate pieces -----------------------------------------------------------------------------
def test_g_stat_is_zero_without_a_difference_and_grows_with_one():
    assert g_stat(50, 100, 1000, 2000) == pytest.approx(0.0, abs=1e-12)
    assert 0 < g_stat(60, 100, 1000, 2000) < g_stat(80, 100, 1000, 2000)


def test_conservative_rate_never_below_the_observed_rate():
    for k in (0, 1, 10, 100, 1000):
        assert conservative_rate(k, 2000) >= k / 2000


def test_gate_wants_both_significance_and_a_material_change():
    rng = np.random.default_rng(9)
    ref = Reference.from_sketch(Sketch.of(rng.normal(1000, 10, 2000).clip(0).tolist()))
    tiny_but_sure = rng.normal(1010, 10, 256).tolist()  # +1%: significant, immaterial
    assert not judge(tiny_but_sure, ref).passed
    big = rng.normal(1500, 10, 256).tolist()
    v = judge(big, ref)
    assert v.passed and v.change == pytest.approx(0.5, abs=0.05)
    # 3 sessions: too few to judge; 10 sessions all above the baseline's
    # median bucket: extreme enough for the exact test (G would wait for 20)
    assert not judge(big[:3], ref).passed
    v = judge(big[:10], ref)
    assert v.passed and (v.aspect, v.window) == ("median_up", 10)
    assert judge(big[:10], ref, GateConfig(min_short_n=20)).wait == 10
