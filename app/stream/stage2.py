"""Stage 2 shell: SessionShapes keyed by segment -> segment table -> alerts.

The segment's state (reorder buffer, sketches, detectors, episodes, assumption checks)
is one bytes value produced by the pure ``SegmentStep``; this module only moves bytes.
"""

from __future__ import annotations

import logging

import orjson
from aiokafka.partitioner import DefaultPartitioner

from app.core.stage2 import SegmentStep
from app.core.watermarks import SourceWatermarks
from app.loop.misroute import misrouted
from app.loop.recalibration_step import SegmentUpdate
from app.stream.deadletter import dead_letter, guarded
from schemas.session import SessionShape
from schemas.validation import decode

log = logging.getLogger(__name__)

WATERMARK_KEY = b"__watermark__"
UPDATE_EVERY = 50  # sessions of a segment between stats updates to stage 3


class Stage2:
    def __init__(self, app, settings, topics, metrics, step: SegmentStep, updates=None,
                 capability: dict[str, float] | None = None) -> None:
        self.settings, self.topics, self.metrics, self.step = settings, topics, metrics, step
        self.updates = updates  # stage 3 (recalibration) sink, or None when no policy is set
        self.capability = capability or {}  # model -> capability, from the policy's catalog
        self.table = app.Table("segments", partitions=settings.sessions_partitions, key_type=bytes,
                               value_type=bytes)
        self.sources: dict[int, SourceWatermarks] = {}
        self.segments: dict[int, set[bytes]] = {}
        self.entries: dict[bytes, object] = {}  # decoded table values, so we decode once
        self._partitioner = DefaultPartitioner()
        app.agent(topics.sessions, name="stage2-segments")(self.run)
        app.on_partitions_assigned.connect(self._on_assigned)

    async def _on_assigned(self, sender, assigned, **kwargs) -> None:
        self.segments.clear()  # rebuilt lazily per partition from the (recovered) table
        self.entries.clear()

    async def run(self, stream) -> None:
        async for event in stream.events():
            await guarded(self.handle, event, dlq_topic=self.topics.dlq, metrics=self.metrics,
                          source=self.settings.topic_sessions, log=log)

    async def handle(self, key: bytes | None, raw: bytes, partition: int, offset: int) -> None:
        if key == WATERMARK_KEY:
            await self._heartbeat(raw, partition)
            return
        decoded = decode(SessionShape, raw)
        if not decoded.ok:
            self.metrics.count_dead_letter(decoded.code)
            dl = dead_letter(raw, decoded, source=self.settings.topic_sessions, partition=partition,
                             offset=offset)
            await self.topics.dlq.send(key=key, value=dl.model_dump_json().encode())
            return
        shape = decoded.value
        seg_key = shape.segment.key
        self._segments(partition).add(seg_key.encode())
        result = self.step.apply(self._entry(seg_key.encode()), shape, self._watermark(partition))
        await self._emit(seg_key, result)

    async def _heartbeat(self, raw: bytes, partition: int) -> None:
        beat = orjson.loads(raw)
        self._sources(partition).update(int(beat["src"]), int(beat["wm"]))
        upto = self._watermark(partition)
        for seg in sorted(self._segments(partition)):
            entry = self._entry(seg)
            if entry is not None and self.step.pending(entry):
                await self._emit(seg.decode(), self.step.advance(entry, upto))

    def _entry(self, seg: bytes):
        """The segment's live entry: cached, or decoded from the (recovered) table."""
        entry = self.entries.get(seg)
        if entry is None:
            stored = self.table.get(seg)
            if stored is not None:
                entry = self.entries[seg] = self.step.load(stored)
        return entry

    def _watermark(self, partition: int) -> int | None:
        return self._sources(partition).release_upto(lateness_ns=0)

    def _sources(self, partition: int) -> SourceWatermarks:
        found = self.sources.get(partition)
        if found is None:
            found = self.sources[partition] = SourceWatermarks(
                expected=self.settings.spans_partitions,
                idle_ns=int(self.settings.source_idle_s * 1e9))
        return found

    def _segments(self, partition: int) -> set[bytes]:
        found = self.segments.get(partition)
        if found is None:
            n = self.settings.sessions_partitions
            found = self.segments[partition] = {
                k for k in list(self.table.data.keys())
                if self._partitioner(k, list(range(n)), list(range(n))) == partition}
        return found

    async def _emit(self, seg_key: str, result) -> None:
        self.entries[seg_key.encode()] = result.entry
        # The table (and its changelog) gets every new state: a restarted worker resumes from it.
        self.table[seg_key.encode()] = self.step.dump(result.entry)
        for released in result.released:
            self.metrics.observe_session(seg_key, released)
            if self.capability and misrouted(released, self.capability):
                self.metrics.count_misroute(seg_key)
        for alert in result.alerts:
            self.metrics.count_alert_published(alert.kind)
            await self.topics.alerts.send(key=seg_key.encode(), value=alert.model_dump_json().encode())
        self._gauges(seg_key, result)
        await self._update_policy(seg_key, result)

    async def _update_policy(self, seg_key: str, result) -> None:
        """Feed stage 3: on alerts, and every UPDATE_EVERY sessions of the segment."""
        if self.updates is None or not result.released:
            return
        monitor = result.entry.monitor
        if result.alerts or monitor.sessions % UPDATE_EVERY < len(result.released):
            at = max(s.end_time_unix_nano for s in result.released)
            stats = self.step.monitor.stats(monitor)
            await self.updates(SegmentUpdate.of(seg_key, at, stats, result.alerts))

    def _gauges(self, seg_key: str, result) -> None:
        for metric, q in result.quantiles.items():
            self.metrics.set_quantiles(seg_key, metric, *q)
        for metric, is_open in result.episodes.items():
            self.metrics.set_drift_episode(seg_key, metric, is_open)
        for assumption_id, holds in result.assumptions.items():
            self.metrics.set_assumption(assumption_id, seg_key, holds)
