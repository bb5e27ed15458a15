"""Segment monitor: API, alert contract, determinism across (de)serialisation, memory."""

from __future__ import annotations

import hashlib

import numpy as np
import orjson
import pytest

from app.core.gate import GateConfig
from app.core.metricwatch import MetricState, Origin, observe
from app.core.segment import MonitorConfig, SegmentMonitor, SegmentState
from app.core.stats import MetricStats
from schemas.alert import Alert
from schemas.common import Segment
from schemas.session import SessionShape

T0 = 1_700_000_000 * 10**9
SEG = Segment(agent="support", task_type="escalation")


def sessions(n: int, change: int | None = 2600, seed: int = 4) -> list[SessionShape]:
    """Support sessions: fan-out Poisson(3) -> Poisson(11) and context 8K -> 48K at ``change``."""
    rng = np.random.default_rng(seed)
    proto = SessionShape(session_id="s", segment=SEG, start_time_unix_nano=T0,
                         end_time_unix_nano=T0, closed_by="session_end", spans=12)
    fan = rng.poisson(3.0, n)
    ctx = np.round(rng.lognormal(np.log(8000), 0.6, n))
    llm = 1 + rng.poisson(4.0, n)
    if change is not None:
        fan[change:] = rng.poisson(11.0, n - change)
        ctx[change:] = np.round(rng.lognormal(np.log(48000), 0.6, n - change))
    return [proto.model_copy(update={
        "session_id": f"s{i}", "end_time_unix_nano": T0 + i * 10**9 + 7, "fanout": int(f),
        "context_tokens": int(c), "llm_calls": int(k), "context_utilization": c / 65536})
        for i, (f, c, k) in enumerate(zip(fan.tolist(), ctx.tolist(), llm.tolist(), strict=True))]


def fold_all(shapes, monitor=None, state=None, snapshot_every: int | None = None):
    monitor = monitor or SegmentMonitor()
    state = state or monitor.initial(SEG)
    alerts = []
    for i, shape in enumerate(shapes):
        if snapshot_every and i % snapshot_every == 0:  # as the stage-2 shell stores it
            state = SegmentState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
        state, out = monitor.fold(state, shape)
        alerts += out
    return state, alerts


@pytest.fixture(scope="module")
def shifted():
    shapes = sessions(3000)
    state, alerts = fold_all(shapes)
    return shapes, state, alerts


def test_fold_raises_drift_alerts_that_honour_the_contract(shifted):
    shapes, state, alerts = shifted
    assert state.sessions == 3000
    assert sorted(a.metric for a in alerts) == ["context_tokens", "context_utilization", "fanout"]
    for a in alerts:
        again = Alert.model_validate_json(a.model_dump_json())  # valid on the wire
        assert again == a and a.kind == "drift" and a.severity == "page"
        trigger = next(s for s in shapes if s.end_time_unix_nano == a.detected_at)
        raw = f"drift|support/escalation|{a.metric}|{a.detected_at}|{trigger.session_id}"
        assert a.alert_id == hashlib.sha256(raw.encode()).hexdigest()[:20]
        assert 2600 <= int(trigger.session_id[1:]) <= 2600 + 150
        assert a.baseline.n == 2000 and a.current.n >= 4  # gate.min_short_n
    fan = next(a for a in alerts if a.metric == "fanout")
    assert fan.baseline.p50 == 3 and fan.current.p50 >= 9 and fan.current.mean > 3 * fan.baseline.mean
    assert fan.message.startswith("support/escalation fanout drifted: p50 3 -> ")
    assert f"over {fan.current.n} sessions" in fan.message


def test_metrics_without_values_are_skipped(shifted):
    _, state, _ = shifted
    assert "cache_age_s" not in state.metrics  # None in every session
    assert set(SegmentMonitor().stats(state)) == set(state.metrics)


def test_replay_and_restored_state_give_identical_alerts(shifted):
    shapes, state, alerts = shifted
    state2, alerts2 = fold_all(shapes, snapshot_every=97)
    assert alerts2 == alerts
    assert state2.to_bytes() == state.to_bytes()
    assert SegmentState.from_bytes(state.to_bytes()).to_bytes() == state.to_bytes()


def test_reading_stats_does_not_change_results_or_state():
    shapes = sessions(2800)
    mon = SegmentMonitor()
    quiet, _ = fold_all(shapes, mon)
    state, alerts = mon.initial(SEG), []
    for shape in shapes:
        state, out = mon.fold(state, shape)
        alerts += out
        mon.stats(state)
    assert quiet.to_bytes() == state.to_bytes() and len(alerts) == 3


def test_stats_current_and_baseline():
    mon = SegmentMonitor(MonitorConfig(window_n=500, baseline_n=1000, rebaseline_n=500,
                                       gate=GateConfig(max_post_n=256)))
    state, _ = fold_all(sessions(1500, change=None), mon)
    cur, base = mon.stats(state), mon.stats(state, "baseline")
    assert isinstance(cur["fanout"], MetricStats) and cur["fanout"].n == 500
    assert base["fanout"].n == 1000 and base["fanout"].p50 == 3
    assert cur["context_tokens"].p50 == pytest.approx(8000, rel=0.1)
    warm, _ = fold_all(sessions(10, change=None), mon)
    assert mon.stats(warm, "baseline") == {} and mon.stats(warm)["fanout"].n == 10
    assert mon.metric_stats(state, "fanout") == cur["fanout"]
    assert mon.metric_stats(state, "cache_age_s") is None
    with pytest.raises(ValueError):
        mon.stats(state, "p99")


def test_recent_stats_describe_the_sessions_since_the_change():
    """A recalibration acts on ``recent_stats``: the new shape as soon as a drift is confirmed,
    not a window that is mostly the old one; the current window once it is all new."""
    shapes = sessions(3700)
    mon = SegmentMonitor()
    state, alerts = fold_all(shapes[:2640], mon)
    assert [a for a in alerts if a.kind == "drift"] and state.changed_at is not None
    since = state.sessions - state.changed_at
    assert 2600 - 5 <= state.changed_at <= 2600 + 5 and since < 1024
    recent, window = mon.recent_stats(state), mon.stats(state)
    assert recent["fanout"].n == max(since, 30) and window["fanout"].n == 1024
    assert recent["fanout"].p50 >= 9 and window["fanout"].p50 == 3
    assert recent["context_tokens"].p50 > 30_000 > window["context_tokens"].p50
    restored = orjson.loads(orjson.dumps(state.to_dict()))
    assert mon.recent_stats(SegmentState.from_dict(restored)) == recent
    del restored["changed_at"]  # state written before the field existed: no change known
    assert mon.recent_stats(SegmentState.from_dict(restored)) == window
    later, _ = fold_all(shapes[2640:], mon, state)
    assert mon.recent_stats(later) == mon.stats(later)  # the window is all new by now


def test_wrong_segment_and_bad_state_are_refused():
    mon = SegmentMonitor()
    with pytest.raises(ValueError):
        mon.fold(mon.initial(Segment(agent="other")), sessions(1, change=None)[0])
    with pytest.raises(ValueError):
        SegmentState.from_dict({"v": 99})


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_a_bad_value_is_refused_and_changes_nothing(bad):
    cfg = MonitorConfig()
    st = MetricState.initial(cfg)
    observe(st, 1.0, "m", Origin("seg", "s0", 0, 0), cfg)
    before = orjson.dumps(st.to_dict())
    with pytest.raises(ValueError):
        observe(st, bad, "m", Origin("seg", "s1", 1, 1), cfg)
    assert orjson.dumps(st.to_dict()) == before


@pytest.mark.parametrize("shape", ["lognormal_tokens", "pareto", "mostly_zero"])
def test_state_per_metric_stays_under_64_kib(shape):
    rng = np.random.default_rng(12)
    xs = {"lognormal_tokens": lambda: np.round(rng.lognormal(9.0, 2.0, 100_000)),
          "pareto": lambda: (rng.pareto(1.1, 100_000) + 1.0) * 1000.0,
          "mostly_zero": lambda: (rng.random(100_000) < 0.03) * 1.0}[shape]()
    cfg = MonitorConfig()
    st = MetricState.initial(cfg)
    for i, x in enumerate(xs.tolist()):
        observe(st, x, "m", Origin("seg", f"s{i}", i * 10**9, i * 10**9), cfg)
    size = len(orjson.dumps(st.to_dict()))
    assert size <= 64 * 1024, size
    assert MetricState.from_dict(orjson.loads(orjson.dumps(st.to_dict()))).to_dict() == st.to_dict()
