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
from schemas.heartbeat import Heartbeat
from schemas.validation import Decoded, decode

SOURCES_PREFIX = b"\xffsources/"


def sources_key(partition: int) -> bytes:
    return SOURCES_PREFIX + str(partition).encode()


def is_sources_key(key: bytes) -> bool:
    return key.startswith(SOURCES_PREFIX)


def decode_heartbeat(raw: bytes, spans_partitions: int) -> Decoded:
    """A heartbeat's ``(source, watermark_ns)``, or why it is not one. A record that only looks
    like one (``loadshape.sessions`` is open to any producer) must not become a source.

    >>> decode_heartbeat(b'{"src": 1, "wm": 5}', 2).value
    (1, 5)
    >>> bad = decode_heartbeat(b'{"src": 7, "wm": 5}', 2)
    >>> bad.field, bad.code, bad.reason
    ('src', 'invalid_heartbeat', 'src: not a span partition of 0..1 (got 7)')
    >>> decode_heartbeat(b'{"src": 1, "wm": -5}', 2).field
    'wm'
    """
    decoded = decode(Heartbeat, raw)
    if not decoded.ok:
        if decoded.code in ("invalid_json", "invalid_utf8"):
            return decoded
        return Decoded(reason=decoded.reason, field=decoded.field, code="invalid_heartbeat")
    beat = decoded.value
    if beat.src >= spans_partitions:
        return Decoded(reason=f"src: not a span partition of 0..{spans_partitions - 1} (got {beat.src})",
                       field="src", code="invalid_heartbeat")
    return Decoded(value=(beat.src, beat.wm))


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
