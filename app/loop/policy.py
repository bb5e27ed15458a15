"""Routing policy: load/validate a policy file and route one task with it (pure).

The first rule whose ``max_complexity`` is >= the task's complexity picks the model. When the
caller knows the task's context demand and it exceeds that model's window, the task is
escalated to the cheapest catalog model (lowest tier) that is at least as capable and whose
window fits, so a raised context cap is actually usable. The effective context cap is the
segment's cap, never above the chosen model's window.

>>> p = load_policy(EXAMPLE_POLICY)
>>> route(p, Segment(agent="support"), 0.3)
RouteDecision(model='haiku-s', context_cap=16384, retry_budget=2, rule='support:routes[0]', version=1)
>>> route(p, Segment(agent="support"), 0.95).model
'opus-l'
>>> route(p, Segment(agent="unknown"), 0.3).rule   # no segment policy: cheapest capable model
'default'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from app.loop.fileload import LoadError, explain, read_document
from schemas.common import Segment
from schemas.policy import ModelSpec, RoutingPolicy, SegmentPolicy
from schemas.recalibration import PolicyChange

EXAMPLE_POLICY = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"


@dataclass(frozen=True, slots=True)
class RouteDecision:
    model: str
    context_cap: int
    retry_budget: int
    rule: str  # which rule decided, e.g. "support:routes[0]" or "support:routes[0]+window"
    version: int = 0  # policy version that decided


def parse_policy(data: object, source: str) -> RoutingPolicy:
    """Validate a parsed document as a ``RoutingPolicy``; raise ``LoadError`` naming fields."""
    try:
        return RoutingPolicy.model_validate(data)
    except ValidationError as err:
        raise LoadError(explain(source, err)) from None


def load_policy(path: str | Path) -> RoutingPolicy:
    """Load a policy from YAML or JSON.

    >>> parse_policy({"policy_id": "p", "version": 1, "models": [], "segments": []}, "x.yaml")
    Traceback (most recent call last):
    ...
    app.loop.fileload.LoadError: x.yaml: models: List should have at least 1 item after validation, not 0
    x.yaml: segments: List should have at least 1 item after validation, not 0
    """
    return parse_policy(read_document(path), str(path))


def by_cost(models: list[ModelSpec]) -> list[ModelSpec]:
    """Cheapest first: lowest tier, then smallest window, then name (deterministic)."""
    return sorted(models, key=lambda m: (m.tier, m.context_window, m.name))


def fitting_model(
    policy: RoutingPolicy, *, window: int = 0, capability: float = 0.0
) -> ModelSpec | None:
    """Cheapest catalog model with at least ``window`` tokens and ``capability``."""
    return next(
        (m for m in by_cost(policy.models) if m.context_window >= window and m.capability >= capability),
        None,
    )


def route(
    policy: RoutingPolicy, segment: Segment, complexity: float, context_demand: int | None = None
) -> RouteDecision:
    """Decide model, context cap and retry budget for one task of ``segment``."""
    seg = policy.for_segment(segment)
    if seg is None:
        return _default(policy, complexity, context_demand)
    i = next(i for i, r in enumerate(seg.routes) if r.max_complexity >= complexity or r is seg.routes[-1])
    model, rule = policy.model(seg.routes[i].model), f"{seg.segment.key}:routes[{i}]"
    if context_demand is not None and context_demand > model.context_window:
        wider = fitting_model(
            policy, window=min(context_demand, seg.context_cap), capability=model.capability
        )
        if wider is not None and wider.context_window > model.context_window:
            model, rule = wider, rule + "+window"
    return RouteDecision(
        model=model.name, context_cap=min(seg.context_cap, model.context_window),
        retry_budget=seg.retry_budget, rule=rule, version=policy.version,
    )


def _default(policy: RoutingPolicy, complexity: float, context_demand: int | None) -> RouteDecision:
    # No segment policy: the cheapest model able to do the task; else the most capable one.
    model = fitting_model(policy, window=context_demand or 0, capability=complexity) or max(
        policy.models, key=lambda m: (m.capability, m.context_window, m.tier)
    )
    return RouteDecision(
        model=model.name, context_cap=model.context_window, retry_budget=0, rule="default",
        version=policy.version,
    )


def segment_diff(old: SegmentPolicy, new: SegmentPolicy) -> list[PolicyChange]:
    """Field-level changes between two policies of the same segment."""
    seg, out = new.segment, []
    for name in ("context_cap", "retry_budget"):
        if getattr(old, name) != getattr(new, name):
            out.append(PolicyChange(segment=seg, field=name, old=getattr(old, name), new=getattr(new, name)))
    if len(old.routes) != len(new.routes):
        old_r = [r.model_dump() for r in old.routes]
        new_r = [r.model_dump() for r in new.routes]
        return [*out, PolicyChange(segment=seg, field="routes", old=old_r, new=new_r)]
    for i, (a, b) in enumerate(zip(old.routes, new.routes, strict=True)):
        for name in ("max_complexity", "model"):
            if getattr(a, name) != getattr(b, name):
                out.append(PolicyChange(
                    segment=seg, field=f"routes[{i}].{name}", old=getattr(a, name), new=getattr(b, name),
                ))
    return out


def policy_diff(old: RoutingPolicy, new: RoutingPolicy) -> list[PolicyChange]:
    """Changes per segment (added segments show ``old=None``; removed ones ``new=None``)."""
    olds = {s.segment: s for s in old.segments}
    news = {s.segment: s for s in new.segments}
    out: list[PolicyChange] = []
    for seg, sp in news.items():
        if seg in olds:
            out += segment_diff(olds[seg], sp)
        else:
            out.append(PolicyChange(segment=seg, field="segment", old=None, new=sp.model_dump(mode="json")))
    for seg, sp in olds.items():
        if seg not in news:
            out.append(PolicyChange(segment=seg, field="segment", old=sp.model_dump(mode="json"), new=None))
    return out
