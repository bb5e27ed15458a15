"""Stage 2 step: a segment's closed sessions -> drift and assumption alerts.

bytes-in, bytes-out, shared by the worker and replay. One stored value per segment holds:
the event-time reorder buffer (so every run feeds the detectors the same sequence), the
segment monitor's state (sketches, detectors, episodes) and the assumption tracker's state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from app.core import reorder
from app.core.segment import MonitorConfig, SegmentMonitor, SegmentState
from app.loop.tracker import AssumptionTracker, TrackerState
from schemas.alert import Alert
from schemas.session import SessionShape

GAUGE_EVERY = 25  # sessions between quantile-gauge refreshes (reading sketches costs more than folding)


@dataclass(slots=True)
class Step2Result:
    state: bytes
    alerts: list[Alert] = field(default_factory=list)
    released: list[SessionShape] = field(default_factory=list)
    quantiles: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    episodes: dict[str, bool] = field(default_factory=dict)
    assumptions: dict[str, bool] = field(default_factory=dict)


class SegmentStep:
    """Owns no state: ``apply(stored, shape)`` and ``drain(stored)`` return new stored bytes."""

    def __init__(self, monitor: SegmentMonitor, *, lateness_ns: int,
                 tracker: AssumptionTracker | None = None) -> None:
        self.monitor, self.lateness_ns, self.tracker = monitor, lateness_ns, tracker

    @classmethod
    def from_settings(cls, settings, monitor_config: MonitorConfig | None = None) -> SegmentStep:
        tracker = None
        if settings.assumptions_file is not None:
            from app.loop.assumptions import load_assumptions

            tracker = AssumptionTracker(load_assumptions(settings.assumptions_file))
        return cls(SegmentMonitor(monitor_config), lateness_ns=int(settings.reorder_lateness_s * 1e9),
                   tracker=tracker)

    def apply(self, stored: bytes | None, shape: SessionShape, watermark_ns: int | None) -> Step2Result:
        """Buffer ``shape``; release what all sources' ``watermark_ns`` - lateness has passed."""
        buf, seg, trk = self._load(stored, shape)
        key = (shape.end_time_unix_nano, shape.session_id)
        buf, late = reorder.push(buf, key, _compact(shape))
        buf, ready = reorder.release(buf, self._bound(watermark_ns))
        return self._fold(buf, seg, trk, [SessionShape.model_validate(d) for d in late + ready])

    def advance(self, stored: bytes, watermark_ns: int | None) -> Step2Result:
        """Event time moved on (a heartbeat): release what is now safe."""
        buf, seg, trk = self._load(stored, None)
        buf, ready = reorder.release(buf, self._bound(watermark_ns))
        return self._fold(buf, seg, trk, [SessionShape.model_validate(d) for d in ready])

    def drain(self, stored: bytes) -> Step2Result:
        buf, seg, trk = self._load(stored, None)
        buf, ready = reorder.drain(buf)
        return self._fold(buf, seg, trk, [SessionShape.model_validate(d) for d in ready])

    def pending(self, stored: bytes) -> int:
        return len(orjson.loads(stored)["reorder"]["heap"])

    def _bound(self, watermark_ns: int | None) -> int | None:
        return None if watermark_ns is None else watermark_ns - self.lateness_ns

    def _fold(self, buf, seg, trk, shapes: list[SessionShape]) -> Step2Result:
        res = Step2Result(state=b"")
        for shape in shapes:
            seg, alerts = self.monitor.fold(seg, shape)
            res.alerts.extend(alerts)
            res.released.append(shape)
            if self.tracker is not None and self.tracker.applicable(shape.segment):
                stats = self.monitor.stats(seg)
                trk, broken = self.tracker.observe(trk, shape.segment, stats,
                                                   shape.end_time_unix_nano, shape.session_id)
                res.alerts.extend(broken)
        if res.released:
            self._gauges(seg, trk, res)
        res.state = orjson.dumps({"reorder": buf.to_dict(), "monitor": seg.to_dict(),
                                  "tracker": trk.to_dict()})
        return res

    def _gauges(self, seg, trk, res: Step2Result) -> None:
        if seg.sessions % GAUGE_EVERY < len(res.released) or res.alerts:
            for metric, s in self.monitor.stats(seg).items():
                res.quantiles[metric] = (s.p50, s.p95, s.p99)
            res.episodes = self.monitor.episodes(seg)
        if self.tracker is not None:
            res.assumptions = {k: bool(v) for k, v in self.tracker.gauges(trk).items()}

    def _load(self, stored: bytes | None, shape: SessionShape | None):
        if stored is None:
            assert shape is not None
            return reorder.ReorderState(), self.monitor.initial(shape.segment), TrackerState()
        d = orjson.loads(stored)
        return (reorder.ReorderState.from_dict(d["reorder"]), SegmentState.from_dict(d["monitor"]),
                TrackerState.from_dict(d["tracker"]))


def _compact(shape: SessionShape) -> dict:
    """The shape as plain data for the reorder buffer (defaults left out: smaller state)."""
    return shape.model_dump(mode="json", exclude_defaults=True)
