"""Stage 1 shell: a batch loop on its own aiokafka group consumer, inside the Faust worker.

Faust's per-event path (two tasks and an ``asyncio.wait`` per record) caps an agent at a few
thousand records/s here; stage 1 sees every span, so it reads ``agent.spans`` with
``getmany`` in its own consumer group (``<app_id>-stage1``) and folds whole batches into
live per-partition states (``stage1_partition``). It runs as a service of the Faust app:
same event loop, started and stopped with it; stage 2 and the rest stay Faust agents.

Delivery, per partition: the loop sends what a batch produced (sessions, heartbeats, dead
letters, re-keyed spans) and, ``HEARTBEAT_AFTER_S`` after the last, a heartbeat of the spans
folded since; every ``stage1_checkpoint_spans`` spans or ``stage1_checkpoint_s`` seconds it
waits for those sends' acks, then writes the changed states and the meta record
(watermark, last offset) to the state topic (``session_store``), waits for those acks, and
only then commits the consumer offset. Restoring a partition on assignment, dropping it on
revocation and restarting it from its checkpoint after a failed send are the
``PartitionOwnership`` half of the service (``app.stream.stage1_ownership``).
"""

from __future__ import annotations

import asyncio
import logging
import time

from mode import Service

from app.broker.client_config import batch_consumer_kwargs, batch_producer_kwargs, state_reader_kwargs
from app.core.stage1 import SessionStep
from app.stream.session_store import SessionStore, entries_then_meta
from app.stream.stage1_ownership import PartitionOwnership, RebalanceListener
from app.stream.stage1_partition import PartitionFold, Send

log = logging.getLogger(__name__)

MAX_RECORDS = 4000  # per getmany: a batch is folded without yielding to stage 2 in between
POLL_MS = 200
LAG_EVERY_S = 5.0
# while a partition has folded spans since its last heartbeat, the next goes out this long
# (plus a poll) after it, if HEARTBEAT_EVERY spans did not come first: at low traffic, or at
# the end of the input, sessions are released after reorder_lateness_s plus about this
HEARTBEAT_AFTER_S = 0.1


class BatchStage1(PartitionOwnership, Service):
    def __init__(self, app, settings, metrics, step: SessionStep, **kwargs) -> None:
        super().__init__(**kwargs)
        self.app, self.settings, self.metrics, self.step = app, settings, metrics, step
        self.topic = settings.topic_spans
        self.group_id = f"{settings.app_id}-stage1"
        self.folds: dict[int, PartitionFold] = {}
        self.pending: dict[int, list[asyncio.Future]] = {}
        self.checkpointed_at: dict[int, float] = {}
        self.beat_at: dict[int, float] = {}  # partition -> monotonic time of its last flush
        self.lock = asyncio.Lock()
        self.rebalancing = True  # until the first assignment
        self.consumer = self.producer = self.store = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._lag_at = 0.0

    # --- lifecycle -------------------------------------------------------------------------
    async def on_start(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        from app.broker.topics import ensure_topics, stage1_state_spec

        s, conf = self.settings, self.app.conf
        await ensure_topics(s, [stage1_state_spec(s)])
        self.producer = AIOKafkaProducer(**batch_producer_kwargs(s))
        await self.producer.start()
        self.store = SessionStore(s.stage1_state_topic, self.producer, state_reader_kwargs(s))
        await self.store.start()
        self.consumer = AIOKafkaConsumer(**batch_consumer_kwargs(
            s, group_id=self.group_id, session_timeout_s=conf.broker_session_timeout,
            heartbeat_interval_s=conf.broker_heartbeat_interval,
            rebalance_timeout_s=conf.broker_rebalance_timeout,
            max_poll_interval_s=conf.broker_max_poll_interval))
        self.consumer.subscribe([self.topic], listener=RebalanceListener(self))
        await self.consumer.start()
        self._task = asyncio.ensure_future(self._run())

    async def on_stop(self) -> None:
        """Checkpoint and commit everything folded, then leave the group."""
        self._stopping = True
        async with self.lock:  # never while a batch is half sent
            if self._task is not None:
                self._task.cancel()
            behind = {p for p, fold in self.folds.items() if fold.behind}
            if behind:
                await self._checkpoint(behind)
            self._drop(set(self.folds))
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        for client in (self.consumer, self.store, self.producer):
            if client is not None:
                try:
                    await client.stop()
                except Exception:  # noqa: BLE001 - shutting down anyway
                    log.exception("stage 1: stopping %r", client)

    # --- the loop ------------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._stopping:
            try:
                batch = await self.consumer.getmany(timeout_ms=POLL_MS, max_records=MAX_RECORDS)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - e.g. the broker away: aiokafka reconnects
                log.exception("stage 1: getmany failed")
                await asyncio.sleep(1.0)
                continue
            async with self.lock:
                if self._stopping:
                    return
                await self._adopt_unowned()
                await self._fold(batch)
                await self._flush_heartbeats()
                await self._maybe_checkpoint()
            await asyncio.sleep(0)  # let stage 2 and the group heartbeat run

    async def _fold(self, batch) -> None:
        for tp, msgs in batch.items():
            fold = self.folds.get(tp.partition)
            if fold is None:
                continue  # not ours (any more): whoever owns it reads it from its checkpoint
            out: list[Send] = []
            handle = fold.handle
            for m in msgs:
                handle(m.key, m.value, m.offset, out)
            if out:
                await self._send(tp.partition, out)
        self.metrics.set_sessions_open(sum(len(f.live.idle) for f in self.folds.values()))
        now = time.monotonic()
        if now - self._lag_at >= LAG_EVERY_S:
            self._lag_at = now
            self._publish_lag()

    async def _flush_heartbeats(self) -> None:
        now = time.monotonic()
        for p, fold in list(self.folds.items()):
            if fold.since_heartbeat and now - self.beat_at.get(p, 0.0) >= HEARTBEAT_AFTER_S:
                self.beat_at[p] = now
                out: list[Send] = []
                fold.flush_heartbeat(out)
                await self._send(p, out)

    async def _send(self, partition: int, out: list[Send]) -> None:
        futures = self.pending.setdefault(partition, [])
        send, dlq = self.producer.send, self.settings.topic_dlq
        try:
            for topic, key, value, part, headers in out:
                sent = await send(topic, key=key, value=value, partition=part, headers=headers)
                # a dead letter the broker refuses (e.g. too large) must not stall the partition
                futures.append(asyncio.ensure_future(_logged(sent)) if topic == dlq else sent)
        except Exception:  # noqa: BLE001 - the fold is ahead of what was sent: redo it
            log.exception("stage 1: send failed; partition %s restarts from its checkpoint",
                          partition)
            await self._reset({partition})

    async def _maybe_checkpoint(self) -> None:
        now = time.monotonic()
        every_n, every_s = self.settings.stage1_checkpoint_spans, self.settings.stage1_checkpoint_s
        behind = {p for p, f in self.folds.items() if f.behind}
        if any(self.folds[p].since_checkpoint >= every_n
               or now - self.checkpointed_at.get(p, 0.0) >= every_s for p in behind):
            failed = await self._checkpoint(behind)  # all at once: one wait for acks
            if failed:
                await self._reset(failed)

    # --- checkpoints -----------------------------------------------------------------------
    async def _checkpoint(self, partitions: set[int]) -> set[int]:
        """Outputs acked -> changed entries written and acked -> meta record (and deletions)
        written and acked -> offsets committed (``session_store.entries_then_meta``).

        Returns the partitions whose outputs or checkpoint failed (nothing committed)."""
        from aiokafka import TopicPartition

        failed = set()
        for p in partitions:
            if not await _all_acked(self.pending.pop(p, [])):
                failed.add(p)
        held, entries, meta = {}, {}, {}
        for p in sorted(partitions - failed):
            fold = self.folds[p]
            held[p] = (fold.offset, fold.live.watermark)  # what these records hold
            entries[p], meta[p] = entries_then_meta(fold.checkpoint_records())
        sent = await self._send_checkpoint(entries, failed)
        acked = [p for p in sent if await _all_acked(sent[p])]
        failed.update(set(sent) - set(acked))
        written = await self._send_checkpoint({p: meta[p] for p in acked}, failed)
        offsets = {}
        now = time.monotonic()
        for p, futures in written.items():
            if await _all_acked(futures):
                fold = self.folds[p]
                fold.checkpointed, fold.checkpointed_wm = held[p]
                self.checkpointed_at[p] = now
                offsets[TopicPartition(self.topic, p)] = fold.checkpointed + 1
            else:
                failed.add(p)
        if offsets:
            try:
                await self.consumer.commit(offsets)
            except Exception as exc:  # noqa: BLE001 - the meta record holds the offset anyway
                log.warning("stage 1: offset commit failed (%s); the checkpoint holds them", exc)
        if failed:
            log.warning("stage 1: checkpoint failed for partitions %s", sorted(failed))
        return failed

    async def _send_checkpoint(self, records: dict[int, list], failed: set[int]) -> dict[int, list]:
        """Send each partition's records; the futures of their acks (a partition whose send
        raised is added to ``failed`` instead)."""
        sent = {}
        for p, recs in records.items():
            try:
                sent[p] = await self.store.write(p, recs)
            except Exception:  # noqa: BLE001
                log.exception("stage 1: checkpoint of partition %s not sent", p)
                failed.add(p)
        return sent

    def _publish_lag(self) -> None:
        from aiokafka import TopicPartition

        for p, fold in self.folds.items():
            high = self.consumer.highwater(TopicPartition(self.topic, p))
            if high is not None:
                self.metrics.set_consumer_lag(self.topic, p, high - fold.offset - 1)


async def _logged(sent: asyncio.Future) -> None:
    try:
        await sent
    except Exception as exc:  # noqa: BLE001
        log.error("stage 1: a dead letter was not delivered: %r", exc)


async def _all_acked(futures: list[asyncio.Future]) -> bool:
    if not futures:
        return True
    results = await asyncio.gather(*futures, return_exceptions=True)
    bad = [r for r in results if isinstance(r, BaseException)]
    if bad:
        log.error("stage 1: %d of %d sends failed, e.g. %r", len(bad), len(futures), bad[0])
    return not bad
