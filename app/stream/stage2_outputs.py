"""What stage 2 does with a segment step's result outside the state: alerts to Kafka,
metrics, stage 3 (recalibration) updates.

An alert send is remembered per segment until that segment's next checkpoint
(``take_sends``): the checkpoint awaits them first, since a state that says an alert was sent
must not reach Kafka before the alert (a kill -9 in between would lose it).
"""

from __future__ import annotations

import logging

from app.loop.misroute import misrouted
from app.loop.recalibration_step import SegmentUpdate
from app.stream.sparse_warning import crossed_power_of_two

log = logging.getLogger(__name__)

UPDATE_EVERY = 50  # sessions of a segment between stats updates to stage 3


class SegmentOutputs:
    def __init__(self, metrics, alerts_topic, step, *, updates=None,
                 capability: dict[str, float] | None = None) -> None:
        self.metrics, self.alerts_topic, self.step = metrics, alerts_topic, step
        self.updates = updates  # stage 3 (recalibration) sink, or None when no policy is set
        self.capability = capability or {}  # model -> capability, from the policy's catalog
        self.sending: dict[bytes, list] = {}  # segment -> its alert sends not known delivered

    def take_sends(self, seg: bytes) -> list | None:
        """The segment's alert sends since its last checkpoint (the caller awaits them)."""
        return self.sending.pop(seg, None)

    def forget(self, seg: bytes) -> None:
        self.sending.pop(seg, None)

    async def emit(self, seg: bytes, result) -> None:
        seg_key = seg.decode()
        metrics = self.metrics
        for released in result.released:
            metrics.observe_session(seg_key, released)
            if self.capability and misrouted(released, self.capability):
                metrics.count_misroute(seg_key)
        if result.spilled:
            self._spilled(seg_key, result)
        if result.late:
            metrics.count_late_sessions(seg_key, result.late)
        if result.copies:
            metrics.count_copies(seg_key, result.copies)
        for alert in result.alerts:
            metrics.count_alert_published(alert.kind)
            sent = await self.alerts_topic.send(key=seg, value=alert.model_dump_json().encode())
            self.sending.setdefault(seg, []).append(sent)
        self._gauges(seg_key, result)
        await self._update_policy(seg_key, result)

    def _spilled(self, seg_key: str, result) -> None:
        self.metrics.count_spilled(seg_key, result.spilled)
        total = result.entry.buffer.spilled
        if crossed_power_of_two(total - result.spilled, total):
            log.warning("stage 2: segment %r reorder buffer full (reorder_max_held=%d): %d "
                        "sessions released unordered so far (docs/RUNBOOK.md#worker-down)",
                        seg_key, self.step.max_held, total)

    async def _update_policy(self, seg_key: str, result) -> None:
        """Feed stage 3: on alerts, and every UPDATE_EVERY sessions of the segment."""
        if self.updates is None or not result.released:
            return
        monitor = result.entry.monitor
        if result.alerts or monitor.sessions % UPDATE_EVERY < len(result.released):
            at = max(s.end_time_unix_nano for s in result.released)
            stats = self.step.monitor.recent_stats(monitor)
            await self.updates(SegmentUpdate.of(seg_key, at, stats, result.alerts))

    def _gauges(self, seg_key: str, result) -> None:
        for metric, q in result.quantiles.items():
            self.metrics.set_quantiles(seg_key, metric, *q)
        for metric, is_open in result.episodes.items():
            self.metrics.set_drift_episode(seg_key, metric, is_open)
        for assumption_id, holds in result.assumptions.items():
            self.metrics.set_assumption(assumption_id, seg_key, holds)
