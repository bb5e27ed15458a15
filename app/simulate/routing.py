"""The simulator's reference world and the router interface.

The reference world is ``examples/policy.yaml`` (policy ``reference``): its model catalog is
the simulated models' truth -- a model really handles task complexity up to its
``capability`` -- and the default router serves that policy exactly as a gateway would
(``app.loop.policy.route`` with the call's context demand known).

A *router* is any callable ``(segment, complexity, context_demand) -> (model, route,
context_limit)``: the simulated agent asks it before every LLM call. A gateway
(``app.loop.gateway.Gateway``) can be plugged in instead for a closed-loop run
(``app.loop.closed_loop``).

The reference policy routes tasks up to complexity 0.7 to ``haiku-s``, which sends about
80% of calls there -- but ``haiku-s`` only *handles* complexity up to 0.55. Tasks in between
are misrouted: they fail and are retried, escalated (see ``app.simulate.agents``).

>>> route = policy_router(default_policy())
>>> route(Segment(agent="support"), 0.3, 8_000)
('haiku-s', 'support:routes[0]', 16384)
>>> route(Segment(agent="support"), 0.9, 50_000)   # capped at 16K: truncated
('opus-l', 'support:routes[1]', 16384)
>>> route(Segment(agent="search"), 0.3, 50_000)
('haiku-s', 'search:routes[0]', 131072)
>>> route(Segment(agent="unknown-agent"), 0.3, 1)  # no segment policy: cheapest capable model
('haiku-s', 'default', 131072)
"""

from __future__ import annotations

from collections.abc import Callable

from app.loop.policy import EXAMPLE_POLICY, load_policy, route
from schemas.common import Segment
from schemas.policy import ModelSpec, RoutingPolicy

# (model, route, context_limit); context_limit None means no limit is known.
Decision = tuple[str, str | None, int | None]
Router = Callable[[Segment, float, int], Decision]

REFERENCE_POLICY = EXAMPLE_POLICY  # examples/policy.yaml: the single source of truth
MODELS: tuple[ModelSpec, ...] = tuple(load_policy(REFERENCE_POLICY).models)  # frozen specs
SMALL = min(MODELS, key=lambda m: (m.tier, m.context_window, m.name))  # haiku-s
LARGE = max(MODELS, key=lambda m: (m.capability, m.context_window, -m.tier))  # opus-l


def capabilities(models: tuple[ModelSpec, ...] = MODELS) -> dict[str, float]:
    """Model name -> the highest complexity it really handles (the simulated world's truth).

    >>> capabilities()
    {'haiku-s': 0.55, 'opus-l': 1.0}
    """
    return {m.name: m.capability for m in models}


def default_policy() -> RoutingPolicy:
    """The reference policy, freshly loaded from ``examples/policy.yaml`` (version 1).

    >>> p = default_policy()
    >>> p.policy_id, p.version, p.models == list(MODELS)
    ('reference', 1, True)
    """
    return load_policy(REFERENCE_POLICY)


def policy_router(policy: RoutingPolicy) -> Router:
    """A router serving ``policy`` with ``app.loop.policy.route`` (the gateway's decision);
    the route is the deciding rule, the context limit the effective cap."""
    def decide(segment: Segment, complexity: float, context_demand: int) -> Decision:
        d = route(policy, segment, complexity, context_demand)
        return d.model, d.rule, d.context_cap

    return decide
