"""Which span partitions batch stage 1 folds: restore on assignment, drop on revocation.

``PartitionOwnership`` is the ownership half of ``BatchStage1`` (``app.stream.stage1_batch``),
a mixin over its state: ``folds``, ``pending``, ``checkpointed_at``, ``beat_at`` (per
partition), ``lock``, ``rebalancing``, ``_stopping``, the clients (``consumer``, ``store``),
``topic``, ``settings``, ``step``, ``metrics`` and its ``_checkpoint``. On assignment a
partition is restored from the state topic and read again from the offset after its meta
record (from its beginning if it has none); on revocation (awaited by aiokafka before it
rejoins) it is checkpointed and committed, then dropped. A failed send or checkpoint drops the
partition and restores it from its last checkpoint (its sessions are published again; stage 2
drops the duplicates); a restore that failed is retried on the next batch.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka.abc import ConsumerRebalanceListener

from app.stream.stage1_partition import PartitionFold

log = logging.getLogger(__name__)


class PartitionOwnership:
    """Restore, drop and re-adopt ``BatchStage1``'s partitions (see the module docstring)."""

    async def _adopt(self, partitions: set[int]) -> None:
        """Restore ``partitions`` from the state topic and read on after their checkpoint."""
        from aiokafka import TopicPartition

        if not partitions:
            return
        began = time.monotonic()
        restored = await self.store.restore(partitions)
        now = time.monotonic()
        never = []  # no meta record: this group never checkpointed (so never committed) it
        for p in sorted(partitions):
            tp = TopicPartition(self.topic, p)
            fold = PartitionFold(p, self.settings, self.step, self.metrics, restored[p])
            meta = restored[p].meta
            if meta is not None:
                self.consumer.seek(tp, meta.offset + 1)
            else:
                never.append(tp)
            self.folds[p] = fold
            self.checkpointed_at[p] = now
            log.info("stage 1: partition %s restored: %s sessions, meta %s (%.2f s)", p,
                     len(fold.live.entries), meta, now - began)
        if never:
            await self.consumer.seek_to_beginning(*never)

    async def _adopt_unowned(self) -> None:
        """Partitions assigned to us that are not folded yet (a restore that failed)."""
        if self.rebalancing:
            return
        mine = {tp.partition for tp in self.consumer.assignment() if tp.topic == self.topic}
        missing = mine - set(self.folds)
        if missing:
            try:
                await self._adopt(missing)
            except Exception:  # noqa: BLE001 - retried on the next batch
                log.exception("stage 1: restoring partitions %s failed", sorted(missing))
                await asyncio.sleep(1.0)

    def _drop(self, partitions: set[int]) -> None:
        for p in partitions:
            self.folds.pop(p, None)
            self.pending.pop(p, None)
            self.checkpointed_at.pop(p, None)
            self.beat_at.pop(p, None)

    async def _reset(self, partitions: set[int]) -> None:
        self._drop(partitions)
        if not self.rebalancing:
            mine = {tp.partition for tp in self.consumer.assignment() if tp.topic == self.topic}
            try:
                await self._adopt(partitions & mine)
            except Exception:  # noqa: BLE001 - _adopt_unowned retries
                log.exception("stage 1: restoring partitions %s failed", sorted(partitions))

    async def on_revoked(self, partitions: set[int]) -> None:
        async with self.lock:
            self.rebalancing = True
            behind = {p for p in partitions & set(self.folds) if self.folds[p].behind}
            if behind and not self._stopping:
                await self._checkpoint(behind)
            self._drop(set(self.folds))
            self.metrics.set_sessions_open(0)

    async def on_assigned(self, partitions: set[int]) -> None:
        async with self.lock:
            self.rebalancing = False
            if self._stopping:
                return
            self._drop(set(self.folds) - partitions)
            try:
                await self._adopt(partitions - set(self.folds))
            except Exception:  # noqa: BLE001 - _adopt_unowned retries
                log.exception("stage 1: restoring partitions %s failed", sorted(partitions))


class RebalanceListener(ConsumerRebalanceListener):
    def __init__(self, stage: PartitionOwnership) -> None:
        self.stage = stage

    async def on_partitions_revoked(self, revoked) -> None:
        await self.stage.on_revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned) -> None:
        await self.stage.on_assigned({tp.partition for tp in assigned})
