"""Stage 1 for one ``agent.spans`` partition: live session states, folded record by record.

No Kafka here. ``handle`` folds one record and appends what must be sent, in order, to
``out``: dead letters, re-keyed spans, closed ``SessionShape``s (key: segment) and, every
``HEARTBEAT_EVERY`` spans, the partition's event-time watermark to every stage-2 partition
(after the sessions it covers); ``flush_heartbeat`` sends one between those when the shell's
clock says so. ``checkpoint_records`` gives what changed since the last checkpoint (see
``session_store``); the shell writes it only once everything ``handle`` asked to send is
acknowledged, so a closed session's tombstone never precedes its session record.

Per span, exactly as ``app.replay`` does per file: fold (idempotent by span id), then close
the sessions that went idle in event time (this partition's watermark), then heartbeat.
"""

from __future__ import annotations

import logging

from app.core.live_sessions import LiveSessions
from app.core.stage1 import SessionStep
from app.stream.deadletter import dead_letter, too_large
from app.stream.session_store import PartitionMeta, Record, Restored, checkpoint_records
from app.stream.sparse_warning import crossed_power_of_two
from schemas import closed_wm
from schemas.deadletter import DeadLetter
from schemas.fastspan import decode_span_fast
from schemas.heartbeat import WATERMARK_KEY, Heartbeat

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = 128  # spans per partition between watermark heartbeats

# topic, key, value, partition (None: by key), headers
Send = tuple[str, bytes | None, bytes, int | None, list[tuple[str, bytes]] | None]


class PartitionFold:
    def __init__(self, partition: int, settings, step: SessionStep, metrics,
                 restored: Restored | None = None) -> None:
        self.partition, self.metrics = partition, metrics
        self.topic_spans, self.topic_dlq = settings.topic_spans, settings.topic_dlq
        self.topic_sessions = settings.topic_sessions
        self.sessions_partitions = settings.sessions_partitions
        restored = restored if restored is not None else Restored()
        meta = restored.meta if restored.meta is not None else PartitionMeta()
        self.live = LiveSessions(step, entries=restored.entries, watermark=meta.watermark)
        self.offset = meta.offset  # last offset handled (folded, dead-lettered or re-keyed)
        self.checkpointed = meta.offset  # last offset a written checkpoint holds
        # the watermark of the last durable checkpoint (heartbeats say it: what closed below it
        # is never published again); None before the first
        self.checkpointed_wm: int | None = None if restored.meta is None else meta.watermark
        self.changed: set[str] = set()
        self.since_heartbeat = meta.since_heartbeat
        self.since_checkpoint = 0
        self.evictions = 0  # sessions closed early for session_max_open (this process)

    def handle(self, key: bytes | None, raw: bytes, offset: int, out: list[Send]) -> None:
        """Fold the record at ``offset`` (a record at or before ``self.offset`` was folded
        before this checkpoint was taken: skipped). Never raises: an unexpected error
        dead-letters the record."""
        if offset <= self.offset:
            return
        self.offset = offset
        self.since_checkpoint += 1
        try:
            self._handle(key, raw, offset, out)
        except Exception as exc:  # noqa: BLE001 - nothing a producer sends may stop a worker
            log.exception("%s: record at partition %s offset %s dead-lettered", self.topic_spans,
                          self.partition, offset)
            self._dead_letter(key, DeadLetter.of(
                raw if isinstance(raw, bytes) else repr(raw).encode(),
                reason=f"internal error: {type(exc).__name__}: {exc}"[:4096],
                reason_code="internal_error", source=self.topic_spans, partition=self.partition,
                offset=offset), out)

    def _handle(self, key: bytes | None, raw: bytes, offset: int, out: list[Send]) -> None:
        decoded = decode_span_fast(raw)
        if not decoded.ok:
            self._dead_letter(key, dead_letter(raw, decoded, source=self.topic_spans,
                                               partition=self.partition, offset=offset), out)
            return
        span = decoded.value
        sid = span.session_id
        skey = sid.encode()
        if key != skey:
            # A session's spans must meet in one partition: re-publish under the right key.
            out.append((self.topic_spans, skey, raw, None, None))
            return
        self.metrics.count_span(span.end_time_unix_nano)
        result = self.live.fold(span)
        outcome = result.outcome
        if outcome == "late":
            self.metrics.count_late_span()
        elif outcome == "too_large":
            self._dead_letter(key, too_large(raw, span, self.live.step.max_state_bytes,
                                             source=self.topic_spans, partition=self.partition,
                                             offset=offset), out)
        elif outcome != "duplicate":
            self._changed(sid, result, out)
        for idle_sid, result in self.live.expire():
            self._changed(idle_sid, result, out)
        self.since_heartbeat += 1
        if self.since_heartbeat >= HEARTBEAT_EVERY:
            self.flush_heartbeat(out)

    def _dead_letter(self, key: bytes | None, dl: DeadLetter, out: list[Send]) -> None:
        self.metrics.count_dead_letter(dl.reason_code)
        out.append((self.topic_dlq, key, dl.model_dump_json().encode(), None, None))

    def _changed(self, sid: str, result, out: list[Send]) -> None:
        self.changed.add(sid)
        shape = result.closed
        if shape is not None:
            if result.outcome == "evicted":
                self._evicted()
            self.metrics.count_session_closed("evicted" if result.outcome == "evicted"
                                              else shape.closed_by)
            where = closed_wm.encode(self.partition, self.live.watermark)
            out.append((self.topic_sessions, shape.segment.key.encode(),
                        shape.model_dump_json().encode(), None, [(closed_wm.HEADER, where)]))

    def _evicted(self) -> None:
        self.evictions += 1
        if crossed_power_of_two(self.evictions - 1, self.evictions):
            log.warning("%s partition %s: more than session_max_open=%d sessions open; %d closed "
                        "early as idle so far (docs/RUNBOOK.md#sessions-evicted)", self.topic_spans,
                        self.partition, self.live.max_open, self.evictions)

    def flush_heartbeat(self, out: list[Send]) -> None:
        """Heartbeat now if spans were folded since the last one: the shell calls this on a
        processing-time schedule, so a partition with little traffic (or at the end of its
        input) does not hold its watermark back for up to ``HEARTBEAT_EVERY`` spans."""
        if self.since_heartbeat:
            self.since_heartbeat = 0
            self._heartbeat(out)

    def _heartbeat(self, out: list[Send]) -> None:
        """Tell every stage-2 partition how far this partition's event time has come."""
        value = Heartbeat(src=self.partition, wm=self.live.watermark,
                          ck=self.checkpointed_wm).encode()
        for q in range(self.sessions_partitions):
            out.append((self.topic_sessions, WATERMARK_KEY, value, q, None))

    @property
    def behind(self) -> bool:
        """Records were handled since the last checkpoint."""
        return self.offset > self.checkpointed

    def checkpoint_records(self) -> list[Record]:
        """What changed since the last checkpoint, and the meta record (see session_store).
        Call only once every send ``handle`` asked for is acknowledged."""
        records = checkpoint_records(self.live.entries, self.changed,
                                     PartitionMeta(self.live.watermark, self.offset,
                                                   self.since_heartbeat))
        self.changed = set()
        self.since_checkpoint = 0
        return records
