"""Track declared assumptions over a segment's live distribution and raise episodes.

Pure and deterministic: state is explicit (``TrackerState``, JSON-serialisable via
``to_dict``/``from_dict``), time is the event time of the session that was just folded, and
alert ids are content hashes. One ``assumption_broken`` alert per episode; the episode ends
with a ``resolved`` alert once the assumption holds again *with margin* for
``resolve_after`` consecutive checks (hysteresis, so a value hovering at the bound does not
flap).

>>> from app.loop.assumptions import Assumption
>>> a = Assumption(id="cap", segment={"agent": "support"}, metric="context_tokens",
...                stat="p95", op="<=", bound=16000, why="we cap context at 16K")
>>> t = AssumptionTracker((a,), TrackerConfig(min_samples=30, resolve_after=2))
>>> def st(p95, n=40):
...     return {"context_tokens": MetricStats(n, p95, p95, p95, p95, p95, p95)}
>>> seg = Segment(agent="support")
>>> state, alerts = t.observe(TrackerState(), seg, st(40000), 10, "s1")
>>> [(x.kind, x.severity, x.observed, x.since) for x in alerts]
[('assumption_broken', 'page', 40000.0, 10)]
>>> state, alerts = t.observe(state, seg, st(41000), 11, "s2")   # same episode: silent
>>> alerts
[]
>>> state, _ = t.observe(state, seg, st(9000), 12, "s3")
>>> state, alerts = t.observe(state, seg, st(9000), 13, "s4")
>>> [(x.kind, x.resolved_kind) for x in alerts]
[('resolved', 'assumption_broken')]
>>> t.gauges(state)
{'cap': 1}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from itertools import pairwise
from typing import Any, NamedTuple

from app.core.stats import MetricStats, SegmentStats
from app.loop.assumptions import OPS, Assumption
from schemas.alert import Alert
from schemas.common import DistributionSummary, Segment

DETECTOR = "assumption"


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    min_samples: int = 30  # judge only a distribution of at least this many sessions
    margin: float = 0.05  # relative to |bound|: must hold by this much to count as recovered
    resolve_after: int = 10  # consecutive recovered checks before the episode is resolved


@dataclass(frozen=True, slots=True)
class Episode:
    alert_id: str
    since: int
    ok_streak: int = 0


@dataclass(frozen=True, slots=True)
class TrackerState:
    """Open episodes, and the assumptions judged so far (enough samples), keyed
    ``"<assumption id>@<segment key>"``."""

    open: dict[str, Episode] = field(default_factory=dict)
    judged: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"open": {k: asdict(v) for k, v in sorted(self.open.items())},
                "judged": list(self.judged)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrackerState:
        return cls(open={k: Episode(**v) for k, v in data.get("open", {}).items()},
                   judged=tuple(data.get("judged", ())))


class AssumptionTracker:
    """Immutable set of assumptions plus the rules for opening and closing episodes."""

    def __init__(self, assumptions: tuple[Assumption, ...], config: TrackerConfig = TrackerConfig()):
        self.assumptions = tuple(assumptions)
        self.config = config
        # (agent, task_type) -> (applicable assumptions, their checks): derived, bounded
        self._plans: dict[tuple[str, str | None], tuple[tuple[Assumption, ...], tuple[_Check, ...]]] = {}
        self._sorted: dict[int, tuple[str, ...]] = {}  # id -> a judged tuple known to be sorted
        self._last: tuple[Segment | None, tuple] = (None, ((), ()))  # the latest _plan

    def applicable(self, segment: Segment) -> tuple[Assumption, ...]:
        """Assumptions declared for ``segment`` (an agent-only one covers its task types)."""
        return self._plan(segment)[0]

    def _plan(self, segment: Segment) -> tuple[tuple[Assumption, ...], tuple[_Check, ...]]:
        last = self._last
        if last[0] is segment:  # stage 2 asks for one session twice (applicable, observe)
            return last[1]
        ident = (segment.agent, segment.task_type)  # not .key: agent "a/b" != agent "a" + "b"
        found = self._plans.get(ident)
        if found is None:
            mine = tuple(a for a in self.assumptions if a.segment.matches(segment))
            found = (mine, tuple(_Check(a, f"{a.id}@{segment.key}", a.metric, a.stat,
                                        OPS[a.op], a.threshold()) for a in mine))
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
            self._plans[ident] = found
        self._last = (segment, found)  # holds the segment: its identity stays its own
        return found

    def observe(
        self, state: TrackerState, segment: Segment, stats: SegmentStats, at_ns: int, session_id: str
    ) -> tuple[TrackerState, list[Alert]]:
        """Re-check ``segment``'s assumptions after one session; return new state and alerts.

        ``stats`` maps metric -> ``MetricStats``; if it also has ``read(metric, stat) ->
        (n, value) | None`` (stage 2's lazy stats), that is used to check an assumption, and
        full stats are computed only for an alert. ``state`` itself is returned when nothing
        changed (it is immutable)."""
        assumptions, checks = self._plan(segment)
        if not assumptions:
            return self._normal(state), []
        read = getattr(stats, "read", None)
        cfg = self.config
        min_n = cfg.min_samples
        episodes: dict[str, Episode] | None = None  # copied from state.open on the first change
        judged: set[str] | None = None  # likewise state.judged
        alerts: list[Alert] = []
        for a, key, metric, stat_name, cmp, bound in checks:
            if read is not None:
                got = read(metric, stat_name)
                if got is None:
                    continue  # no values: nothing judged, nothing to open or close
                n, observed = got
            else:
                stat = stats.get(metric)
                if stat is None:
                    continue
                n = stat.n
                observed = stat.get(stat_name) if n else 0.0
            if n >= min_n and key not in (state.judged if judged is None else judged):
                if judged is None:
                    judged = set(state.judged)
                judged.add(key)
            if n == 0 or n < min_n:
                continue  # too little evidence to open or close an episode
            ep = (state.open if episodes is None else episodes).get(key)
            alert = None
            if ep is None:
                if cmp(observed, bound):  # a.holds_for(observed)
                    continue
                alert = broken_alert(a, segment, stats.get(metric), at_ns, session_id)
                new_ep = Episode(alert_id=alert.alert_id, since=at_ns)
            elif not a.holds_for(observed, abs(a.bound) * cfg.margin):
                if ep.ok_streak == 0:
                    continue  # replace(ep, ok_streak=0) == ep
                new_ep = replace(ep, ok_streak=0)
            elif ep.ok_streak + 1 < cfg.resolve_after:
                new_ep = replace(ep, ok_streak=ep.ok_streak + 1)
            else:
                alert = resolved_alert(a, segment, stats.get(metric), ep, at_ns, session_id)
                new_ep = None
            if episodes is None:
                episodes = dict(state.open)
            if new_ep is None:
                episodes.pop(key, None)
            else:
                episodes[key] = new_ep
            if alert is not None:
                alerts.append(alert)
        if episodes is None and judged is None:
            return self._normal(state), alerts
        return TrackerState(open=dict(state.open) if episodes is None else episodes,
                            judged=tuple(sorted(set(state.judged) if judged is None else judged))), alerts

    def _normal(self, state: TrackerState) -> TrackerState:
        """``state``, or (only if its ``judged`` is not sorted and unique, as ``observe`` always
        leaves it) the same state with ``judged`` sorted and unique."""
        j = state.judged
        if len(j) < 2 or id(j) in self._sorted:
            return state
        if all(x < y for x, y in pairwise(j)):
            if len(self._sorted) >= _MAX_PLANS:
                self._sorted.clear()
            self._sorted[id(j)] = j  # held, so the id stays this tuple's
            return state
        return TrackerState(open=dict(state.open), judged=tuple(sorted(set(j))))

    def gauges(self, state: TrackerState) -> dict[str, int]:
        """Gauge per assumption judged in ``state``: 1 holds, 0 broken (an open episode).

        Only judged ones: with one state per segment, a segment must not report 1 for an
        assumption about another segment.
        """
        broken = {k.partition("@")[0] for k in state.open}
        ids = sorted({k.partition("@")[0] for k in state.judged} | broken)
        return {i: int(i not in broken) for i in ids}


_MAX_PLANS = 4096  # segments whose applicable assumptions are cached


class _Check(NamedTuple):
    """One applicable assumption as its check reads it (per session: no model attribute
    reads, no ``holds_for`` call on the common path)."""

    assumption: Assumption
    key: str  # "<assumption id>@<segment key>"
    metric: str
    stat: str
    cmp: Callable[[float, float], bool]  # OPS[op]
    bound: float  # threshold(): cmp(observed, bound) is holds_for(observed)


def content_id(*parts: Any) -> str:
    """Deterministic alert id: a hash of what the alert is about.

    >>> content_id("a", 1) == content_id("a", 1) != content_id("a", 2)
    True
    """
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def broken_alert(
    a: Assumption, segment: Segment, stats: MetricStats, at_ns: int, session_id: str
) -> Alert:
    observed = stats.get(a.stat)
    message = (
        f"Workload assumption broken: {a.sentence} no longer holds "
        f"(observed {a.stat} = {observed:g} over n={stats.n} sessions). "
        f"It was assumed because: {a.why} "
        "This needs an architectural review, not a budget warning."
    )
    return Alert(
        alert_id=content_id("assumption_broken", a.id, segment.key, at_ns, session_id),
        kind="assumption_broken", metric=a.metric, segment=segment, detector=DETECTOR,
        severity="page", detected_at=at_ns, current=_summary(stats),
        assumption=a.model_dump(mode="json"), message=message,
        observed=observed, since=at_ns, session_id=session_id, assumption_id=a.id,
    )


def resolved_alert(
    a: Assumption, segment: Segment, stats: MetricStats, ep: Episode, at_ns: int, session_id: str
) -> Alert:
    observed = stats.get(a.stat)
    return Alert(
        alert_id=content_id("resolved", ep.alert_id, at_ns, session_id),
        kind="resolved", metric=a.metric, segment=segment, detector=DETECTOR,
        severity="info", detected_at=at_ns, current=_summary(stats),
        assumption=a.model_dump(mode="json"), resolves=ep.alert_id,
        resolved_kind="assumption_broken",
        message=f"Workload assumption holds again: {a.sentence} (observed {a.stat} = {observed:g}).",
        observed=observed, since=ep.since, session_id=session_id, assumption_id=a.id,
    )


def _summary(stats: MetricStats) -> DistributionSummary:
    return DistributionSummary(**stats.summary())
