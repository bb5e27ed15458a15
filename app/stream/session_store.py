"""Stage 1's session states on their compacted state topic: checkpoint records and restore.

Contract of the topic (``Settings.stage1_state_topic``, compacted, one partition per
``agent.spans`` partition; a record lives in the partition of the spans it was folded from):

* key = the session id (UTF-8), value = the stored entry (``app.core.session``: an open
  session's state or a closed session's tombstone); value None deletes it (tombstone expired);
* key = ``META_KEY`` (``0xff`` + ``meta``: not UTF-8, so no session id can be it), value =
  ``{"v": 1, "wm": <event-time watermark ns>, "offset": <last agent.spans offset folded>,
  "hb": <spans folded since the last watermark heartbeat>}`` (so a new owner sends the same
  heartbeats, at the same places, as an uninterrupted run would).

A checkpoint of a partition is written in this order: changed entries, the meta record,
then deletions. A crash mid-checkpoint leaves a prefix: entries newer than the meta record
(harmless: folding is idempotent and the spans after the meta offset are folded again) and
never a deletion whose spans could be read again. The last record of a key wins. The meta
record is sent only once every entry before it is acknowledged (``entries_then_meta``): the
broker refuses a record on its own (one over its size limit, say) and takes the next, and a
meta record past an entry it refused would restore the partition without that session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import orjson

from app.core import session as core

META_KEY = b"\xffmeta"

Record = tuple[bytes, bytes | None]


@dataclass(frozen=True, slots=True)
class PartitionMeta:
    """How far a partition's checkpoint goes: watermark, last folded offset (-1: none) and
    spans since the last heartbeat."""

    watermark: int = 0
    offset: int = -1
    since_heartbeat: int = 0

    def to_bytes(self) -> bytes:
        return orjson.dumps({"v": 1, "wm": self.watermark, "offset": self.offset,
                             "hb": self.since_heartbeat})

    @classmethod
    def from_bytes(cls, raw: bytes) -> PartitionMeta:
        data = orjson.loads(raw)
        return cls(watermark=int(data["wm"]), offset=int(data["offset"]),
                   since_heartbeat=int(data.get("hb", 0)))


@dataclass(slots=True)
class Restored:
    """A partition's checkpoint as read back: live entries by session id, and its meta."""

    entries: dict[str, core.SessionState | core.Tombstone] = field(default_factory=dict)
    meta: PartitionMeta | None = None


def checkpoint_records(entries: Mapping[str, object], changed: Iterable[str],
                       meta: PartitionMeta) -> list[Record]:
    """The records of one checkpoint: changed entries, the meta record, deletions.

    >>> tomb = core.Tombstone("b", 7, "idle")
    >>> [k for k, _ in checkpoint_records({"b": tomb}, ["a", "b"], PartitionMeta(7, 41))]
    [b'b', b'\\xffmeta', b'a']
    """
    upserts: list[Record] = []
    deletes: list[Record] = []
    for sid in sorted(changed):
        entry = entries.get(sid)
        if entry is None:
            deletes.append((sid.encode(), None))
        else:
            upserts.append((sid.encode(), entry.to_bytes()))
    return [*upserts, (META_KEY, meta.to_bytes()), *deletes]


def entries_then_meta(records: list[Record]) -> tuple[list[Record], list[Record]]:
    """A checkpoint's records in two sends: the entries, then the meta record and deletions.

    >>> entries_then_meta([(b"a", b"1"), (META_KEY, b"m"), (b"b", None)])
    ([(b'a', b'1')], [(b'\\xffmeta', b'm'), (b'b', None)])
    """
    at = next(i for i, (key, _) in enumerate(records) if key == META_KEY)
    return records[:at], records[at:]


def restore_records(records: Iterable[Record]) -> Restored:
    """Fold a partition's records, oldest first: the last record of a key wins.

    >>> st = core.Tombstone("s", 5, "idle")
    >>> meta = b'{"v":1,"wm":5,"offset":9,"hb":3}'
    >>> r = restore_records([(b"s", b"{}"), (b"s", st.to_bytes()), (META_KEY, meta),
    ...                      (b"x", core.Tombstone("x", 1, "idle").to_bytes()), (b"x", None)])
    >>> r.entries
    {'s': Tombstone(session_id='s', closed_at_ns=5, closed_by='idle')}
    >>> r.meta
    PartitionMeta(watermark=5, offset=9, since_heartbeat=3)
    """
    latest: dict[bytes, bytes | None] = {}
    for key, value in records:
        latest[key] = value
    meta_raw = latest.pop(META_KEY, None)
    out = Restored(meta=PartitionMeta.from_bytes(meta_raw) if meta_raw is not None else None)
    for key, value in latest.items():
        if value is not None:
            out.entries[key.decode()] = core.load(value)
    return out


class SessionStore:
    """Writes checkpoints with stage 1's producer; reads partitions back with its own
    group-less consumer (started with the store)."""

    def __init__(self, topic: str, producer, reader_kwargs: dict) -> None:
        self.topic, self.producer, self.reader_kwargs = topic, producer, reader_kwargs
        self._reader = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        self._reader = AIOKafkaConsumer(**self.reader_kwargs)
        await self._reader.start()

    async def stop(self) -> None:
        if self._reader is not None:
            await self._reader.stop()
            self._reader = None

    async def write(self, partition: int, records: list[Record]) -> list[asyncio.Future]:
        """Send one checkpoint (in order) to ``partition``; the futures of its acks."""
        send = self.producer.send
        return [await send(self.topic, key=k, value=v, partition=partition) for k, v in records]

    async def restore(self, partitions: Iterable[int]) -> dict[int, Restored]:
        """Every given partition read from its beginning to its current end."""
        from aiokafka import TopicPartition

        tps = [TopicPartition(self.topic, p) for p in sorted(set(partitions))]
        if not tps:
            return {}
        reader = self._reader
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        ends = await reader.end_offsets(tps)
        records: dict[int, list[Record]] = {tp.partition: [] for tp in tps}
        todo = {tp for tp in tps if ends[tp] > 0}
        while todo:
            batch = await reader.getmany(*todo, timeout_ms=500, max_records=50_000)
            for tp, msgs in batch.items():
                records[tp.partition].extend((m.key, m.value) for m in msgs)
            for tp in list(todo):
                if await reader.position(tp) >= ends[tp]:
                    todo.discard(tp)
        reader.unsubscribe()
        return {p: restore_records(recs) for p, recs in records.items()}
