"""Evaluate assumptions, routing risk and load on today's workload and on the envelope.

*Now* is the recording projected with the identity envelope under the same caps, so the only
difference between the two sides is the what-if. Without a policy that is exactly the
recording; with one, it is today's workload under the policy's caps.

Assumptions are checked with ``app.loop.assumptions.check`` over exact ``MetricStats``
(``app.loop.observe``), the same check ``loadshape assumptions check`` makes.

>>> from app.envelope.recording import record
>>> from app.loop.assumptions import Assumption
>>> from schemas.span import SpanEvent
>>> rec = record(SpanEvent(trace_id="t", span_id=f"{i}.{k}", session_id=f"s{i}", agent="dev",
...                        operation="execute_tool", start_time_unix_nano=i * 10**9,
...                        end_time_unix_nano=i * 10**9 + 1)
...              for i in range(41) for k in range(1 + i % 5))      # fan-out 1..5
>>> a = Assumption(id="f", segment={"agent": "dev"}, metric="fanout", stat="p90",
...                op="<=", bound=6, why="a handful of tool calls")
>>> r = evaluate(rec, Envelope(usage=3.0, complexity=2.0), [a])
>>> v = r.verdicts[0]
>>> v.now.observed, v.projected.observed, v.status, r.breaks
(5.0, 10.0, 'breaks', True)
>>> round(r.now.load.sessions_per_s, 3), round(r.projected.load.sessions_per_s, 3)
(1.025, 3.075)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from app.envelope.model import Envelope, Projected, Routed, Router, project
from app.envelope.recording import Recording
from app.loop.assumptions import Assumption, AssumptionResult, check
from app.loop.observe import matching_stats, metric_stats
from app.loop.policy import route
from schemas.policy import RoutingPolicy
from schemas.session import SessionShape

# Per-segment P99s reported; context_demand is the uncapped demand, not a SessionShape metric.
KEY_METRICS = ("fanout", "llm_calls", "depth", "context_demand", "context_tokens",
               "context_utilization", "complexity", "truncations")


@dataclass(frozen=True, slots=True)
class Load:
    sessions_per_s: float | None  # None: the recording has no event-time extent
    spans_per_s: float | None
    tokens_per_s: float | None


@dataclass(frozen=True, slots=True)
class Risk:
    sessions: int
    truncation_rate: float | None  # sessions with a call at the cap; None: no cap known
    # None without a policy:
    misroute_complexity: float | None  # complexity above the routed model's capability
    misroute_context: float | None  # context demand above the routed model's window


@dataclass(frozen=True, slots=True)
class Side:
    load: Load
    overall: Risk
    segments: dict[str, tuple[Risk, dict[str, float | None]]]  # key -> (risk, P99s)


@dataclass(frozen=True, slots=True)
class Verdict:
    assumption: Assumption
    now: AssumptionResult
    projected: AssumptionResult

    @property
    def status(self) -> str:
        return {True: "holds", False: "breaks", None: "no_data"}[self.projected.holds]


@dataclass(frozen=True, slots=True)
class Report:
    envelope: Envelope
    policy_id: str | None
    recorded_sessions: int
    recorded_spans: int
    duration_s: float
    censored_sessions: int  # recorded demand hit the limit: projections are lower bounds
    verdicts: tuple[Verdict, ...]
    now: Side
    projected: Side

    @property
    def breaks(self) -> bool:
        return any(v.projected.holds is False for v in self.verdicts)


def policy_router(policy: RoutingPolicy) -> Router:
    """Route one session with ``app.loop.policy.route``, demand known (as the gateway may)."""
    def decide(segment, complexity: float, demand: int) -> Routed:
        d = route(policy, segment, complexity, demand)
        spec = policy.model(d.model)
        return Routed(d.model, spec.capability, d.context_cap, spec.context_window)
    return decide


def evaluate(recording: Recording, envelope: Envelope, assumptions: Sequence[Assumption],
             policy: RoutingPolicy | None = None) -> Report:
    router = None if policy is None else policy_router(policy)
    now = project(recording, Envelope(seed=envelope.seed), router)
    projected = project(recording, envelope, router)
    now_shapes = [p.shape for p in now]
    proj_shapes = [p.shape for p in projected]
    verdicts = tuple(
        Verdict(a, check(a, matching_stats(now_shapes, a.segment, a.metric)),
                check(a, matching_stats(proj_shapes, a.segment, a.metric)))
        for a in assumptions
    )
    duration = recording.duration_s
    return Report(
        envelope=envelope, policy_id=None if policy is None else policy.policy_id,
        recorded_sessions=len(recording.sessions), recorded_spans=recording.spans,
        duration_s=duration,
        censored_sessions=sum(s.censored for s in recording.sessions),
        verdicts=verdicts,
        now=_side(now, 1.0, duration),
        projected=_side(projected, envelope.usage, duration),
    )


def _side(sessions: Sequence[Projected], usage: float, duration_s: float) -> Side:
    by_segment: dict[str, list[Projected]] = {}
    for p in sessions:
        by_segment.setdefault(p.shape.segment.key, []).append(p)
    return Side(
        load=load(sessions, usage, duration_s),
        overall=risk(sessions),
        segments={k: (risk(v), p99s(v)) for k, v in sorted(by_segment.items())},
    )


def load(sessions: Sequence[Projected], usage: float, duration_s: float) -> Load:
    """Arrival-rate figures: per-session totals times ``usage`` per recorded second."""
    if duration_s <= 0:
        return Load(None, None, None)
    per_s = usage / duration_s
    return Load(len(sessions) * per_s, sum(p.shape.spans for p in sessions) * per_s,
                sum(p.tokens for p in sessions) * per_s)


def risk(sessions: Sequence[Projected]) -> Risk:
    n = len(sessions)
    capped = [p.shape for p in sessions if p.shape.context_limit is not None]
    routed = [p for p in sessions if p.routed is not None]
    return Risk(
        sessions=n,
        truncation_rate=_share(s.truncations > 0 for s in capped) if capped else None,
        misroute_complexity=_share(p.shape.complexity > p.routed.capability for p in routed)
        if routed else None,
        misroute_context=_share(p.demand > p.routed.window for p in routed) if routed else None,
    )


def _share(flags: Iterable[bool]) -> float:
    flags = list(flags)
    return sum(flags) / len(flags) if flags else 0.0


def p99s(sessions: Sequence[Projected]) -> dict[str, float | None]:
    out = {}
    for m in KEY_METRICS:
        values = [p.demand for p in sessions] if m == "context_demand" else _values(
            (p.shape for p in sessions), m)
        stats = metric_stats(values)
        out[m] = None if stats is None else stats.p99
    return out


def _values(shapes: Iterable[SessionShape], metric: str) -> list[float]:
    return [v for s in shapes if (v := s.metric(metric)) is not None]
