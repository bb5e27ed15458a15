"""Named synthetic workloads: per-segment session profiles and the change each scenario makes.

A ``Profile`` is the distribution one segment's sessions are drawn from; a ``SegmentSpec``
says how that profile changes at the scenario's change point (a step, or a gradual ramp
from ``change_at`` to the last session) and which ``SessionShape`` metrics are expected to
move as a result (the ground truth detectors are scored against).

>>> sc = build("dev-to-support", sessions=1000)
>>> sc.change_at, [s.agent for s in sc.segments]
(500, ['dev-assistant', 'support', 'search'])
>>> sc.profile_at(sc.segments[1], 499)[0].tools_mean, sc.profile_at(sc.segments[1], 500)[0].tools_mean
(3.0, 11.0)
>>> sorted(SCENARIOS)
['context-creep', 'dev-to-support', 'retry-storm', 'steady', 'tail-only']
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from types import MappingProxyType
from typing import Literal

EPOCH_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z: event time starts here, not at "now"
DEFAULT_RATE = 2.0  # session arrivals per event-time second (Poisson)

DEV_TOOLS = ("read_file", "search_code", "edit_file", "run_tests", "git_diff", "lint")
SUPPORT_TOOLS = ("lookup_customer", "get_order", "order_history", "kb_search", "refund_policy",
                 "billing_history", "check_status", "create_ticket", "escalate", "send_email")
SEARCH_TOOLS = ("web_search", "fetch_page", "vector_search", "rerank")


@dataclass(frozen=True, slots=True)
class Profile:
    """How one segment's sessions are drawn. Every number is a float so ramps can interpolate."""

    tools_mean: float = 3.0  # tool calls per session (first attempts), Poisson
    group_mean: float = 1.5  # tool calls per plan step; a step's calls share one parent span
    parallel_p: float = 0.5  # a step with several tool calls runs them concurrently
    tools: tuple[str, ...] = DEV_TOOLS
    context_median: float = 6_000.0  # peak context demand of a session, lognormal (tokens)
    context_sigma: float = 0.35
    tail_p: float = 0.0  # share of sessions in a heavy-context sub-population ...
    tail_mult: float = 5.0  # ... whose demand is multiplied by tail_mult +- 1
    hard_p: float = 0.2  # hard tasks: complexity 0.72..0.92
    routine_a: float = 2.0  # routine tasks: complexity ~ Beta(routine_a, routine_b)
    routine_b: float = 6.0
    tool_error_p: float = 0.02  # transient failure of one attempt (then retried)
    llm_error_p: float = 0.01
    reflect_p: float = 0.15  # per step: a self-critique LLM call
    delegate_p: float = 0.05  # per step: the work runs in a sub-agent, one level deeper
    cache_p: float = 0.2  # a tool call is served from cache ...
    cache_age_mean_s: float = 60.0  # ... with an exponential age of this mean
    output_mean: float = 300.0  # output tokens per LLM call, exponential
    declare_complexity: bool = True  # LLM and root spans carry the task's complexity


@dataclass(frozen=True, slots=True)
class SegmentSpec:
    agent: str
    weight: float  # share of session arrivals
    before: Profile
    after: Profile | None = None  # None: stationary
    kind: Literal["step", "gradual"] = "step"
    metrics: tuple[str, ...] = ()  # SessionShape metrics expected to change
    incidental: tuple[str, ...] = ()  # may move slightly as a side effect: neither hit nor miss
    description: str = ""
    task_type: str | None = None

    @property
    def key(self) -> str:
        return self.agent if self.task_type is None else f"{self.agent}/{self.task_type}"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    segments: tuple[SegmentSpec, ...]
    sessions: int
    change_at: int  # index of the first session drawn from the changed profiles
    rate: float = DEFAULT_RATE
    epoch_ns: int = EPOCH_NS

    def profile_at(self, spec: SegmentSpec, index: int) -> tuple[Profile, str]:
        """(profile, phase) for session ``index`` of segment ``spec``; phase: before/after."""
        if index < self.change_at:
            return spec.before, "before"
        if spec.after is None:
            return spec.before, "after"
        if spec.kind == "step":
            return spec.after, "after"
        frac = min(1.0, (index - self.change_at + 1) / max(1, self.sessions - self.change_at))
        return lerp(spec.before, spec.after, frac), "after"


def lerp(a: Profile, b: Profile, frac: float) -> Profile:
    """Float fields interpolated; the others switch to ``b`` halfway."""
    changes = {}
    for f in fields(Profile):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if x != y:
            changes[f.name] = x + (y - x) * frac if isinstance(x, float) else (x, y)[frac >= 0.5]
    return replace(a, **changes)


DEV = Profile()
SUPPORT_ESCALATIONS = replace(
    DEV, tools_mean=11.0, group_mean=3.5, parallel_p=0.7, tools=SUPPORT_TOOLS,
    context_median=80_000.0, context_sigma=0.25, hard_p=0.45, routine_a=6.0, routine_b=4.0,
    reflect_p=0.3, delegate_p=0.25, output_mean=400.0,
)
SEARCH = Profile(
    tools_mean=2.5, group_mean=2.5, parallel_p=0.9, tools=SEARCH_TOOLS,
    context_median=10_000.0, context_sigma=0.4, hard_p=0.05, routine_a=2.0, routine_b=8.0,
    reflect_p=0.05, delegate_p=0.0, cache_p=0.5, cache_age_mean_s=600.0, output_mean=250.0,
)
SUPPORT_METRICS = ("context_utilization", "context_tokens", "fanout", "max_parallel_fanout",
                   "retry_rate", "reflections", "llm_calls", "depth", "distinct_tools",
                   "complexity", "truncations", "cache_age_s")
CONTEXT_METRICS = ("context_utilization", "context_tokens", "truncations")


def _steady() -> tuple[SegmentSpec, ...]:
    return (SegmentSpec("dev-assistant", 0.4, DEV), SegmentSpec("support", 0.3, DEV),
            SegmentSpec("search", 0.3, SEARCH))


def _dev_to_support() -> tuple[SegmentSpec, ...]:
    dev, support, search = _steady()
    support = replace(
        support, after=SUPPORT_ESCALATIONS, metrics=SUPPORT_METRICS,
        description="scope widens to customer-support escalations: ~11 tool calls, 64K+ "
                    "context under a 16K cap, harder tasks still routed to the small model")
    return dev, support, search


def _context_creep() -> tuple[SegmentSpec, ...]:
    dev, support, search = _steady()
    dev = replace(dev, after=replace(DEV, context_median=20_000.0), kind="gradual",
                  metrics=CONTEXT_METRICS,
                  description="context demand grows linearly from 6K to 20K (16K cap)")
    return dev, support, search


def _retry_storm() -> tuple[SegmentSpec, ...]:
    dev, support, search = _steady()
    search = replace(search, after=replace(SEARCH, tool_error_p=0.6, llm_error_p=0.25),
                     metrics=("retry_rate", "fanout", "max_parallel_fanout", "llm_calls"),
                     # retried reflections are reflections; more tool attempts, more cache hits
                     incidental=("reflections", "cache_age_s"),
                     description="an upstream outage: 60% of uncached tool attempts and 25% "
                                 "of LLM attempts fail and are retried")
    return dev, support, search


def _tail_only() -> tuple[SegmentSpec, ...]:
    dev, support, search = _steady()
    search = replace(search, after=replace(SEARCH, tail_p=0.03, tail_mult=5.0),
                     metrics=("context_utilization", "context_tokens"),
                     description="3% of sessions need 4-6x the context; the median stays")
    return dev, support, search


_BUILDERS = MappingProxyType({
    "steady": ("three stationary segments", _steady),
    "dev-to-support": ("reference scenario (DESIGN.md): support's scope widens", _dev_to_support),
    "context-creep": ("dev-assistant's context demand creeps up", _context_creep),
    "retry-storm": ("search's retry rate jumps", _retry_storm),
    "tail-only": ("search's P99 context grows, its median does not", _tail_only),
})
SCENARIOS: tuple[str, ...] = tuple(_BUILDERS)


def build(name: str, *, sessions: int = 5000, change_at: int | None = None,
          rate: float = DEFAULT_RATE) -> Scenario:
    """Scenario ``name`` with ``sessions`` sessions; the change defaults to the midpoint."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown scenario {name!r}; expected one of {', '.join(SCENARIOS)}")
    if sessions < 0 or rate <= 0:
        raise ValueError("sessions must be >= 0 and rate > 0")
    description, segments = _BUILDERS[name]
    return Scenario(name=name, description=description, segments=segments(), sessions=sessions,
                    change_at=sessions // 2 if change_at is None else change_at, rate=rate)
