"""The closed loop over real Kafka: simulated agents route through the gateway client.

Each simulated session asks the ``GatewayClient`` (which consumes ``routing.recalibrations``
in the background) for its routing, then its spans go to ``agent.spans`` through the span
emitter. The worker turns them into alerts and signed recalibrations; once the gateway
applies one, later sessions are routed by it. The report compares the misroute rate of the
changed segments before the change, between change and recalibration, and after it; and,
per phase, the rate the same sessions would have had under the initial policy (a paired
comparison: the phase between change and recalibration may be a few dozen sessions).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from app.emitter import SpanEmitter
from app.loop.closed_loop import gateway_router
from app.loop.gateway_client import GatewayClient
from app.simulate.agents import generate_session
from app.simulate.generator import arrivals
from app.simulate.routing import policy_router
from app.simulate.scenarios import build


@dataclass
class LiveReport:
    change_session: int
    sessions: int = 0
    versions: dict[int, int] = field(default_factory=dict)  # version -> first session routed by it
    counts: dict[str, list[int]] = field(default_factory=dict)  # phase -> [sessions, misrouted]
    # the same sessions had the initial policy routed them: phase -> [sessions, misrouted]
    initial_counts: dict[str, list[int]] = field(default_factory=dict)
    emitter: dict = field(default_factory=dict)

    def add(self, phase: str, misrouted: bool, misrouted_initially: bool) -> None:
        for counts, hit in ((self.counts, misrouted), (self.initial_counts, misrouted_initially)):
            row = counts.setdefault(phase, [0, 0])
            row[0] += 1
            row[1] += int(hit)

    def rates(self, initial: bool = False) -> dict[str, float | None]:
        counts = self.initial_counts if initial else self.counts
        return {p: (m / n if n else None) for p, (n, m) in counts.items()}

    def to_dict(self) -> dict:
        return {"change_session": self.change_session, "sessions": self.sessions,
                "recalibrations_applied": max(0, len(self.versions) - 1),
                "first_session_by_version": self.versions, "misroute_rate": self.rates(),
                "misroute_rate_initial_policy": self.rates(initial=True),
                "counts": self.counts, "emitter": self.emitter}


def _phase(index: int, change: int, version: int, initial_version: int) -> str:
    if index < change:
        return "before_change"
    return "after_change_before_recalibration" if version == initial_version else "after_recalibration"


async def run_live_loop(settings, *, scenario: str = "dev-to-support", sessions: int = 4000,
                        seed: int = 7, rate: float = 200.0,
                        say: Callable[[str], None] = print) -> LiveReport:
    """Run ``sessions`` simulated sessions at ``rate`` per wall second behind the gateway."""
    sc = build(scenario, sessions=sessions)
    changed = {spec.key for spec in sc.segments if spec.after is not None}
    client = GatewayClient.from_settings(settings)
    initial = client.policy.version
    await client.start(settings)
    emitter = SpanEmitter(settings, buffer_size=200_000)
    await emitter.start()
    report = LiveReport(change_session=sc.change_at)
    router = gateway_router(client.gateway)
    initial_router = policy_router(client.policy)  # the counterfactual: never recalibrated
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        for index, start in enumerate(arrivals(sc, seed)):
            if index >= sessions:
                break
            delay = t0 + index / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            version = client.policy.version
            if version not in report.versions:
                report.versions[version] = index
                if version != initial:
                    say(f"gateway: serving policy version {version} from session {index}")
            sim = generate_session(sc, seed, index, start, router)
            for span in sim.spans:
                emitter.emit(span)
            if not changed or sim.truth.segment in changed:
                # a session is a function of (scenario, seed, index, router): routed by the
                # initial policy it is the same session but for the routing
                alone = sim if version == initial else generate_session(sc, seed, index, start,
                                                                        initial_router)
                report.add(_phase(index, report.change_session, version, initial),
                           sim.truth.misrouted, alone.truth.misrouted)
            report.sessions += 1
    finally:
        await emitter.close()
        await client.stop()
        report.emitter = asdict(emitter.stats)
    return report
