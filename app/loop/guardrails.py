"""Bounded change per step: what a gateway accepts from a recalibration (pure).

The recalibrator clamps its own proposals to the same bounds, so a proposal that is correct
is never rejected; a bigger move takes several steps, one per cool-down.

* catalog: every model of the new policy must be in the served catalog, spec unchanged;
* context cap: at most x4 up and /2 down per step, and never above the largest window of the
  segment's route models;
* complexity thresholds: each rule's ``max_complexity`` moves at most 0.3; the number of
  rules per segment stays the same (structural changes ship as a new deployment);
* retry budget: at most +3 per step (decreases are unbounded: they only cost resilience);
* segments may be added, not removed.

>>> g = Guardrails()
>>> g.cap_bounds(16000)
(8000, 64000)
>>> g.threshold_bounds(0.8)
(0.5, 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from schemas.policy import RoutingPolicy, SegmentPolicy

_EPS = 1e-9  # float slack: 0.8 - 0.3 is 0.5000000000000001


@dataclass(frozen=True, slots=True)
class Guardrails:
    max_cap_growth: float = 4.0
    max_cap_shrink: float = 2.0
    max_threshold_step: float = 0.3
    max_retry_increase: int = 3

    def cap_bounds(self, old: int) -> tuple[int, int]:
        return math.ceil(old / self.max_cap_shrink), math.floor(old * self.max_cap_growth)

    def threshold_bounds(self, old: float) -> tuple[float, float]:
        lo = max(0.0, round(old - self.max_threshold_step, 9))
        return lo, min(1.0, round(old + self.max_threshold_step, 9))


def unknown_models(served: RoutingPolicy, new: RoutingPolicy) -> list[str]:
    """Models of ``new`` that are not in the served catalog with the same spec."""
    catalog = {m.name: m for m in served.models}
    return [m.name for m in new.models if catalog.get(m.name) != m]


def step_violation(served: RoutingPolicy, new: RoutingPolicy, g: Guardrails) -> str | None:
    """Why ``new`` is too far from ``served`` (None when within bounds)."""
    news = {s.segment: s for s in new.segments}
    for old in served.segments:
        if old.segment not in news:
            return f"{old.segment.key}: segment removed"
        why = segment_violation(old, news[old.segment], g)
        if why:
            return f"{old.segment.key}: {why}"
    return None


def window_violation(policy: RoutingPolicy, seg: SegmentPolicy) -> str | None:
    widest = max(policy.model(r.model).context_window for r in seg.routes)
    if seg.context_cap > widest:
        return f"{seg.segment.key}: context_cap {seg.context_cap} above every route model's window ({widest})"
    return None


def segment_violation(old: SegmentPolicy, new: SegmentPolicy, g: Guardrails) -> str | None:
    lo, hi = g.cap_bounds(old.context_cap)
    if not lo <= new.context_cap <= hi:
        return f"context_cap {old.context_cap} -> {new.context_cap} outside [{lo}, {hi}]"
    if new.retry_budget > old.retry_budget + g.max_retry_increase:
        grow = new.retry_budget - old.retry_budget
        return f"retry_budget {old.retry_budget} -> {new.retry_budget}: +{grow} > +{g.max_retry_increase}"
    if len(old.routes) != len(new.routes):
        return f"routes: {len(old.routes)} -> {len(new.routes)} rules"
    for i, (a, b) in enumerate(zip(old.routes, new.routes, strict=True)):
        if abs(a.max_complexity - b.max_complexity) > g.max_threshold_step + _EPS:
            return (f"routes[{i}].max_complexity {a.max_complexity} -> {b.max_complexity} "
                    f"moves more than {g.max_threshold_step}")
    return None
