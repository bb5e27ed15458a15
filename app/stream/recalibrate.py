"""Stage 3 shell: segment updates keyed by policy id -> signed routing recalibrations.

Stage 2 publishes a segment's stats and new alerts to an internal topic keyed by policy id,
so every segment of a policy meets in one place and versions stay strictly increasing
whatever the number of workers. Proposals go to ``routing.recalibrations`` (compacted,
key policy_id).
"""

from __future__ import annotations

import logging

import orjson

from app.loop.recalibration_step import PolicyEntry, RecalibrationStep, SegmentUpdate

log = logging.getLogger(__name__)


class Stage3:
    def __init__(self, app, settings, topics, metrics, step: RecalibrationStep) -> None:
        self.settings, self.topics, self.metrics, self.step = settings, topics, metrics, step
        self.policy_id = step.initial.policy_id
        self.input = app.topic(f"{settings.app_id}-recalibration-input", key_type=bytes,
                               value_type=bytes, key_serializer="raw", value_serializer="raw",
                               partitions=1, internal=True)
        self.table = app.Table("policies", partitions=1, key_type=bytes, value_type=bytes)
        app.agent(self.input, name="stage3-recalibrate")(self.run)
        metrics.set_recalibration_version(self.policy_id, step.initial.version)

    async def publish_update(self, update: SegmentUpdate) -> None:
        """Called by stage 2."""
        await self.input.send(key=self.policy_id.encode(), value=orjson.dumps(update.to_dict()))

    async def run(self, stream) -> None:
        async for event in stream.events():
            try:
                await self.handle(event.key, event.value)
            except Exception:  # noqa: BLE001 - one bad update must not stop recalibration
                log.exception("stage 3: update at offset %s skipped", event.message.offset)

    async def handle(self, key: bytes, raw: bytes) -> None:
        stored = self.table.get(key)
        entry = PolicyEntry.from_dict(orjson.loads(stored)) if stored is not None else None
        entry, rec = self.step.apply(entry, SegmentUpdate(**orjson.loads(raw)))
        self.table[key] = orjson.dumps(entry.to_dict())
        if rec is not None:
            await self.topics.recalibrations.send(key=rec.policy_id.encode(),
                                                  value=rec.model_dump_json().encode())
            self.metrics.count_recalibration(rec.policy_id, rec.mode)
            self.metrics.set_recalibration_version(rec.policy_id, rec.version)
