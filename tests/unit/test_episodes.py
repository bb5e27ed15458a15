"""Alert episodes: one drift per episode, re-baseline, resolved, cool-down."""

from __future__ import annotations

import numpy as np
import pytest

from app.core import episodes
from app.core.episodes import EpisodeConfig, EpisodeState
from app.core.segment import MonitorConfig, SegmentMonitor
from schemas.common import Segment
from schemas.session import SessionShape

T0 = 1_700_000_000 * 10**9
SEG = Segment(agent="dev-assistant")


def fanout_sessions(means: list[tuple[int, float]], seed: int = 3) -> list[SessionShape]:
    """Sessions whose fan-out is Poisson(mean) from each (start index, mean) on; 1 s apart."""
    rng = np.random.default_rng(seed)
    proto = SessionShape(session_id="s", segment=SEG, start_time_unix_nano=T0,
                         end_time_unix_nano=T0, closed_by="session_end", spans=4)
    bounds = [start for start, _ in means[1:]] + [None]
    out = []
    for (start, mean), end in zip(means, bounds, strict=True):
        for i, x in enumerate(rng.poisson(mean, (end or start) - start).tolist(), start=start):
            out.append(proto.model_copy(update={"session_id": f"s{i}", "fanout": x,
                                                "end_time_unix_nano": T0 + i * 10**9}))
    return out


def run(shapes, monitor=None):
    monitor = monitor or SegmentMonitor()
    state = monitor.initial(SEG)
    alerts, gauges = [], []
    for shape in shapes:
        state, out = monitor.fold(state, shape)
        alerts += out
        gauges.append(monitor.episodes(state).get("fanout", False))
    return state, alerts, gauges


def idx(alert) -> int:
    return (alert.detected_at - T0) // 10**9


def test_one_drift_then_resolved_once_the_new_baseline_is_stable():
    state, alerts, gauges = run(fanout_sessions([(0, 3.0), (3000, 11.0), (6000, 0)]))
    assert [(a.kind, a.metric) for a in alerts] == [("drift", "fanout"), ("resolved", "fanout")]
    drift, done = alerts
    assert done.resolves == drift.alert_id and done.resolved_kind == "drift"
    assert (done.severity, done.detector) == (drift.severity, drift.detector) == ("page", "adwin")
    # the confirmed post-change sessions seed the new baseline, more complete it (1000),
    # then 500 sessions without drift establish it
    assert idx(drift) == 3006 and drift.current.n == 7
    assert idx(done) == idx(drift) + (1000 - 7) + 500
    assert done.baseline.p50 == 3 and done.baseline.n == 2000
    assert done.current.p50 == 11 and done.current.n == 1000
    assert not any(gauges[:3006]) and all(gauges[3006:4499]) and not any(gauges[4499:])
    assert SegmentMonitor().stats(state, "baseline")["fanout"].p50 == 11


def test_no_second_drift_alert_while_the_shape_keeps_moving():
    shapes = fanout_sessions([(0, 3.0), (3000, 11.0), (3600, 20.0), (4300, 30.0), (7500, 0)])
    state, alerts, _ = run(shapes)
    assert [a.kind for a in alerts] == ["drift", "resolved"]
    # re-baselined after each step; the last baseline may blend in a few sessions of the
    # step before, as long as it is within the gate's materiality of the final shape
    assert alerts[1].baseline.p50 == 3 and 30 / 1.25 <= alerts[1].current.p50 <= 30
    assert idx(alerts[1]) > 4300 + 500


def test_cool_down_holds_a_new_drift_until_it_is_over():
    cfg = MonitorConfig(episodes=EpisodeConfig(settle_n=500, cooldown_n=250,
                                               cooldown_ns=600 * 10**9))
    shapes = fanout_sessions([(0, 3.0), (3000, 11.0), (4550, 25.0), (5400, 0)])
    _, alerts, _ = run(shapes, SegmentMonitor(cfg))
    assert [a.kind for a in alerts] == ["drift", "resolved", "drift"]
    resolved_at = idx(alerts[1])
    # held (not lost) until the 600 s are over, then judged at the next check
    assert resolved_at < 4550 and resolved_at + 600 < idx(alerts[2]) <= resolved_at + 608
    assert alerts[2].baseline.p50 == 11 and alerts[2].current.p50 == 25


def test_a_drift_back_is_a_new_episode_after_the_cool_down():
    shapes = fanout_sessions([(0, 3.0), (3000, 11.0), (5000, 3.0), (5600, 0)])
    _, alerts, _ = run(shapes)
    assert [a.kind for a in alerts] == ["drift", "resolved", "drift"]
    back = alerts[2]
    assert back.baseline.p50 == 11 and back.current.p50 == 3 and 5000 < idx(back) <= 5150
    assert back.alert_id != alerts[0].alert_id


def test_open_episodes_for_gauges():
    mon = SegmentMonitor()
    state, _, _ = run(fanout_sessions([(0, 3.0), (3000, 11.0), (3100, 0)]), mon)
    (ep,) = mon.open_episodes(state)
    assert (ep.metric, ep.detector, ep.phase) == ("fanout", "adwin", "rebaseline")
    assert ep.opened_at == T0 + 3006 * 10**9


# -- the state machine on its own -------------------------------------------------------------
def test_phases_and_their_guards():
    cfg = EpisodeConfig(settle_n=3, cooldown_n=2, cooldown_ns=10)
    ep = EpisodeState()
    assert episodes.collecting(ep) and not episodes.may_open(ep)
    with pytest.raises(ValueError):
        episodes.confirmed(ep, n=1, ns=1, alert_id="a", detector="d", severity="page", old={})
    ep = episodes.baseline_frozen(ep, n=5, ns=5)
    ep, opened = episodes.confirmed(ep, n=6, ns=6, alert_id="a", detector="d", severity="page",
                                    old={"n": 5})
    assert opened and ep.is_open and episodes.collecting(ep)
    ep = episodes.baseline_frozen(ep, n=8, ns=8)
    ep, again = episodes.confirmed(ep, n=9, ns=9, alert_id="b", detector="d2",
                                   severity="warning", old={})
    assert not again and (ep.alert_id, ep.rebaselines, ep.phase) == ("a", 2, "rebaseline")
    ep = episodes.baseline_frozen(ep, n=10, ns=10)
    assert episodes.tick(ep, n=12, ns=12, cfg=cfg) == (ep, None)  # settling
    ep, closed = episodes.tick(ep, n=13, ns=13, cfg=cfg)
    assert closed.alert_id == "a" and not ep.is_open and ep.phase == "cooldown"
    assert episodes.tick(ep, n=15, ns=22, cfg=cfg)[0].phase == "cooldown"  # time not yet
    assert episodes.tick(ep, n=15, ns=23, cfg=cfg)[0].phase == "watch"
    assert EpisodeState.from_dict(ep.to_dict()) == ep
    with pytest.raises(ValueError):
        EpisodeState.from_dict({**ep.to_dict(), "phase": "lost"})
    with pytest.raises(ValueError):
        episodes.baseline_frozen(ep, n=1, ns=1)
