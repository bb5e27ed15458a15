"""Recalibrator: from segment distributions and alerts, propose a new routing policy (pure).

Only segments with an open alert (drift or assumption_broken, not yet resolved, within
``alert_horizon_s``) and at least ``min_samples`` sessions are touched. Per segment:

* **context cap** from the P99 context demand (``context_tokens`` p99; when ``truncations``
  p99 > 0 the observed tokens are clipped at the cap, so demand counts as cap x
  ``truncation_growth``), times ``headroom``, rounded up to ``cap_quantum``, clamped to the
  guardrails and to the window of the top rule's model; if that model's window is too small
  the top rule moves to the cheapest catalog model that fits and is as capable;
* **complexity thresholds**: a rule whose ``max_complexity`` exceeds its model's capability
  is lowered toward that capability (<= 0.3 per step) once the segment's complexity
  ``complexity_stat`` exceeds the capability, so complex sessions go to a capable tier;
* **retry budget** raised to ceil(P99 ``retries``), at most ``max_retry_budget``.

The recalibrator only widens (more context, more capable models, more retries): narrowing
trades safety for cost and is left to a human. No change -> no proposal. At most one
proposal per policy per ``cooldown_s``; the cool-down clock is ``RecalibratorState``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from app.core.stats import MetricStats
from app.loop.guardrails import Guardrails
from app.loop.policy import fitting_model, segment_diff
from schemas.alert import Alert
from schemas.policy import ModelSpec, RoutingPolicy, SegmentPolicy
from schemas.recalibration import RoutingRecalibration

NS = 1_000_000_000
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class RecalibratorConfig:
    headroom: float = 1.25
    cap_quantum: int = 1024  # caps are multiples of 1K tokens
    truncation_growth: float = 4.0
    truncation_stat: str = "p99"
    complexity_stat: str = "p95"
    max_retry_budget: int = 5
    min_samples: int = 30
    cooldown_s: float = 600.0
    alert_horizon_s: float = 3600.0
    guardrails: Guardrails = Guardrails()


@dataclass(frozen=True, slots=True)
class RecalibratorState:
    last_proposal_ns: dict[str, int] = field(default_factory=dict)  # policy_id -> event time

    def to_dict(self) -> dict[str, Any]:
        return {"last_proposal_ns": dict(sorted(self.last_proposal_ns.items()))}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecalibratorState:
        return cls(last_proposal_ns={k: int(v) for k, v in data.get("last_proposal_ns", {}).items()})


Stats = Mapping[str, Mapping[str, MetricStats]]  # segment key -> metric -> stats


def recalibrate(
    policy: RoutingPolicy,
    stats: Stats,
    alerts: Iterable[Alert],
    now_ns: int,
    state: RecalibratorState = RecalibratorState(),
    config: RecalibratorConfig = RecalibratorConfig(),
    mode: Literal["propose", "auto"] = "auto",
) -> tuple[RoutingRecalibration | None, RecalibratorState]:
    """A proposal (unsigned; see ``app.loop.signing``) or None, and the new state."""
    last = state.last_proposal_ns.get(policy.policy_id)
    if last is not None and now_ns - last < config.cooldown_s * NS:
        return None, state
    causes = open_alerts_by_segment(policy, alerts, now_ns, config.alert_horizon_s)
    segments, changes, evidence = [], [], {}
    for sp in policy.segments:
        seg_stats = _stats_for(sp, causes.get(sp.segment.key, ()), stats)
        new, ev = (sp, {}) if seg_stats is None else recalibrate_segment(policy, sp, seg_stats, config)
        segments.append(new)
        for change in segment_diff(sp, new):
            changes.append(change)
            group = change.field.split("[")[0].split(".")[0]  # routes | context_cap | retry_budget
            evidence[f"{sp.segment.key}.{change.field}"] = {
                **ev.get(group, {}), "cause": sorted({a.alert_id for a in causes[sp.segment.key]}),
            }
    if not changes:
        return None, state
    version = policy.version + 1
    new_policy = RoutingPolicy.model_validate(
        {**policy.model_dump(), "version": version, "segments": [s.model_dump() for s in segments]}
    )
    rec = RoutingRecalibration(
        policy_id=policy.policy_id, version=version, created_at=now_ns, mode=mode,
        cause=sorted({c for ev in evidence.values() for c in ev["cause"]}),
        evidence=evidence, changes=changes, policy=new_policy,
    )
    return rec, RecalibratorState({**state.last_proposal_ns, policy.policy_id: now_ns})


def open_alerts_by_segment(
    policy: RoutingPolicy, alerts: Iterable[Alert], now_ns: int, horizon_s: float
) -> dict[str, list[Alert]]:
    """Unresolved drift/assumption alerts, grouped by the policy segment that serves them."""
    alerts = [a for a in alerts if now_ns - horizon_s * NS <= a.detected_at <= now_ns]
    resolved = {a.resolves for a in alerts if a.kind == "resolved"}
    out: dict[str, list[Alert]] = {}
    for a in alerts:
        if a.kind == "resolved" or a.alert_id in resolved:
            continue
        sp = policy.for_segment(a.segment)
        if sp is not None and sp.segment.agent == a.segment.agent:  # not the "*" fallback
            out.setdefault(sp.segment.key, []).append(a)
    return out


def _stats_for(sp: SegmentPolicy, alerts: list[Alert], stats: Stats) -> Mapping[str, MetricStats] | None:
    # The segment's own stats; else the alerted sub-segment with the most sessions.
    if not alerts:
        return None
    if sp.segment.key in stats:
        return stats[sp.segment.key]
    subs = [stats[a.segment.key] for a in alerts if a.segment.key in stats]
    return max(subs, key=lambda s: max((m.n for m in s.values()), default=0), default=None)


def recalibrate_segment(
    policy: RoutingPolicy, sp: SegmentPolicy, st: Mapping[str, MetricStats], cfg: RecalibratorConfig
) -> tuple[SegmentPolicy, dict[str, dict[str, Any]]]:
    """New policy for one segment, and evidence per field group (routes, context_cap, ...)."""
    cx = _enough(st.get("complexity"), cfg)
    bounds, route_ev = _thresholds(policy, sp, cx, cfg)
    need = max(policy.model(sp.routes[-1].model).capability, cx.get(cfg.complexity_stat) if cx else 0.0)
    cap, top, cap_ev = _context_cap(policy, sp, st, min(need, 1.0), cfg)
    if top.name != sp.routes[-1].model:
        route_ev = {**route_ev, "top_model": cap_ev}
    budget, retry_ev = _retry_budget(sp, _enough(st.get("retries"), cfg), cfg)
    routes = [{"max_complexity": b, "model": r.model} for b, r in zip(bounds, sp.routes, strict=True)]
    routes[-1]["model"] = top.name
    new = SegmentPolicy.model_validate(
        {"segment": sp.segment.model_dump(), "routes": routes, "context_cap": cap, "retry_budget": budget}
    )
    return new, {"routes": route_ev, "context_cap": cap_ev, "retry_budget": retry_ev}


def _enough(s: MetricStats | None, cfg: RecalibratorConfig) -> MetricStats | None:
    return s if s is not None and s.n >= cfg.min_samples else None


def _context_cap(policy, sp, st, need_capability, cfg) -> tuple[int, ModelSpec, dict[str, Any]]:
    top = policy.model(sp.routes[-1].model)
    ctx, tr = _enough(st.get("context_tokens"), cfg), st.get("truncations")
    truncating = tr is not None and tr.get(cfg.truncation_stat) > 0
    if ctx is None and not truncating:
        return sp.context_cap, top, {}
    demand = max(ctx.p99 if ctx else 0.0, sp.context_cap * cfg.truncation_growth if truncating else 0.0)
    wanted = math.ceil(demand * cfg.headroom / cfg.cap_quantum) * cfg.cap_quantum
    target = min(wanted, cfg.guardrails.cap_bounds(sp.context_cap)[1])
    if target <= sp.context_cap and top.capability >= need_capability:
        return sp.context_cap, top, {}  # widen only
    if top.context_window < target or top.capability < need_capability:
        top = _top_model(policy, max(target, sp.context_cap), need_capability) or top
    cap = max(sp.context_cap, min(target, top.context_window))
    stats = {"context_tokens": asdict(ctx) if ctx else None, "truncations": asdict(tr) if tr else None}
    return cap, top, {
        "stats": stats, "demand_p99": demand, "truncating": truncating, "headroom": cfg.headroom,
        "wanted": wanted, "clamped_to_step": wanted > target, "model": top.name,
        "model_window": top.context_window, "model_capability": top.capability,
    }


def _top_model(policy: RoutingPolicy, window: int, capability: float) -> ModelSpec | None:
    # Cheapest that fits both; else the widest among the capable; else the most capable.
    capable = [m for m in policy.models if m.capability >= capability - _EPS]
    return fitting_model(policy, window=window, capability=capability - _EPS) or (
        max(capable, key=lambda m: (m.context_window, -m.tier)) if capable else None
    )


def _thresholds(policy, sp, cx, cfg) -> tuple[list[float], dict[str, Any]]:
    bounds = [r.max_complexity for r in sp.routes]
    if cx is None:
        return bounds, {}
    level = cx.get(cfg.complexity_stat)
    for i, r in enumerate(sp.routes[:-1]):
        capability = policy.model(r.model).capability
        if r.max_complexity > capability + _EPS and level > capability:
            bounds[i] = max(capability, cfg.guardrails.threshold_bounds(r.max_complexity)[0])
    for i in range(len(bounds) - 2, -1, -1):  # keep ascending by lowering only
        bounds[i] = min(bounds[i], bounds[i + 1])
    if bounds == [r.max_complexity for r in sp.routes]:
        return bounds, {}
    return bounds, {
        "stats": {"complexity": asdict(cx)}, "complexity_stat": cfg.complexity_stat,
        "observed": level, "capabilities": {r.model: policy.model(r.model).capability for r in sp.routes},
    }


def _retry_budget(sp, rt, cfg) -> tuple[int, dict[str, Any]]:
    if rt is None:
        return sp.retry_budget, {}
    target = min(cfg.max_retry_budget, math.ceil(rt.p99 - _EPS),
                 sp.retry_budget + cfg.guardrails.max_retry_increase)
    if target <= sp.retry_budget:
        return sp.retry_budget, {}
    return target, {"stats": {"retries": asdict(rt)}, "p99": rt.p99, "max": cfg.max_retry_budget}
