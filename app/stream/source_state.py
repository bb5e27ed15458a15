"""Stage 2's view of stage 1's partitions: per sessions partition, the source watermarks the
heartbeats carried (``app.core.watermarks``), live in memory and checkpointed to the segment
table under a key of their own.

The checkpoint holds the watermarks *as of the acked records*: a second copy is fed each
record only when it is acked (in offset order), and the checkpoint stores it with the offset
it has read up to (``at``). A restarted partition is read again from ``at`` (stage 2 seeks back
there when Kafka's committed offset is later), and what the records between ``at`` and the
committed offset said is read once more; records below ``at`` are in the restored state and
change nothing. So every record is folded with the watermark an uninterrupted run had when it
read that record. A checkpoint of the *live* watermarks would be ahead of the records read
again after a crash (their segments' checkpoints lag the heartbeats): a session read again
would then be released at once instead of in event-time order, and the detectors would see
another sequence than the uninterrupted run's.

The key is ``SOURCES_PREFIX`` + the sessions partition: never a segment's key (those are UTF-8,
and 0xff is not), and written while a record of that partition is handled, so Faust puts it in
that partition's changelog and the partition's next owner recovers it.

>>> class Settings: spans_partitions, source_idle_s, source_quiet_s = 2, 300.0, 120.0
>>> table = {}
>>> sources = PartitionSources(table, Settings())
>>> sources.read(3, 0, 10); sources.beat(3, 0, 1, 500)      # live: read, not acked yet
>>> sources.of(3).to_dict()["wm"], sources.acked_state(3)["wm"]
([[1, 500]], [])
>>> sources.acked(3, 0, 10, (1, 500))                       # acked: now checkpointable
>>> table[sources_key(3)] = sources.dump(3)
>>> sources.drop(3)  # revoked; assigned again: as checkpointed, read again from offset 1
>>> sources.of(3).to_dict()["wm"], sources.resume_at(3)
([[1, 500]], 1)
>>> sources.beat(3, 0, 1, 900)   # below the checkpoint's offset: already in it
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
    """A heartbeat's ``(source, watermark_ns, checkpointed_ns or None)``, or why it is not
    one. A record that only looks like one (``loadshape.sessions`` is open to any producer)
    must not become a source.

    >>> decode_heartbeat(b'{"src": 1, "wm": 5}', 2).value
    (1, 5, None)
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
    return Decoded(value=(beat.src, beat.wm, beat.ck))


class PartitionSources:
    """Sessions partition -> its ``SourceWatermarks``: live (every record read) and acked (every
    record acked, what a checkpoint stores), from the last checkpoint else new."""

    def __init__(self, table, settings) -> None:
        self.table = table
        self.rule = {"expected": settings.spans_partitions,
                     "idle_ns": int(settings.source_idle_s * 1e9),
                     "quiet_ns": int(settings.source_quiet_s * 1e9)}
        self.live: dict[int, SourceWatermarks] = {}
        self._acked: dict[int, SourceWatermarks] = {}
        self._acked_upto: dict[int, int | None] = {}  # offset after the last record acked
        self._restored_upto: dict[int, int | None] = {}  # records below: in the restored state

    def of(self, partition: int) -> SourceWatermarks:
        found = self.live.get(partition)
        if found is None:
            found = self._load(partition)
        return found

    def resume_at(self, partition: int) -> int | None:
        """Offset the checkpointed watermarks were acked up to: read the partition again from
        there. None without a checkpoint (read from its start) or with one written before
        checkpoints said their offset (it held every heartbeat up to the committed offset)."""
        self.of(partition)
        return self._restored_upto[partition]

    def has_checkpoint(self, partition: int) -> bool:
        return self.table.get(sources_key(partition)) is not None

    def read(self, partition: int, offset: int, record_ns: int) -> None:
        """A record was read at record time ``record_ns``."""
        if not self._restored(partition, offset):
            self.of(partition).tick(record_ns)

    def beat(self, partition: int, offset: int, source: int, watermark_ns: int,
             checkpointed_ns: int | None = None) -> None:
        """The record read was a heartbeat of span partition ``source``."""
        if not self._restored(partition, offset):
            self.of(partition).update(source, watermark_ns, checkpointed_ns)

    def acked(self, partition: int, offset: int, record_ns: int,
              beat: tuple[int, int, int | None] | None) -> None:
        """Record ``offset`` was acked (in offset order): feed it to the checkpointed copy."""
        self.of(partition)
        upto = self._acked_upto[partition]
        if upto is not None and offset < upto:
            return  # read again after a restart: already in the copy
        copy = self._acked[partition]
        copy.tick(record_ns)
        if beat is not None:
            copy.update(*beat)
        self._acked_upto[partition] = offset + 1

    def acked_state(self, partition: int) -> dict:
        self.of(partition)
        return self._acked[partition].to_dict()

    def dump(self, partition: int) -> bytes:
        self.of(partition)
        return orjson.dumps({"at": self._acked_upto[partition],
                             "state": self._acked[partition].to_dict()})

    def partition_of(self, key: bytes) -> int:
        return int(key[len(SOURCES_PREFIX):])

    def drop(self, partition: int) -> None:
        for held in (self.live, self._acked, self._acked_upto, self._restored_upto):
            held.pop(partition, None)

    def _restored(self, partition: int, offset: int) -> bool:
        self.of(partition)
        upto = self._restored_upto[partition]
        return upto is not None and offset < upto

    def _load(self, partition: int) -> SourceWatermarks:
        stored = self.table.get(sources_key(partition))
        doc = None if stored is None else orjson.loads(stored)
        if doc is not None and "state" not in doc:
            doc = {"at": None, "state": doc}  # written before checkpoints said their offset
        for copies in (self.live, self._acked):
            copies[partition] = (SourceWatermarks(**self.rule) if doc is None
                                 else SourceWatermarks.from_dict(doc["state"], **self.rule))
        at = None if doc is None else doc["at"]
        self._acked_upto[partition] = self._restored_upto[partition] = at
        return self.live[partition]
