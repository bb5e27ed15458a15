"""Stage-2 fold: a segment's closed sessions -> rolling distributions, drift alerts.

``SegmentMonitor`` owns no state: ``fold(state, shape)`` folds one ``SessionShape`` into the
``SegmentState`` (one ``metricwatch.MetricState`` per metric of ``schemas.session.METRICS``
that has values) and returns the alerts it raised: ``drift`` when an episode opens,
``resolved`` when it ends (see ``app.core.episodes`` for the semantics). ``fold`` updates
the state in place and returns it. Time is the sessions' event time only.

>>> from schemas.common import Segment
>>> from schemas.session import SessionShape
>>> mon = SegmentMonitor(MonitorConfig(baseline_n=200, rebaseline_n=200))
>>> st = mon.initial(Segment(agent="support"))
>>> def shape(i, fanout):
...     return SessionShape(session_id=f"s{i}", segment=Segment(agent="support"),
...                         start_time_unix_nano=i * 10**9, end_time_unix_nano=i * 10**9 + 1,
...                         closed_by="session_end", spans=5, fanout=fanout)
>>> alerts = []
>>> for i in range(400):
...     st, out = mon.fold(st, shape(i, 3 + i % 3 if i < 300 else 11 + i % 3))
...     alerts += out
>>> [(a.kind, a.metric, a.severity) for a in alerts]
[('drift', 'fanout', 'page')]
>>> print(alerts[0].message)  # doctest: +NORMALIZE_WHITESPACE
support fanout drifted: p50 4 -> 12, p95 5 -> 13, p99 5 -> 13 (mean 4 -> 11.8)
over 5 sessions [adwin; tail max]
>>> mon.stats(st)["fanout"].n, mon.episodes(st)["fanout"]
(400, True)
>>> SegmentState.from_bytes(st.to_bytes()).to_bytes() == st.to_bytes()
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from app.core import metricwatch
from app.core.alerts import drift_alert, resolved_alert
from app.core.metricwatch import MetricState, Origin
from app.core.monitor_config import MonitorConfig
from app.core.sketch import Sketch
from app.core.stats import MetricStats
from schemas.alert import Alert
from schemas.common import Segment
from schemas.session import METRICS, SessionShape

__all__ = ["MonitorConfig", "OpenEpisode", "SegmentMonitor", "SegmentState"]
STATE_VERSION = 1


@dataclass(slots=True)
class SegmentState:
    segment: Segment
    sessions: int = 0  # sessions folded
    last_ns: int = 0  # latest event time seen
    metrics: dict[str, MetricState] | None = None
    # sessions folded before the latest confirmed change began (None: no change seen)
    changed_at: int | None = None
    # segment.key, derived (never stored): read once per session, and a model property costs
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.key = self.segment.key

    def to_dict(self) -> dict[str, Any]:
        return {"v": STATE_VERSION, "segment": self.segment.model_dump(),
                "sessions": self.sessions, "last_ns": self.last_ns,
                "metrics": {m: s.to_dict() for m, s in (self.metrics or {}).items()},
                "changed_at": self.changed_at}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SegmentState:
        if d.get("v") != STATE_VERSION:
            raise ValueError(f"unsupported segment state version {d.get('v')!r}")
        return cls(Segment(**d["segment"]), d["sessions"], d["last_ns"],
                   {m: MetricState.from_dict(s) for m, s in d["metrics"].items()},
                   d.get("changed_at"))  # absent from older state: no change seen

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_bytes(cls, raw: bytes) -> SegmentState:
        return cls.from_dict(orjson.loads(raw))


@dataclass(frozen=True, slots=True)
class OpenEpisode:
    metric: str
    alert_id: str
    detector: str
    severity: str
    phase: str  # rebaseline | settle
    opened_at: int  # event time of the drift alert


class SegmentMonitor:
    """The stage-2 fold; configuration only, no state."""

    def __init__(self, config: MonitorConfig | None = None) -> None:
        self.config = config or MonitorConfig()

    def initial(self, segment: Segment) -> SegmentState:
        return SegmentState(segment, metrics={})

    def fold(self, state: SegmentState, shape: SessionShape) -> tuple[SegmentState, list[Alert]]:
        key = state.key
        # stage 1 hands out one Segment object per segment: the same object needs no key
        if shape.segment is not state.segment and shape.segment.key != key:
            raise ValueError(f"session of {shape.segment.key!r} folded into {key!r}")
        cfg, metrics = self.config, state.metrics
        state.sessions += 1
        if shape.end_time_unix_nano > state.last_ns:  # max(), without the builtin's call
            state.last_ns = shape.end_time_unix_nano
        origin = Origin(key, shape.session_id, shape.end_time_unix_nano, state.last_ns)
        alerts: list[Alert] = []
        observe = metricwatch.observe
        # the field values by name: a SessionShape's (pydantic keeps them in __dict__) or a
        # SessionValues' (its __dict__ is the fields): a dict read, not a getattr, per metric
        values = shape.__dict__
        for name in METRICS:
            value = values[name]  # shape.metric(name), inline
            if value is None:
                continue
            ms = metrics.get(name)
            if ms is None:
                ms = metrics[name] = MetricState.initial(cfg)
            out = observe(ms, float(value), name, origin, cfg)
            if out is not None:
                alerts.append(self._alert(state.segment, name, out, shape))
                if out.kind == "drift":
                    state.changed_at = max(0, state.sessions - out.verdict.window)
                    for other in metrics.values():
                        metricwatch.hint(other, out.verdict.window)
        return state, alerts

    @staticmethod
    def _alert(segment: Segment, metric: str, out: metricwatch.Outcome,
               shape: SessionShape) -> Alert:
        at, sid = shape.end_time_unix_nano, shape.session_id
        if out.kind == "drift":
            return drift_alert(segment=segment, metric=metric, ep=out.episode,
                               verdict=out.verdict, baseline=out.baseline, detected_at=at,
                               session_id=sid)
        return resolved_alert(segment=segment, metric=metric, closed=out.episode,
                              new=out.current, detected_at=at, session_id=sid)

    def stats(self, state: SegmentState, window: str = "current") -> dict[str, MetricStats]:
        """Per metric: n/mean/p50/p90/p95/p99/max of the current window or the baseline."""
        out = {}
        for name in state.metrics or {}:
            st = self.metric_stats(state, name, window)
            if st is not None:
                out[name] = st
        return out

    def recent_stats(self, state: SegmentState, min_n: int = 30) -> dict[str, MetricStats]:
        """Per metric: the stats a recalibration acts on. Since the segment's latest confirmed
        change began (the last as many values as sessions since, but at least ``min_n``: the
        recalibrator judges no fewer, ``RecalibratorConfig.min_samples``), while the current
        window still holds sessions from before it: 30 sessions into a change, a window of
        1,024 is 97% the old shape, and a policy cut to that would be cut to the old
        workload. The current window once it is all new.

        >>> mon = SegmentMonitor(MonitorConfig(baseline_n=200, rebaseline_n=200))
        >>> st = mon.initial(Segment(agent="support"))
        >>> for i in range(300):
        ...     st, _ = mon.fold(st, SessionShape(
        ...         session_id=f"s{i}", segment=Segment(agent="support"), spans=5,
        ...         start_time_unix_nano=i, end_time_unix_nano=i + 1, closed_by="session_end",
        ...         fanout=3 + i % 3 if i < 250 else 11 + i % 3))
        >>> st.sessions - st.changed_at, mon.recent_stats(st)["fanout"].p50, mon.stats(st)["fanout"].p50
        (50, 12.0, 4.0)
        """
        cfg = self.config
        since = None if state.changed_at is None else max(state.sessions - state.changed_at, min_n)
        out = {}
        for name, ms in (state.metrics or {}).items():
            if since is not None and since < ms.window.n:
                out[name] = Sketch.of(ms.window.last(since), cfg.rel_acc, cfg.max_buckets).stats()
            elif (st := ms.window.stats()) is not None:
                out[name] = st
        return out

    def metric_stats(self, state: SegmentState, metric: str,
                     window: str = "current") -> MetricStats | None:
        """One metric's stats (None when it has no values / no frozen baseline yet)."""
        if window not in ("current", "baseline"):
            raise ValueError(f"window must be 'current' or 'baseline', got {window!r}")
        ms = (state.metrics or {}).get(metric)
        if ms is None:
            return None
        if window == "current":
            return ms.window.stats()
        return None if ms.baseline is None else ms.baseline.stats()

    def open_episodes(self, state: SegmentState) -> list[OpenEpisode]:
        return [OpenEpisode(name, ep.alert_id, ep.detector, ep.severity, ep.phase, ep.opened_ns)
                for name, ms in (state.metrics or {}).items()
                if (ep := ms.episode).is_open]

    def episodes(self, state: SegmentState) -> dict[str, bool]:
        """Metric -> is a drift episode open (a 0/1 gauge per metric)."""
        return {name: ms.episode.is_open for name, ms in (state.metrics or {}).items()}
