"""Stage 1 shell: spans keyed by session -> session table -> closed SessionShapes.

Per event: decode (bad records -> DLQ), re-key mis-keyed records, fold into the session's
state (idempotent: a replayed span changes nothing), publish the SessionShape when the
session ends, and close sessions that went idle in event time (watermark per partition).
"""

from __future__ import annotations

import logging

import orjson

from app.core.idle import IdleIndex
from app.core.stage1 import SessionStep
from app.stream.app import partition_of
from app.stream.deadletter import dead_letter, guarded
from schemas.validation import decode_span

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = 128  # spans per partition between watermark heartbeats
WATERMARK_KEY = b"__watermark__"


class Stage1:
    def __init__(self, app, settings, topics, metrics, step: SessionStep) -> None:
        self.settings, self.topics, self.metrics, self.step = settings, topics, metrics, step
        self.table = app.Table("sessions", partitions=settings.spans_partitions, key_type=bytes,
                               value_type=bytes)
        self.idle: dict[int, IdleIndex] = {}
        self.watermark: dict[int, int] = {}
        self.timeout_ns = int(settings.session_idle_timeout_s * 1e9)
        self._since_heartbeat: dict[int, int] = {}
        self._tombs: dict[bytes, bytes] = {}  # tombstones whose session Kafka has not acked yet
        # partition -> (key, tombstone) acked by Kafka, written to the table by the next event
        # of that partition (Faust writes a table only in stream iteration, to its partition)
        self._acked: dict[int, list[tuple[bytes, bytes]]] = {}
        app.on_partitions_assigned.connect(self._on_assigned)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.agent(topics.spans, name="stage1-sessions")(self.run)

    async def _on_revoked(self, sender, revoked, **kwargs) -> None:
        # A delivery acked after this must not write the table of a partition we may lose.
        self._tombs.clear()
        self._acked.clear()

    async def _on_assigned(self, sender, assigned, **kwargs) -> None:
        self.idle.clear()  # rebuilt lazily per partition from the (recovered) table
        self._tombs.clear()  # the table keeps the closing states: a new owner re-closes them
        self._acked.clear()
        # After a rebalance a partition is read again from its committed offset, possibly by
        # a worker that had already read it further: a watermark kept from then would be
        # ahead of the spans now read and idle-close their sessions early. Rebuild it.
        self.watermark.clear()
        self._since_heartbeat.clear()

    async def run(self, stream) -> None:
        async for event in stream.events():
            await guarded(self.handle, event, dlq_topic=self.topics.dlq, metrics=self.metrics,
                          source=self.settings.topic_spans, log=log)

    async def handle(self, key: bytes | None, raw: bytes, partition: int, offset: int) -> None:
        decoded = decode_span(raw)
        if not decoded.ok:
            await self._dead_letter(raw, decoded, key, partition, offset)
            return
        span = decoded.value
        skey = span.session_id.encode()
        if key != skey:
            # A session's spans must meet in one partition: re-publish under the right key.
            await self.topics.spans.send(key=skey, value=raw)
            return
        self.metrics.count_span(span.end_time_unix_nano)
        self._write_acked(partition)
        index = self._index(partition)
        result = self.step.apply(self._get(skey), span)
        if result.outcome == "late":
            self.metrics.count_late_span()
        if result.entry is not None:
            index.touch(span.session_id, result.last_event_ns)
        if result.closed is not None:
            await self._close(skey, result, partition)
        else:
            self._store(skey, result.state)
        await self._expire(partition, span.end_time_unix_nano, index)

    async def _expire(self, partition: int, event_ns: int, index: IdleIndex) -> None:
        wm = max(self.watermark.get(partition, 0), event_ns)
        self.watermark[partition] = wm
        for sid in index.expired(watermark_ns=wm, timeout_ns=self.timeout_ns):
            skey = sid.encode()
            result = self.step.expire(self._get(skey), wm)
            if result.entry is not None:
                index.touch(sid, result.last_event_ns)
            if result.closed is not None:
                await self._close(skey, result, partition)
            else:
                self._store(skey, result.state)
        self.metrics.set_sessions_open(sum(len(i) for i in self.idle.values()))
        await self._heartbeat(partition, wm)

    async def _heartbeat(self, partition: int, wm: int) -> None:
        """Tell every stage-2 partition how far this partition's event time has come.

        Sent after the sessions it covers (same producer, per-partition order), so stage 2
        can release buffered sessions once every source has passed them."""
        n = self._since_heartbeat.get(partition, 0) + 1
        self._since_heartbeat[partition] = n
        if n < HEARTBEAT_EVERY:
            return
        self._since_heartbeat[partition] = 0
        value = orjson.dumps({"src": partition, "wm": wm})
        for q in range(self.settings.sessions_partitions):
            await self.topics.sessions.send(key=WATERMARK_KEY, value=value, partition=q)

    def _get(self, skey: bytes) -> bytes | None:
        tomb = self._tombs.get(skey)
        return tomb if tomb is not None else self.table.get(skey)

    def _store(self, skey: bytes, state: bytes | None) -> None:
        self._tombs.pop(skey, None)
        if state is None:
            self.table.pop(skey, None)
        elif self.table.get(skey) != state:
            self.table[skey] = state

    async def _close(self, skey: bytes, result, partition: int) -> None:
        """Publish a closed session; its tombstone reaches the table only once Kafka has it.

        A kill -9 between a tombstone reaching the changelog and the session reaching Kafka
        would lose the session (its replayed spans are then just late). So the table keeps
        what closes it - the state with the session_end span, or for an idle close the open
        state - and a restarted worker closes and publishes it again (stage 2 drops the
        duplicate). Meanwhile the tombstone is served from memory."""
        if result.closing is not None:
            self._store(skey, result.closing.to_bytes())
        tomb = self._tombs[skey] = result.state
        shape = result.closed
        self.metrics.count_session_closed(shape.closed_by)
        sent = await self.topics.sessions.send(key=shape.segment.key.encode(),
                                               value=shape.model_dump_json().encode())
        sent.add_done_callback(lambda fut: self._delivered(skey, tomb, partition, fut))

    def _delivered(self, skey: bytes, tomb: bytes, partition: int, fut) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return  # the table still holds what closes it: a restart publishes it again
        self._acked.setdefault(partition, []).append((skey, tomb))

    def _write_acked(self, partition: int) -> None:
        for skey, tomb in self._acked.pop(partition, ()):
            if self._tombs.get(skey) is tomb:
                self._store(skey, tomb)

    def _index(self, partition: int) -> IdleIndex:
        index = self.idle.get(partition)
        if index is None:
            index = self.idle[partition] = IdleIndex()
            n = self.settings.spans_partitions
            for skey, state in list(self.table.data.items()):
                if partition_of(skey, n) == partition:
                    index.touch(skey.decode(), self.step.last_event_ns(state))
        return index

    async def _dead_letter(self, raw, decoded, key, partition, offset) -> None:
        self.metrics.count_dead_letter(decoded.code)
        dl = dead_letter(raw, decoded, source=self.settings.topic_spans, partition=partition,
                         offset=offset)
        await self.topics.dlq.send(key=key, value=dl.model_dump_json().encode())
