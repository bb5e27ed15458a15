"""How stage 2 reads a sessions partition: strictly in offset order, acking in offset order,
and resuming after an assignment where its checkpoints need it.

``OffsetOrderReading`` is that half of ``Stage2`` (``app.stream.stage2``), a mixin over its
state: ``app``, ``settings``, ``sources``, ``wall``, ``_stream`` and, per partition,
``expected``, ``resume``, ``reading``, ``acked_upto`` and ``_sought``.

Acks go out in offset order per partition: a record (a heartbeat too) is acked only once every
earlier record of its partition is. Faust commits the end of the first run of consecutive acked
offsets, but it does not see a hole of one record right after the committed offset, nor any
hole before the first commit (``Consumer._new_offset``): acked out of order, a session that no
checkpoint held yet could be committed over, and a kill -9 then lost it.

Faust does not deliver every record, and acks some itself: its stream iterator skips (and acks,
"otherwise the lag would increase") a record read while flow control is suspended or of an
older consumer generation, i.e. around a rebalance, and may deliver a record twice. So the
shell (1) handles a partition's records strictly in offset order from where ``_start`` says
(Faust's committed offset, or the earlier offset the source watermarks were checkpointed at):
a record delivered again is dropped; after a hole it seeks back (``seek_if_assigned``) to
the first record it has not handled and drops what comes until that record does; and (2)
lets Faust commit no further than the records it acked itself (``guard_commits``): Faust's
acks of records it skipped, with nothing committed yet or the unacked record right after the
committed offset, would otherwise commit over sessions no checkpoint holds, and the next
owner would never fold them. Those Faust internals are used in ``app.stream.faust_offsets``.
"""

from __future__ import annotations

import logging

from app.stream.faust_offsets import committed_offset, seek_if_assigned

log = logging.getLogger("app.stream.stage2")  # the stage's log, as before the split


class ReadRecord:
    """A record read and not acked yet; ``safe`` once a checkpoint holds it (or nothing must)."""

    __slots__ = ("event", "safe", "record_ns", "beat")

    def __init__(self, event, safe: bool, record_ns: int, beat: tuple | None) -> None:
        self.event, self.safe, self.record_ns, self.beat = event, safe, record_ns, beat


class OffsetOrderReading:
    """Offset order, acks and the resume point of ``Stage2``'s partitions (see the module)."""

    async def _in_order(self, event) -> bool:
        """True if ``event`` is the next record of its partition to handle (then expected)."""
        message = event.message
        partition, offset = message.partition, message.offset
        expected = self.expected.get(partition)
        if expected is None:  # first record since the assignment: it must be the committed one
            expected = await self._start(message.tp)
            log.info("stage 2: %s[%s] first record %s, resuming at %s (handled up to %s)",
                     message.topic, partition, offset, expected, self.resume.get(partition))
            if expected is not None:  # kept while the records before this one are read again
                self.expected[partition] = expected
                if offset > expected:  # what the source watermarks were acked up to: no hole
                    self._sought[partition] = expected
        if expected is None or offset == expected:
            self.expected[partition] = offset + 1
            self._sought.pop(partition, None)
            return True
        if offset < expected:
            return False  # delivered again: handled (in memory or in a checkpoint) already
        # A hole: Faust skipped records. Seek back, and again for every later record that still
        # comes first: Faust's fetcher may hand on records of a batch fetched before the seek,
        # which moves its read offset past the hole again (the records read again are then
        # dropped); after the last of them, the seek holds.
        if self._sought.get(partition) != expected:
            self._sought[partition] = expected
            log.warning("stage 2: %s[%s] skipped from %s to %s; reading again from %s",
                        message.topic, partition, expected, offset, expected)
        try:
            if not await seek_if_assigned(self.app.consumer, message.tp, expected):
                log.info("stage 2: %s no longer assigned: its new owner reads it", message.tp)
        except Exception as exc:  # noqa: BLE001 - a failed seek is retried on the next record
            log.warning("stage 2: seek of %s to %s failed: %r", message.tp, expected, exc)
        return False

    async def _start(self, tp) -> int | None:
        """Where to read ``tp`` from after an assignment: Faust's committed offset, or the
        offset the checkpointed source watermarks were acked up to if that is earlier (the
        records in between are read again for what their heartbeats said). The partition's
        first offset when Faust does not know a committed one yet (nothing committed, or its
        seek to the committed offsets still to come: what a checkpoint holds is skipped), or
        the watermarks have no checkpoint (they are rebuilt from the start)."""
        committed = committed_offset(getattr(self.app, "consumer", None), tp)
        if committed is not None:
            self.resume[tp.partition] = committed
            if self.sources.has_checkpoint(tp.partition):
                at = self.sources.resume_at(tp.partition)
                return committed if at is None else min(at, committed)
        try:
            return (await self.app.consumer.earliest_offsets(tp)).get(tp)
        except Exception:  # noqa: BLE001 - then trust Faust's first record, as before
            log.exception("stage 2: no earliest offset of %s", tp)
            return None

    def _record_time(self, partition: int, offset: int, timestamp_s: float | None) -> int:
        if timestamp_s is None or timestamp_s <= 0:
            timestamp_s = self.wall()
        record_ns = int(timestamp_s * 1e9)
        self.sources.read(partition, offset, record_ns)
        return record_ns

    async def _ack_safe(self, partition: int) -> None:
        """Ack the partition's records up to the first one no checkpoint holds yet."""
        queue = self.reading.get(partition)
        while queue and queue[0].safe:
            record = queue.popleft()
            event = record.event
            self.sources.acked(partition, event.message.offset, record.record_ns, record.beat)
            self.acked_upto[partition] = event.message.offset + 1
            await self._stream.ack(event)
