"""Recalibrator: proposals from a dev-to-support-like shift, model choice, cool-down."""

from __future__ import annotations

import json

import pytest

from app.core.stats import MetricStats
from app.loop.gateway import evaluate
from app.loop.policy import EXAMPLE_POLICY, load_policy, route
from app.loop.recalibrator import (
    NS,
    RecalibratorConfig,
    RecalibratorState,
    recalibrate,
)
from app.loop.signing import sign_recalibration
from schemas import Alert, RoutingPolicy, Segment

T0 = 1_700_000_000 * NS
SUPPORT = Segment(agent="support")


def ms(p50, p95, p99, n=200, mx=None) -> MetricStats:
    return MetricStats(n=n, mean=p50, p50=p50, p90=(p50 + p95) / 2, p95=p95, p99=p99, max=mx or p99)


def alert(aid="a-cap", segment=SUPPORT, kind="assumption_broken", at=T0, **kw) -> Alert:
    return Alert(alert_id=aid, kind=kind, metric="context_tokens", segment=segment,
                 detector="assumption", severity="page", detected_at=at, message="m", **kw)


def support_shift() -> dict:
    """Support after the scope change: context clipped at the 16K cap, truncating, complex."""
    return {
        "support": {
            "context_tokens": ms(16384, 16384, 16384), "truncations": ms(1, 3, 4),
            "complexity": ms(0.62, 0.9, 0.97), "fanout": ms(11, 15, 18), "retries": ms(1, 2, 2),
        },
        "dev-assistant": {"context_tokens": ms(5000, 9000, 11000), "complexity": ms(0.2, 0.4, 0.45)},
    }


@pytest.fixture
def policy() -> RoutingPolicy:
    return load_policy(EXAMPLE_POLICY)


def test_dev_to_support_shift_proposal(policy):
    rec, state = recalibrate(policy, support_shift(), [alert(), alert("a-drift", kind="drift")], T0 + 1)
    assert rec is not None and rec.version == policy.version + 1 == rec.policy.version
    support = rec.policy.for_segment(SUPPORT)
    assert support.context_cap >= 64_000
    top = rec.policy.model(support.routes[-1].model)
    assert top.name == "opus-l" and top.context_window >= support.context_cap
    haiku = rec.policy.model("haiku-s")
    assert support.routes[0].max_complexity <= haiku.capability
    # the reference numbers: 16384 x 4 (truncating) x 1.25, clamped to the x4 step; 0.7 -> 0.55
    assert (support.context_cap, support.routes[0].max_complexity) == (65536, 0.55)
    assert route(rec.policy, SUPPORT, 0.7).model == "opus-l"  # complex work to the capable tier
    assert route(rec.policy, SUPPORT, 0.3).model == "haiku-s"  # simple work stays cheap
    assert rec.policy.for_segment(Segment(agent="dev-assistant")) == policy.for_segment(
        Segment(agent="dev-assistant"))  # no alert there: untouched
    fields = {c.field for c in rec.changes}
    assert {"context_cap", "routes[0].max_complexity"} <= fields
    for change in rec.changes:
        ev = rec.evidence[f"support.{change.field}"]
        assert ev["cause"] == ["a-cap", "a-drift"] and ev["stats"]
    assert rec.evidence["support.context_cap"]["truncating"] is True
    assert rec.cause == ["a-cap", "a-drift"] and rec.mode == "auto" and rec.created_at == T0 + 1
    assert state.last_proposal_ns == {policy.policy_id: T0 + 1}
    # The gateway accepts it: proposals stay within the same guardrails.
    raw = sign_recalibration(rec, "k").model_dump_json()
    assert evaluate(policy, raw, "k").reason == "ok"


def test_cap_from_p99_with_headroom_rounded_to_1k(policy):
    stats = {"support": {"context_tokens": ms(20000, 35000, 40000)}}
    rec, _ = recalibrate(policy, stats, [alert()], T0)
    assert rec.policy.for_segment(SUPPORT).context_cap == 49 * 1024  # 40000 * 1.25 = 50000 -> 50176
    assert [c.field for c in rec.changes] == ["context_cap"]


def test_cap_step_is_clamped_and_never_above_window(policy):
    stats = {"support": {"context_tokens": ms(90000, 150000, 190000)}}
    rec, _ = recalibrate(policy, stats, [alert()], T0)
    assert rec.policy.for_segment(SUPPORT).context_cap == 4 * 16384
    assert rec.evidence["support.context_cap"]["clamped_to_step"] is True
    again, _ = recalibrate(rec.policy, stats, [alert()], T0 + 3600 * NS)
    assert again.version == 3 and again.policy.for_segment(SUPPORT).context_cap == 200_000  # window


def catalog_policy(models) -> RoutingPolicy:
    return RoutingPolicy.model_validate({
        "policy_id": "c", "version": 7, "models": models,
        "segments": [{"segment": {"agent": "support"}, "context_cap": 16384, "retry_budget": 1,
                      "routes": [{"max_complexity": 0.5, "model": "small"},
                                 {"max_complexity": 1.0, "model": "mid"}]}],
    })


def model(name, tier, window, capability=1.0):
    return {"name": name, "tier": tier, "capability": capability, "context_window": window}


def test_picks_cheapest_catalog_model_whose_window_fits():
    p = catalog_policy([model("small", 1, 16384, 0.5), model("mid", 2, 32768),
                        model("wide", 3, 131072), model("huge", 5, 1_000_000)])
    rec, _ = recalibrate(p, {"support": {"context_tokens": ms(30000, 40000, 45000)}}, [alert()], T0)
    seg = rec.policy.for_segment(SUPPORT)
    assert seg.routes[-1].model == "wide" and seg.context_cap == 55 * 1024
    assert {m.name for m in rec.policy.models} == {m.name for m in p.models}
    assert "routes[1].model" in {c.field for c in rec.changes}


def test_no_model_fits_caps_at_widest_window():
    p = catalog_policy([model("small", 1, 16384, 0.5), model("mid", 2, 32768)])
    rec, _ = recalibrate(p, {"support": {"context_tokens": ms(30000, 40000, 45000)}}, [alert()], T0)
    seg = rec.policy.for_segment(SUPPORT)
    assert seg.routes[-1].model == "mid" and seg.context_cap == 32768


def test_cooldown_and_state_round_trip(policy):
    cfg = RecalibratorConfig(cooldown_s=600)
    rec, state = recalibrate(policy, support_shift(), [alert()], T0, config=cfg)
    assert rec is not None
    restored = RecalibratorState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert restored == state
    none, same = recalibrate(policy, support_shift(), [alert()], T0 + 599 * NS, restored, cfg)
    assert none is None and same == restored
    later, _ = recalibrate(policy, support_shift(), [alert()], T0 + 600 * NS, restored, cfg)
    assert later is not None


def test_nothing_to_do(policy):
    stats = support_shift()
    assert recalibrate(policy, stats, [], T0)[0] is None  # no alert
    resolved = alert("r", kind="resolved", resolves="a-cap", resolved_kind="assumption_broken")
    assert recalibrate(policy, stats, [alert(), resolved], T0)[0] is None  # episode over
    old = alert(at=T0 - 2 * 3600 * NS)
    assert recalibrate(policy, stats, [old], T0)[0] is None  # beyond the alert horizon
    few = {"support": {k: ms(v.p50, v.p95, v.p99, n=10) for k, v in stats["support"].items()
                       if k != "truncations"}}
    assert recalibrate(policy, few, [alert()], T0)[0] is None  # too few sessions
    calm = {"support": {"context_tokens": ms(3000, 5000, 6000), "complexity": ms(0.1, 0.3, 0.4)}}
    assert recalibrate(policy, calm, [alert()], T0)[0] is None  # only widens


def test_retry_budget_from_p99_bounded(policy):
    stats = {"support": {"retries": ms(1, 6, 9)}}
    rec, _ = recalibrate(policy, stats, [alert()], T0, mode="propose")
    assert rec.mode == "propose"
    assert rec.policy.for_segment(SUPPORT).retry_budget == 5  # +3 allowed, max budget 5


def test_sub_segment_alert_uses_agent_policy(policy):
    sub = Segment(agent="support", task_type="refund")
    stats = {"support/refund": {"context_tokens": ms(20000, 35000, 40000)}}
    rec, _ = recalibrate(policy, stats, [alert(segment=sub)], T0)
    assert rec.policy.for_segment(SUPPORT).context_cap == 49 * 1024


def test_sessions_to_alert_to_applied_policy(policy):
    """The offline loop in one go: sessions -> stats -> broken assumption -> proposal -> gateway."""
    from app.loop.assumptions import load_assumptions
    from app.loop.gateway import Gateway
    from app.loop.observe import segment_stats
    from app.loop.tracker import AssumptionTracker, TrackerState
    from schemas import SessionShape

    tracker = AssumptionTracker(load_assumptions(EXAMPLE_POLICY.parent / "assumptions.yaml"))
    gateway, state, alerts, sessions = Gateway(policy, "k"), TrackerState(), [], []
    for i in range(60):
        support_like = i >= 20  # the scope widens to support escalations
        sessions.append(SessionShape(
            session_id=f"s{i:03d}", segment=SUPPORT, spans=5, closed_by="session_end",
            start_time_unix_nano=T0 + i * NS, end_time_unix_nano=T0 + i * NS + 1,
            context_tokens=16384 if support_like else 6000, truncations=int(support_like),
            fanout=11 if support_like else 3, complexity=0.75 if support_like else 0.3,
        ))
        stats = segment_stats(sessions)
        state, new = tracker.observe(state, SUPPORT, stats["support"], T0 + i * NS, f"s{i:03d}")
        alerts += new
    broken = {a.assumption["id"] for a in alerts if a.kind == "assumption_broken"}
    assert {"support-context-cap", "support-fanout", "support-routing-capability"} <= broken
    rec, _ = recalibrate(policy, stats, alerts, T0 + 60 * NS)
    assert gateway.offer(sign_recalibration(rec, "k").model_dump_json()).accepted
    decision = gateway.route({"agent": "support", "complexity": 0.75, "context_demand": 40000})
    assert (decision.model, decision.context_cap) == ("opus-l", 65536)
