"""Closed-loop simulation: simulated agents routed by a gateway that the core recalibrates.

Pure (no Kafka, no clock, no I/O): time is the simulated event time. Per session, in
arrival order:

1. every span that ended before the session starts is fed to the worker's core
   (``app.replay.Replayer``: ``SessionStep`` + ``SegmentStep`` with the segment monitor and
   an ``AssumptionTracker``), so the loop knows exactly what a live worker would know then;
2. new alerts mark the policy *pending*; a pending policy is recalibrated
   (``app.loop.recalibrator.recalibrate``) as soon as it is out of the recalibrator's
   cool-down, from the stage-2 monitor's ``recent_stats`` of each segment (the current
   window, or the sessions since the segment's latest confirmed change while the window
   still holds older ones), then signed and offered to the gateway as raw bytes
   (signature, version and guardrails are checked exactly as live);
3. the session is generated with ``gateway.route`` as its router: every LLM call of the
   session is routed by the policy served when the session starts.

The simulator's per-session ground truth says whether a session was misrouted (an LLM call
sent to a model whose capability is below the call's complexity); ``app.loop.loop_report``
turns a ``LoopResult`` into the report.

>>> from app.simulate import build
>>> res = run_closed_loop(build("steady", sessions=40), seed=1)
>>> len(res.sessions), res.offers, res.alerts
(40, [], [])
>>> res.sessions[0].served_version
1
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from app.core.segment import MonitorConfig, SegmentMonitor
from app.core.stage1 import SessionStep
from app.core.stage2 import SegmentStep
from app.core.stats import MetricStats
from app.loop.assumptions import Assumption, load_assumptions
from app.loop.gateway import Features, Gateway
from app.loop.policy import EXAMPLE_POLICY, load_policy
from app.loop.recalibrator import NS, RecalibratorConfig, RecalibratorState, recalibrate
from app.loop.signing import Key, sign_recalibration
from app.loop.tracker import AssumptionTracker, TrackerConfig
from app.replay import Replayer, ReplaySinks
from app.simulate.agents import SessionTruth, generate_session
from app.simulate.generator import arrivals
from app.simulate.routing import Decision, Router
from app.simulate.scenarios import Scenario
from schemas.alert import Alert
from schemas.common import Segment
from schemas.policy import RoutingPolicy
from schemas.span import SpanEvent

EXAMPLE_ASSUMPTIONS = EXAMPLE_POLICY.parent / "assumptions.yaml"
# Used when no LOADSHAPE_RECALIBRATION_KEY is set: the loop signs and the gateway verifies,
# so acceptance still goes through the signature check; the report says which key signed.
DEMO_KEY = "loadshape-closed-loop-demo-key"


@dataclass(frozen=True, slots=True)
class LoopConfig:
    mode: Literal["propose", "auto"] = "auto"
    recalibrator: RecalibratorConfig = RecalibratorConfig()
    tracker: TrackerConfig = TrackerConfig()
    monitor: MonitorConfig | None = None  # None: the worker's defaults
    idle_timeout_s: float = 300.0  # settings.session_idle_timeout_s
    lateness_s: float = 30.0  # settings.reorder_lateness_s


@dataclass(frozen=True, slots=True)
class Offer:
    """One signed recalibration offered to the gateway, and its verdict."""

    message: str  # the signed JSON, exactly as offered
    version: int
    at_ns: int  # event time of the offer (= the recalibration's created_at)
    before_session: int  # index of the first session routed after the offer
    accepted: bool
    reason: str
    changes: tuple[dict, ...]
    cause: tuple[str, ...]  # ids of the alerts that caused it


@dataclass(frozen=True, slots=True)
class RoutedSession:
    truth: SessionTruth
    served_version: int  # the policy version that routed the session


@dataclass(slots=True)
class LoopResult:
    scenario: Scenario
    seed: int
    policy_id: str
    sessions: list[RoutedSession] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    offers: list[Offer] = field(default_factory=list)
    gateway_counters: dict = field(default_factory=dict)
    key_source: str = "demo"


def gateway_router(gateway: Gateway) -> Router:
    """The simulator's router signature over ``gateway.route`` (context demand known)."""
    def decide(segment: Segment, complexity: float, context_demand: int) -> Decision:
        d = gateway.route(Features(segment.agent, segment.task_type, complexity, context_demand))
        return d.model, d.rule, d.context_cap

    return decide


class ClosedLoop:
    """One run's state: the core (replayer), the gateway, the recalibrator's state."""

    def __init__(self, sc: Scenario, seed: int, policy: RoutingPolicy,
                 assumptions: Sequence[Assumption], key: Key, config: LoopConfig,
                 span_sink: Callable[[dict], None] | None = None) -> None:
        self.sc, self.seed, self.key, self.cfg = sc, seed, key, config
        self.span_sink = span_sink
        self.gateway = Gateway(policy, key)
        self.monitor = SegmentMonitor(config.monitor)
        tracker = AssumptionTracker(tuple(assumptions), config.tracker)
        step2 = SegmentStep(self.monitor, lateness_ns=int(config.lateness_s * NS), tracker=tracker)
        timeout = int(config.idle_timeout_s * NS)
        self.result = LoopResult(sc, seed, policy.policy_id)
        self.replayer = Replayer(SessionStep(idle_timeout_ns=timeout), step2,
                                 sinks=ReplaySinks(alert=self.result.alerts.append))
        self.rstate = RecalibratorState()
        self.pending = False  # alerts arrived since the last recalibration attempt
        self.heap: list[tuple[int, int, int, dict]] = []  # (end, session, seq, span record)

    def run(self) -> LoopResult:
        router = gateway_router(self.gateway)
        for index, start in enumerate(arrivals(self.sc, self.seed)):
            self.feed_until(start)
            self.maybe_recalibrate(start, index)
            sim = generate_session(self.sc, self.seed, index, start, router)
            self.result.sessions.append(RoutedSession(sim.truth, self.gateway.policy.version))
            for seq, rec in enumerate(sim.spans):
                heapq.heappush(self.heap, (rec["end_time_unix_nano"], index, seq, rec))
        self.feed_until(None)
        self.replayer.finish(flush=True)
        self.result.gateway_counters = self.gateway.counters
        return self.result

    def feed_until(self, t_ns: int | None) -> None:
        """Feed every buffered span that ended before ``t_ns`` (None: all of them)."""
        heap, seen, sink = self.heap, len(self.result.alerts), self.span_sink
        while heap and (t_ns is None or heap[0][0] < t_ns):
            rec = heapq.heappop(heap)[3]
            if sink is not None:
                sink(rec)
            self.replayer.feed(SpanEvent.model_construct(**rec))
        self.pending |= len(self.result.alerts) > seen

    def maybe_recalibrate(self, now_ns: int, index: int) -> None:
        policy = self.gateway.policy
        last = self.rstate.last_proposal_ns.get(policy.policy_id)
        cooling = last is not None and now_ns - last < self.cfg.recalibrator.cooldown_s * NS
        if not self.pending or cooling:
            return
        self.pending = False
        rec, self.rstate = recalibrate(policy, self.stats(), self.result.alerts, now_ns,
                                       self.rstate, self.cfg.recalibrator, self.cfg.mode)
        if rec is None:
            return
        raw = sign_recalibration(rec, self.key).model_dump_json()
        verdict = self.gateway.offer(raw)
        changes = tuple(c.model_dump(mode="json") for c in rec.changes)
        self.result.offers.append(Offer(raw, rec.version, now_ns, index, verdict.accepted,
                                        verdict.reason, changes, tuple(rec.cause)))

    def stats(self) -> dict[str, dict[str, MetricStats]]:
        """Segment key -> metric -> the stage-2 monitor's ``recent_stats``."""
        return {key: self.monitor.recent_stats(entry.monitor)
                for key, entry in sorted(self.replayer.segments.items())}


def run_closed_loop(sc: Scenario, seed: int = 0, *, policy: RoutingPolicy | None = None,
                    assumptions: Sequence[Assumption] | None = None, key: Key | None = None,
                    config: LoopConfig = LoopConfig(),
                    span_sink: Callable[[dict], None] | None = None) -> LoopResult:
    """Run ``sc`` behind a gateway serving ``policy`` (default: the reference policy, checked
    against the reference assumptions), signing with ``key`` (default: ``DEMO_KEY``).
    ``span_sink`` receives every span record as it is fed to the core (end-time order)."""
    policy = policy or load_policy(EXAMPLE_POLICY)
    assumptions = load_assumptions(EXAMPLE_ASSUMPTIONS) if assumptions is None else assumptions
    loop = ClosedLoop(sc, seed, policy, assumptions, DEMO_KEY if key is None else key, config,
                      span_sink)
    loop.result.key_source = "demo" if key is None else "given"
    return loop.run()
