"""Stage 2 shell: SessionShapes keyed by segment -> segment state -> alerts.

A segment's state (reorder buffer, sketches, detectors, episodes, assumption checks) lives
in memory and is checkpointed to the ``segments`` table (changelogged) every
``CHECKPOINT_EVERY`` sessions of the segment and on heartbeats after ``CHECKPOINT_AFTER_S``.
Records are acknowledged (so their offsets may be committed) only once a checkpoint holds
them, and a checkpoint is written only once the alerts of the sessions it holds are
delivered (a dead letter is delivered before its record is acked). The state records the
last offset it folded per partition, so after a crash the redelivered records are skipped:
results equal an uninterrupted run's, and a few alerts may be published again with the same
alert_id (at-least-once output, deduplicated downstream).

What the heartbeats said (each span partition's watermark) is state as well: it is checkpointed
to the same table (``app.stream.source_state``) as of the records acked, with the offset it was
acked up to. A partition's next owner reads it again from there when Kafka's committed offset
is later (``_start``): the records before the committed offset were handled already, so of
them only the heartbeats and record times count again (``resume``). Each record is then folded
with the watermark the uninterrupted run had when it read it, so a session read again is
released in the same order. (Restored from the live watermarks instead, a session read again
would find them ahead and pass at once, out of event-time order; and with the committed offset
as the only place to resume, a span partition that has finished would never tell the next
owner its watermark.)

A span partition counts as idle (see ``app.core.watermarks``) only if it is also quiet in
processing time: no heartbeat of it for ``source_quiet_s`` of *record* time, the Kafka
timestamps of the records this partition reads. Record time, not this worker's clock: a
backlog read after a restart carries the times it was written at, so a worker catching up
decides exactly as the worker that read those records live, and a worker that was itself
busy does not mistake its own pause for a quiet source.

Reading in offset order, acking and resuming a partition: ``app.stream.stage2_reading``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from app.broker.client_config import FETCH_MAX_WAIT_MS
from app.broker.partitioner import partition_of
from app.core.stage2 import SegmentStep
from app.stream.deadletter import dead_letter, guarded, segment_limit
from app.stream.faust_offsets import guard_commits, shorten_fetch_wait, skip_empty_commits
from app.stream.source_state import PartitionSources, decode_heartbeat, is_sources_key, sources_key
from app.stream.stage2_outputs import SegmentOutputs
from app.stream.stage2_reading import OffsetOrderReading, ReadRecord
from schemas import closed_wm
from schemas.heartbeat import WATERMARK_KEY
from schemas.session import SessionShape
from schemas.validation import decode

log = logging.getLogger(__name__)

CHECKPOINT_EVERY = 200  # sessions of a segment between state checkpoints
# a segment's stored state this large is a warning: a Kafka message is at most 1 MB, and the
# reorder buffer grows with the sessions a slow span partition holds back
LARGE_STATE_BYTES = 512 * 1024
CHECKPOINT_AFTER_S = 1.0  # a dirty segment is checkpointed on the next heartbeat after this


class Stage2(OffsetOrderReading):
    def __init__(self, app, settings, topics, metrics, step: SegmentStep, updates=None,
                 capability: dict[str, float] | None = None, clock=time.monotonic,
                 wall=time.time) -> None:
        self.app, self.settings, self.topics, self.metrics = app, settings, topics, metrics
        self.step = step
        self.outputs = SegmentOutputs(metrics, topics.alerts, step, updates=updates,
                                      capability=capability)
        self.clock = clock  # checkpoint timing
        self.wall = wall  # record time of a record without a Kafka timestamp
        self.table = app.Table("segments", partitions=settings.sessions_partitions, key_type=bytes,
                               value_type=bytes)
        self.sources = PartitionSources(self.table, settings)
        self.segments: dict[int, set[bytes]] = {}
        self.entries: dict[bytes, object] = {}  # live segment entries
        self.unacked: dict[bytes, list[ReadRecord]] = {}  # segment -> folded since its checkpoint
        self.reading: dict[int, deque[ReadRecord]] = {}  # partition -> not acked, in offset order
        self.dirty_since: dict[bytes, float] = {}
        self.expected: dict[int, int] = {}  # partition -> next offset to handle (offset order)
        self.acked_upto: dict[int, int] = {}  # partition -> offset after the last record acked
        self.resume: dict[int, int] = {}  # partition -> committed offset: records below, handled
        self._sought: dict[int, int] = {}  # partition -> offset of the hole sought back to
        self._stream = None
        self._held: bytes | None = None  # segment whose checkpoint must hold the current record
        self._beat: tuple | None = None  # the current record's heartbeat (source, wm, ck)
        self._headers = None  # the current record's Kafka headers
        app.agent(topics.sessions, name="stage2-segments")(self.run)
        app.on_partitions_revoked.connect(self._on_revoked)

    async def _on_revoked(self, sender, revoked, **kwargs) -> None:
        # Uncheckpointed work of a partition we lose is redone by its next owner from the
        # committed offset; a partition we keep carries on from memory.
        for tp in revoked:
            if tp.topic != self.settings.topic_sessions:
                continue
            for seg in self.segments.pop(tp.partition, set()):
                self.entries.pop(seg, None)
                self.unacked.pop(seg, None)
                self.dirty_since.pop(seg, None)
                self.outputs.forget(seg)
            self.sources.drop(tp.partition)
            self.unacked.pop(sources_key(tp.partition), None)
            self.dirty_since.pop(sources_key(tp.partition), None)
            self.reading.pop(tp.partition, None)
            self.expected.pop(tp.partition, None)
            self.acked_upto.pop(tp.partition, None)
            self.resume.pop(tp.partition, None)
            self._sought.pop(tp.partition, None)

    async def run(self, stream) -> None:
        self._stream = stream = stream.noack()
        consumer = getattr(self.app, "consumer", None)
        guard_commits(consumer, self.settings.topic_sessions, self.acked_upto)
        skip_empty_commits(consumer)
        if not shorten_fetch_wait(consumer, FETCH_MAX_WAIT_MS):
            log.warning("stage 2: could not shorten the fetch wait of Faust's consumer")
        async for event in stream.events():
            if not await self._in_order(event):
                continue
            self._held = self._beat = None
            message = event.message
            self._headers = message.headers
            partition = message.partition
            record_ns = self._record_time(partition, message.offset, message.timestamp)
            await guarded(self.handle, event, dlq_topic=self.topics.dlq, metrics=self.metrics,
                          source=self.settings.topic_sessions, log=log)
            record = ReadRecord(event, self._held is None, record_ns, self._beat)
            self.reading.setdefault(partition, deque()).append(record)
            if self._held is not None:
                held = self.unacked.setdefault(self._held, [])
                held.append(record)  # safe once the segment's next checkpoint holds it
                if len(held) >= CHECKPOINT_EVERY:
                    await self._checkpoint(self._held)
            await self._ack_safe(partition)

    async def handle(self, key: bytes | None, raw: bytes, partition: int, offset: int) -> None:
        beat = decode_heartbeat(raw, self.settings.spans_partitions) if key == WATERMARK_KEY else None
        if beat is not None and beat.ok:
            await self._heartbeat(*beat.value, partition, offset)
            return
        if offset < self.resume.get(partition, 0):
            return  # read again for the heartbeats: handled (checkpointed or dead-lettered)
        decoded = decode(SessionShape, raw)
        if beat is not None and not decoded.ok:
            decoded = beat  # not a session of an agent called "__watermark__" either
        if not decoded.ok:
            await self._dead_letter(key, dead_letter(
                raw, decoded, source=self.settings.topic_sessions, partition=partition, offset=offset))
            return
        shape = decoded.value
        seg = shape.segment.key.encode()
        segments = self._segments(partition)
        if seg not in segments:
            limit = self.settings.max_segments_per_partition
            if len(segments) >= limit:
                await self._dead_letter(key, segment_limit(
                    raw, shape.segment.key, partition, limit, source=self.settings.topic_sessions,
                    offset=offset))
                return
            segments.add(seg)
        entry = self._entry(seg)
        if entry is not None and entry.seen(partition, offset):
            return  # redelivered after a crash: already in the checkpointed state
        origin = closed_wm.decode(self._headers, spans_partitions=self.settings.spans_partitions)
        result = self.step.apply(entry, shape, self._watermark(partition), origin,
                                 self.sources.of(partition).checkpointed())
        result.entry.mark(partition, offset)
        self._held = seg
        await self._emit(seg, result)

    async def _dead_letter(self, key: bytes | None, dl) -> None:
        self.metrics.count_dead_letter(dl.reason_code)
        # delivered before the record is acked: a kill -9 may not lose it
        await (await self.topics.dlq.send(key=key, value=dl.model_dump_json().encode()))

    async def _heartbeat(self, source: int, watermark_ns: int, checkpointed_ns: int | None,
                         partition: int, offset: int) -> None:
        self.sources.beat(partition, offset, source, watermark_ns, checkpointed_ns)
        self._beat = (source, watermark_ns, checkpointed_ns)
        upto = self._watermark(partition)
        now = self.clock()
        sources = sources_key(partition)
        self.dirty_since.setdefault(sources, now)
        for seg in sorted(self._segments(partition)):
            entry = self._entry(seg)
            if entry is not None and self.step.pending(entry):
                await self._emit(seg, self.step.advance(entry, upto))
            if seg in self.dirty_since and now - self.dirty_since[seg] >= CHECKPOINT_AFTER_S:
                await self._checkpoint(seg)
        if now - self.dirty_since[sources] >= CHECKPOINT_AFTER_S:
            await self._checkpoint(sources)  # bounds what the next owner reads again

    async def _checkpoint(self, key: bytes) -> None:
        """Write a segment's state (or a partition's source watermarks) to the table, then ack
        the records it now holds."""
        if is_sources_key(key):
            stored = self.sources.dump(self.sources.partition_of(key))
        else:
            entry = self.entries.get(key)
            if entry is None:
                return
            sends = self.outputs.take_sends(key)
            if sends:
                # The state says these alerts were sent: they must be in Kafka before it is, or
                # a kill -9 in between loses them (the restored state would not raise them again).
                await asyncio.gather(*sends)
            stored = self.step.dump(entry)
            if len(stored) > LARGE_STATE_BYTES:
                log.warning("stage 2: segment %r state is %d bytes compressed (%d sessions held "
                            "for the slowest span partition); a Kafka message is at most 1 MB "
                            "(docs/RUNBOOK.md#worker-down)", key, len(stored),
                            self.step.pending(entry))
        self.table[key] = stored
        self.dirty_since.pop(key, None)
        partitions = set()
        for record in self.unacked.pop(key, []):
            record.safe = True
            partitions.add(record.event.message.partition)
        for partition in sorted(partitions):
            await self._ack_safe(partition)

    def _watermark(self, partition: int) -> int | None:
        return self.sources.of(partition).release_upto(lateness_ns=0)

    def _segments(self, partition: int) -> set[bytes]:
        found = self.segments.get(partition)
        if found is None:
            n = self.settings.sessions_partitions
            found = self.segments[partition] = {
                k for k in list(self.table.data.keys())
                if not is_sources_key(k) and partition_of(k, n) == partition}
        return found

    def _entry(self, seg: bytes):
        """The segment's live entry, or its last checkpoint from the (recovered) table."""
        entry = self.entries.get(seg)
        if entry is None:
            stored = self.table.get(seg)
            if stored is not None:
                entry = self.entries[seg] = self.step.load(stored)
        return entry

    async def _emit(self, seg: bytes, result) -> None:
        self.entries[seg] = result.entry
        self.dirty_since.setdefault(seg, self.clock())
        await self.outputs.emit(seg, result)
