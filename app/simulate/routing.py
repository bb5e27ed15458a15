"""The simulator's model catalog, its static initial routing policy and the router interface.

A *router* is any callable ``(segment, complexity, context_demand) -> (model, route,
context_limit)``: the simulated agent asks it before every LLM call. The default router
serves ``default_policy()`` the way a gateway would (first rule whose ``max_complexity`` is
>= the task's complexity; context limit = min(model window, segment cap)). A gateway client
can be plugged in instead for a closed-loop run.

The static policy routes tasks up to complexity 0.7 to the small model, which sends about
80% of calls there -- but the small model only *handles* complexity up to 0.55. Tasks in
between are misrouted: they fail and are retried, escalated (see ``app.simulate.agents``).

>>> route = policy_router(default_policy())
>>> route(Segment(agent="support"), 0.3, 50_000)
('compact-s', 'support:le0.7', 16384)
>>> route(Segment(agent="search"), 0.9, 50_000)
('frontier-l', 'search:le1', 131072)
>>> route(Segment(agent="unknown-agent"), 0.3, 1)
('compact-s', '*:le0.7', 16384)
"""

from __future__ import annotations

from collections.abc import Callable

from schemas.common import Segment
from schemas.policy import ModelSpec, RouteRule, RoutingPolicy, SegmentPolicy

# (model, route, context_limit); context_limit None means no limit is known.
Decision = tuple[str, str | None, int | None]
Router = Callable[[Segment, float, int], Decision]

SMALL = ModelSpec(name="compact-s", tier=1, capability=0.55, context_window=131_072)
LARGE = ModelSpec(name="frontier-l", tier=3, capability=0.95, context_window=200_000)
MODELS: tuple[ModelSpec, ...] = (SMALL, LARGE)
SMALL_MAX_COMPLEXITY = 0.7  # the static threshold: set for an 80% small-model share
CONTEXT_CAPS: tuple[tuple[str, int], ...] = (
    ("dev-assistant", 16_384), ("support", 16_384), ("search", 131_072), ("*", 16_384),
)


def capabilities(models: tuple[ModelSpec, ...] = MODELS) -> dict[str, float]:
    """Model name -> the highest complexity it really handles (the simulated world's truth)."""
    return {m.name: m.capability for m in models}


def default_policy(policy_id: str = "sim-default") -> RoutingPolicy:
    """The static initial policy: small model up to 0.7, large above; 16K caps (search: 128K)."""
    routes = [RouteRule(max_complexity=SMALL_MAX_COMPLEXITY, model=SMALL.name),
              RouteRule(max_complexity=1.0, model=LARGE.name)]
    segments = [
        SegmentPolicy(segment=Segment(agent=agent), routes=routes, context_cap=cap,
                      retry_budget=2)
        for agent, cap in CONTEXT_CAPS
    ]
    return RoutingPolicy(policy_id=policy_id, version=1, models=list(MODELS), segments=segments)


def policy_router(policy: RoutingPolicy) -> Router:
    """A router serving ``policy``; rules are resolved once per segment, then cached."""
    cache: dict[Segment, list[tuple[float, Decision]]] = {}

    def rules(segment: Segment) -> list[tuple[float, Decision]]:
        seg_policy = policy.for_segment(segment)
        if seg_policy is None:
            raise LookupError(f"policy {policy.policy_id!r} has no rule for {segment.key!r}")
        out = []
        for rule in seg_policy.routes:
            window = policy.model(rule.model).context_window
            route = f"{seg_policy.segment.key}:le{rule.max_complexity:g}"
            out.append((rule.max_complexity, (rule.model, route,
                                              min(window, seg_policy.context_cap))))
        return out

    def route(segment: Segment, complexity: float, context_demand: int) -> Decision:
        found = cache.get(segment)
        if found is None:
            found = cache[segment] = rules(segment)
        for max_complexity, decision in found:
            if complexity <= max_complexity:
                return decision
        return found[-1][1]

    return route
