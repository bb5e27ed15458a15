"""One simulated agent session: a span tree drawn from a segment profile, run against a router.

A session is an ``invoke_agent`` root; under it one ``plan`` span per step (optionally
delegated to a sub-agent ``invoke_agent`` one level deeper) holding a ``chat`` call, the
step's ``execute_tool`` calls (siblings under one parent, concurrent or not) and maybe a
reflection ``chat``; then a final ``chat`` answer. The root ends last and carries
``session_end``.

Two random streams, both seeded from ``(seed, index)`` only: the *plan* (segment, task
complexity, context demand, steps, tools) is drawn before any routing, so every router sees
the same tasks; the *execution* stream (latencies, outputs, cache hits, transient errors)
follows. An LLM call whose complexity exceeds the routed model's capability fails
(``error_type="task_failed"``) and is retried with the router asked again at complexity 1.0
-- an escalation; a transient error is retried on the same model. At most ``MAX_ATTEMPTS``.

>>> from app.simulate.scenarios import build
>>> from app.simulate.routing import default_policy, policy_router
>>> sc = build("steady", sessions=10)
>>> s = generate_session(sc, seed=7, index=3, start_ns=sc.epoch_ns,
...                      router=policy_router(default_policy()))
>>> s.spans[-1]["operation"], s.spans[-1]["session_end"], s.spans[-1]["parent_span_id"]
('invoke_agent', True, None)
>>> s.truth.session_id == s.spans[0]["session_id"] == "sess-7-0000003"
True
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from operator import itemgetter

from app.simulate.routing import Router, capabilities
from app.simulate.scenarios import Profile, Scenario, SegmentSpec
from schemas.common import Segment

MAX_ATTEMPTS = 3
CALL_JITTER = 0.03  # an LLM call's complexity scatters around its task's
_MS = 1_000_000
_BY_END = itemgetter("end_time_unix_nano")
# SpanEvent v1 fields in contract order with their defaults: every record has all of them.
SPAN_TEMPLATE: dict = {
    "schema_version": 1, "trace_id": "", "span_id": "", "parent_span_id": None,
    "session_id": "", "agent": "", "task_type": None, "operation": "", "model": None,
    "route": None, "input_tokens": 0, "output_tokens": 0, "context_limit": None,
    "tool_name": None, "attempt": 1, "reflection": False, "status": "ok", "error_type": None,
    "cache_hit": None, "cache_age_s": None, "complexity": None, "session_end": False,
    "start_time_unix_nano": 0, "end_time_unix_nano": 0,
}


@dataclass(slots=True)
class SessionTruth:
    """What really happened in one session (kept out of the spans: not part of the contract)."""

    index: int
    session_id: str
    segment: str
    phase: str  # "before" / "after" the scenario's change point
    start_ns: int
    complexity: float  # the task's true complexity
    context_demand: int  # peak context the task needs (before any cap)
    tail: bool  # drawn from the heavy-context sub-population
    tool_steps: int  # tool calls planned (first attempts)
    llm_calls: int = 0  # all attempts
    misrouted_calls: int = 0  # sent to a model whose capability is below the call's complexity
    truncated_calls: int = 0  # input cut at the context limit
    errors: int = 0
    gave_up: int = 0  # calls that failed on every attempt
    calls_by_model: dict[str, int] = field(default_factory=dict)

    @property
    def misrouted(self) -> bool:
        return self.misrouted_calls > 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(slots=True)
class SimSession:
    index: int
    start_ns: int
    spans: list[dict]  # SpanEvent v1 records, by end time; the root (session_end) last
    truth: SessionTruth


@dataclass(slots=True)
class _Step:
    tools: list[str]
    parallel: bool
    reflect: bool
    delegate: bool


def poisson(rng: random.Random, lam: float) -> int:
    """Poisson draw (Knuth; normal approximation for large means).

    >>> poisson(random.Random(1), 0.0)
    0
    """
    if lam <= 0:
        return 0
    if lam > 40:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def choose_segment(rng: random.Random, segments: tuple[SegmentSpec, ...]) -> SegmentSpec:
    x = rng.random() * sum(s.weight for s in segments)
    for spec in segments:
        x -= spec.weight
        if x < 0:
            return spec
    return segments[-1]


def _plan_steps(rng: random.Random, p: Profile) -> list[_Step]:
    remaining, steps = poisson(rng, p.tools_mean), []
    while remaining > 0 or not steps:
        width = min(remaining, 1 + poisson(rng, p.group_mean - 1.0))
        tools = [rng.choice(p.tools) for _ in range(width)]
        steps.append(_Step(tools, width > 1 and rng.random() < p.parallel_p,
                           rng.random() < p.reflect_p, rng.random() < p.delegate_p))
        remaining -= width
    return steps


def _task(rng: random.Random, p: Profile) -> tuple[float, int, bool]:
    """(complexity, peak context demand, in the tail sub-population)."""
    if rng.random() < p.hard_p:
        complexity = 0.72 + 0.2 * rng.betavariate(2.0, 2.0)
    else:
        complexity = rng.betavariate(p.routine_a, p.routine_b)
    demand = rng.lognormvariate(math.log(p.context_median), p.context_sigma)
    tail = rng.random() < p.tail_p
    if tail:
        demand *= rng.uniform(p.tail_mult - 1.0, p.tail_mult + 1.0)
    return round(complexity, 4), max(1, int(demand)), tail


class _Run:
    """Lays one planned session out in event time, calling the router per LLM call."""

    def __init__(self, seed: int, index: int, spec: SegmentSpec, router: Router,
                 truth: SessionTruth, profile: Profile) -> None:
        self.p, self.router, self.truth = profile, router, truth
        self.segment = Segment(agent=spec.agent, task_type=spec.task_type)
        self.capability = capabilities()
        self.rng = random.Random(f"{seed}:{index}:exec")
        self.prefix, self.k, self.spans = f"{index % 2**40:010x}", 0, []
        self.base = {**SPAN_TEMPLATE, "trace_id": f"{seed % 2**64:016x}{index % 2**64:016x}",
                     "session_id": truth.session_id, "agent": spec.agent,
                     "task_type": spec.task_type}

    def span(self, op: str, parent: str | None, start: int, end: int, **extra) -> dict:
        self.k += 1
        d = self.base.copy()
        d.update(span_id=f"{self.prefix}{self.k:06x}", parent_span_id=parent, operation=op,
                 start_time_unix_nano=start, end_time_unix_nano=end, **extra)
        self.spans.append(d)
        return d

    def llm(self, parent: str, t: int, complexity: float, demand: int, reflection: bool) -> int:
        p, truth, rng = self.p, self.truth, self.rng
        model, route, limit = self.router(self.segment, complexity, demand)
        declared = complexity if p.declare_complexity else None
        for attempt in range(1, MAX_ATTEMPTS + 1):
            capable = self.capability.get(model, 1.0) >= complexity
            failed = not capable or rng.random() < p.llm_error_p
            tokens = demand if limit is None else min(demand, limit)
            out = 1 + int(rng.expovariate(1.0 / p.output_mean))
            end = t + int((0.25 + out * 0.012 + tokens * 1.5e-6) * 1e9)
            self.span("chat", parent, t, end, model=model, route=route, input_tokens=tokens,
                      output_tokens=out, context_limit=limit, attempt=attempt,
                      reflection=reflection, status="error" if failed else "ok",
                      error_type=None if not failed else
                      ("rate_limited" if capable else "task_failed"), complexity=declared)
            truth.llm_calls += 1
            truth.calls_by_model[model] = truth.calls_by_model.get(model, 0) + 1
            truth.misrouted_calls += not capable
            truth.truncated_calls += limit is not None and demand >= limit
            truth.errors += failed
            t = end
            if not failed:
                return t
            if not capable:  # escalate: ask for the most capable route
                model, route, limit = self.router(self.segment, 1.0, demand)
            t += 50 * _MS
        truth.gave_up += 1
        return t

    def tool(self, parent: str, name: str, t: int) -> int:
        p, rng = self.p, self.rng
        for attempt in range(1, MAX_ATTEMPTS + 1):
            hit = rng.random() < p.cache_p
            age = round(rng.expovariate(1.0 / p.cache_age_mean_s), 3) if hit else None
            failed = not hit and rng.random() < p.tool_error_p
            secs = 0.002 + 0.008 * rng.random() if hit else 0.05 + rng.expovariate(2.5)
            end = t + int(secs * 1e9)
            self.span("execute_tool", parent, t, end, tool_name=name, attempt=attempt,
                      status="error" if failed else "ok",
                      error_type="timeout" if failed else None, cache_hit=hit, cache_age_s=age)
            self.truth.errors += failed
            t = end
            if not failed:
                return t
            t += 20 * _MS
        self.truth.gave_up += 1
        return t

    def tools(self, parent: str, step: _Step, t: int) -> int:
        if step.parallel:
            return max(self.tool(parent, name, t) for name in step.tools)
        for name in step.tools:
            t = self.tool(parent, name, t) + 2 * _MS
        return t

    def run(self, steps: list[_Step], calls: list[tuple[float, int]], t0: int) -> list[dict]:
        declared = self.truth.complexity if self.p.declare_complexity else None
        root = self.span("invoke_agent", None, t0, t0, complexity=declared)
        rid, t, nxt = root["span_id"], t0 + 20 * _MS, iter(calls)
        for step in steps:
            plan = self.span("plan", rid, t, t)
            parent, t = plan["span_id"], t + 5 * _MS
            if step.delegate:
                sub = self.span("invoke_agent", parent, t, t)
                parent, t = sub["span_id"], t + 5 * _MS
            t = self.llm(parent, t, *next(nxt), reflection=False)
            t = self.tools(parent, step, t)
            if step.reflect:
                t = self.llm(parent, t, *next(nxt), reflection=True)
            if step.delegate:
                t = sub["end_time_unix_nano"] = t + 2 * _MS
            plan["end_time_unix_nano"] = t + 2 * _MS
            t += 12 * _MS
        t = self.llm(rid, t, *next(nxt), reflection=False)
        root.update(end_time_unix_nano=t + 5 * _MS, session_end=True)
        self.spans.sort(key=_BY_END)  # stable: ties keep creation order, the root stays last
        return self.spans


def _calls(rng: random.Random, steps: list[_Step], complexity: float,
           demand: int) -> list[tuple[float, int]]:
    """(complexity, context demand) of each planned LLM call; context grows over the session."""
    n = len(steps) + sum(s.reflect for s in steps) + 1
    out = []
    for i in range(n):
        c = min(1.0, max(0.0, complexity + rng.uniform(-CALL_JITTER, CALL_JITTER)))
        out.append((round(c, 4), max(1, int(demand * (0.35 + 0.65 * i / (n - 1))))))
    return out


def generate_session(sc: Scenario, seed: int, index: int, start_ns: int,
                     router: Router) -> SimSession:
    """Session ``index`` of scenario ``sc``: a function of (scenario, seed, index, router)
    and its arrival time ``start_ns`` (see ``app.simulate.generator.arrivals``)."""
    rng = random.Random(f"{seed}:{index}")
    spec = choose_segment(rng, sc.segments)
    profile, phase = sc.profile_at(spec, index)
    complexity, demand, tail = _task(rng, profile)
    steps = _plan_steps(rng, profile)
    calls = _calls(rng, steps, complexity, demand)
    truth = SessionTruth(index=index, session_id=f"sess-{seed}-{index:07d}", segment=spec.key,
                         phase=phase, start_ns=start_ns, complexity=complexity,
                         context_demand=demand, tail=tail,
                         tool_steps=sum(len(s.tools) for s in steps))
    spans = _Run(seed, index, spec, router, truth, profile).run(steps, calls, start_ns)
    return SimSession(index=index, start_ns=start_ns, spans=spans, truth=truth)
