"""Stage 2's view of stage 1's partitions: per sessions partition, the source watermarks the
heartbeats carried (``app.core.watermarks``), live in memory and checkpointed to the segment
table under a key of their own.

The key is ``SOURCES_PREFIX`` + the sessions partition: never a segment's key (those are UTF-8,
and 0xff is not), and written while a record of that partition is handled, so Faust puts it in
that partition's changelog and the partition's next owner recovers it.

>>> class Settings: spans_partitions, source_idle_s, source_quiet_s = 2, 300.0, 120.0
>>> table = {}
>>> sources = PartitionSources(table, Settings())
>>> sources.of(3).tick(10); sources.of(3).update(1, 500)
>>> table[sources_key(3)] = sources.dump(3)
>>> sources.drop(3)  # revoked; assigned again: as checkpointed
>>> sources.of(3).to_dict()["wm"]
[[1, 500]]
"""

from __future__ import annotations

import orjson

from app.core.watermarks import SourceWatermarks

SOURCES_PREFIX = b"\xffsources/"


def sources_key(partition: int) -> bytes:
    return SOURCES_PREFIX + str(partition).encode()


def is_sources_key(key: bytes) -> bool:
    return key.startswith(SOURCES_PREFIX)


class PartitionSources:
    """Sessions partition -> its ``SourceWatermarks``: live, else as last checkpointed, else new."""

    def __init__(self, table, settings) -> None:
        self.table = table
        self.rule = {"expected": settings.spans_partitions,
                     "idle_ns": int(settings.source_idle_s * 1e9),
                     "quiet_ns": int(settings.source_quiet_s * 1e9)}
        self.live: dict[int, SourceWatermarks] = {}

    def of(self, partition: int) -> SourceWatermarks:
        found = self.live.get(partition)
        if found is None:
            stored = self.table.get(sources_key(partition))
            found = self.live[partition] = (
                SourceWatermarks(**self.rule) if stored is None
                else SourceWatermarks.from_dict(orjson.loads(stored), **self.rule))
        return found

    def dump(self, partition: int) -> bytes:
        return orjson.dumps(self.of(partition).to_dict())

    def partition_of(self, key: bytes) -> int:
        return int(key[len(SOURCES_PREFIX):])

    def drop(self, partition: int) -> None:
        self.live.pop(partition, None)
