"""The live recalibration step: per policy, fold segment updates from stage 2 into a proposal.

Stage 2 sends, keyed by policy id, a ``SegmentUpdate`` whenever a segment raised alerts and
every so many sessions: the segment's stats (``SegmentMonitor.recent_stats``: since its
latest confirmed change while the current window still holds older sessions) and its new
alerts. This step keeps the latest stats per segment, the recent alerts, the policy it last published and the
recalibrator's cool-down state, all as plain data (it lives in a Faust table), and returns a
signed recalibration when the recalibrator proposes one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from app.core.stats import MetricStats
from app.loop.recalibrator import RecalibratorConfig, RecalibratorState, recalibrate
from app.loop.signing import sign_recalibration
from schemas.alert import Alert
from schemas.policy import RoutingPolicy
from schemas.recalibration import RoutingRecalibration

MAX_ALERTS = 256  # recent alerts kept per policy (the recalibrator looks back one hour)


@dataclass(slots=True)
class SegmentUpdate:
    segment: str
    at_ns: int
    stats: dict[str, dict[str, float]]
    alerts: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, segment: str, at_ns: int, stats: dict[str, MetricStats],
           alerts: list[Alert]) -> SegmentUpdate:
        return cls(segment, at_ns, {m: asdict(s) for m, s in stats.items()},
                   [a.model_dump(mode="json") for a in alerts])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class PolicyEntry:
    policy: dict[str, Any]
    recalibrator: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PolicyEntry:
        return cls(**d)


class RecalibrationStep:
    """Owns no state. ``key`` None: proposals are published unsigned in ``propose`` mode."""

    def __init__(self, initial: RoutingPolicy, *, key: str | bytes | None,
                 mode: Literal["propose", "auto"] = "auto",
                 config: RecalibratorConfig = RecalibratorConfig()) -> None:
        self.initial, self.key, self.config = initial, key, config
        self.mode = mode if key is not None else "propose"

    def new(self) -> PolicyEntry:
        return PolicyEntry(policy=self.initial.model_dump(mode="json"))

    def apply(self, entry: PolicyEntry | None,
              update: SegmentUpdate) -> tuple[PolicyEntry, RoutingRecalibration | None]:
        entry = entry if entry is not None else self.new()
        entry.stats[update.segment] = update.stats
        entry.alerts = (entry.alerts + update.alerts)[-MAX_ALERTS:]
        policy = RoutingPolicy.model_validate(entry.policy)
        stats = {seg: {m: MetricStats(**s) for m, s in per.items()} for seg, per in entry.stats.items()}
        alerts = [Alert.model_validate(a) for a in entry.alerts]
        state = RecalibratorState.from_dict(entry.recalibrator)
        rec, state = recalibrate(policy, stats, alerts, update.at_ns, state, self.config, self.mode)
        entry.recalibrator = state.to_dict()
        if rec is None:
            return entry, None
        if self.key is not None:
            rec = sign_recalibration(rec, self.key)
        entry.policy = rec.policy.model_dump(mode="json")
        return entry, rec
