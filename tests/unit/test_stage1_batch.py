"""The batch stage-1 shell's delivery order, with fake Kafka clients whose acks the test gives:

* a checkpoint writes nothing to the state topic before every session/heartbeat it depends on
  is acknowledged, and commits the offset only once the checkpoint itself is acknowledged;
* a failed session send: nothing written, nothing committed, the partition restarts from its
  last checkpoint (the same sessions are published again);
* a dead letter the broker refuses does not hold the partition back;
* on revocation the partition is checkpointed and committed, then dropped: records of it
  fetched before are not folded.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from app.core.stage1 import SessionStep
from app.metrics import LoadshapeMetrics
from app.settings import Settings
from app.stream.session_store import META_KEY, restore_records
from app.stream.stage1_batch import BatchStage1

SETTINGS = Settings(spans_partitions=2, sessions_partitions=2)
STATE = SETTINGS.stage1_state_topic


@dataclass
class Msg:
    key: bytes | None
    value: bytes
    offset: int


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, int | None, asyncio.Future]] = []

    async def send(self, topic, key=None, value=None, partition=None, headers=None):
        fut = asyncio.get_running_loop().create_future()
        self.sent.append((topic, key, value, partition, fut))
        return fut

    def to(self, topic: str):
        return [s for s in self.sent if s[0] == topic]

    def ack(self, topic: str | None = None, error: Exception | None = None) -> None:
        for t, _, _, _, fut in self.sent:
            if (topic is None or t == topic) and not fut.done():
                fut.set_exception(error) if error else fut.set_result(None)


class FakeConsumer:
    def __init__(self, partitions) -> None:
        self.tps = {TopicPartition(SETTINGS.topic_spans, p) for p in partitions}
        self.commits: list[dict] = []
        self.seeks: dict[int, object] = {}

    def assignment(self):
        return self.tps

    async def commit(self, offsets):
        self.commits.append({tp.partition: off for tp, off in offsets.items()})

    def seek(self, tp, offset):
        self.seeks[tp.partition] = offset

    async def seek_to_beginning(self, *tps):
        for tp in tps:
            self.seeks[tp.partition] = "beginning"

    def highwater(self, tp):
        return None


class FakeStore:
    """The state topic: what the producer sent to it and Kafka acknowledged."""

    def __init__(self, producer: FakeProducer) -> None:
        self.producer = producer

    async def write(self, partition, records):
        return [await self.producer.send(STATE, key=k, value=v, partition=partition)
                for k, v in records]

    async def restore(self, partitions):
        acked = [(p, k, v) for t, k, v, p, f in self.producer.sent
                 if t == STATE and f.done() and not f.exception()]
        return {p: restore_records([(k, v) for q, k, v in acked if q == p]) for p in partitions}


def span(session: str, span_id: str, t: int, end: bool = False) -> bytes:
    return orjson.dumps({"trace_id": session, "span_id": span_id, "session_id": session,
                         "agent": "a", "operation": "chat", "start_time_unix_nano": t,
                         "end_time_unix_nano": t + 1, "session_end": end})


def batch(partition: int, values: list[bytes], first: int = 0, keys=None):
    keys = keys or [orjson.loads(v)["session_id"].encode() for v in values]
    return {TopicPartition(SETTINGS.topic_spans, partition):
            [Msg(k, v, first + i) for i, (k, v) in enumerate(zip(keys, values, strict=True))]}


async def started(partitions=(0,)):
    stage = BatchStage1(None, SETTINGS, LoadshapeMetrics.create(CollectorRegistry(), max_segments=5),
                        SessionStep.from_settings(SETTINGS))
    stage.producer = FakeProducer()
    stage.consumer = FakeConsumer(partitions)
    stage.store = FakeStore(stage.producer)
    await stage.on_assigned(set(partitions))
    return stage


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def acking(producer: FakeProducer, coro):
    """Run ``coro`` while every send is acknowledged as soon as it is made."""
    task = asyncio.ensure_future(coro)
    while not task.done():
        producer.ack()
        await asyncio.sleep(0)
    return await task


def test_checkpoint_waits_for_the_sessions_and_commit_waits_for_the_checkpoint():
    async def go():
        stage = await started()
        p = stage.producer
        await stage._fold(batch(0, [span("s1", "a", 1), span("s1", "b", 2, end=True),
                                    span("s2", "c", 3)]))
        assert len(p.to(SETTINGS.topic_sessions)) == 1  # s1 closed
        task = asyncio.ensure_future(stage._checkpoint({0}))
        await settle()
        assert p.to(STATE) == [] and stage.consumer.commits == []  # the session is not acked
        p.ack(SETTINGS.topic_sessions)
        await settle()
        keys = [k for _, k, _, _, _ in p.to(STATE)]
        assert keys == [b"s1", b"s2"]  # s1's tombstone only now; the meta record once they are acked
        p.ack(STATE)
        await settle()
        assert [k for _, k, _, _, _ in p.to(STATE)] == [b"s1", b"s2", META_KEY]
        assert stage.consumer.commits == []  # the checkpoint is not acked
        p.ack(STATE)
        assert await task == set()
        assert stage.consumer.commits == [{0: 3}]
        meta = orjson.loads(p.to(STATE)[-1][2])
        assert meta["offset"] == 2 and meta["wm"] == 4

    run(go())


def test_a_failed_session_send_restarts_the_partition_from_its_checkpoint():
    async def go():
        stage = await started()
        p = stage.producer
        await stage._fold(batch(0, [span("s1", "a", 1)]))
        assert await acking(p, stage._checkpoint({0})) == set()  # checkpoint 1: s1 open, offset 0
        await stage._fold(batch(0, [span("s1", "b", 2, end=True)], first=1))
        p.ack(SETTINGS.topic_sessions, error=RuntimeError("broker said no"))
        stage.checkpointed_at[0] = -1e9  # due
        await stage._maybe_checkpoint()
        assert stage.consumer.commits == [{0: 1}]  # nothing more committed
        assert [k for _, k, _, _, _ in p.to(STATE)] == [b"s1", META_KEY]  # nothing more written
        assert stage.consumer.seeks[0] == 1  # read again after checkpoint 1
        assert stage.folds[0].offset == 0 and stage.folds[0].live.entries["s1"].spans == 1
        await stage._fold(batch(0, [span("s1", "b", 2, end=True)], first=1))
        sessions = p.to(SETTINGS.topic_sessions)
        assert len(sessions) == 2 and sessions[0][2] == sessions[1][2]  # published again, same

    run(go())


def test_a_refused_dead_letter_does_not_hold_the_partition_back():
    async def go():
        stage = await started()
        p = stage.producer
        await stage._fold(batch(0, [b"not json", span("s1", "a", 1)], keys=[b"k", b"s1"]))
        p.ack(SETTINGS.topic_dlq, error=RuntimeError("message too large"))
        task = asyncio.ensure_future(stage._checkpoint({0}))
        await settle()
        p.ack(STATE)  # the entries
        await settle()
        p.ack(STATE)  # the meta record
        assert await task == set() and stage.consumer.commits == [{0: 2}]

    run(go())


def test_a_refused_state_record_sends_no_meta_record_and_restarts_the_partition():
    """The broker refuses one record on its own (over its size limit) and takes the next: a
    meta record past the refused entry would restore the partition without that session."""
    async def go():
        stage = await started()
        p = stage.producer
        await stage._fold(batch(0, [span("s1", "a", 1), span("s2", "b", 2)]))
        task = asyncio.ensure_future(stage._checkpoint({0}))
        await settle()
        [(_, key, _, _, fut)] = [s for s in p.to(STATE) if s[1] == b"s2"]
        fut.set_exception(RuntimeError("MessageSizeTooLargeError"))
        p.ack(STATE)  # s1
        assert await task == {0}
        assert META_KEY not in [k for _, k, _, _, _ in p.to(STATE)]
        assert stage.consumer.commits == []

    run(go())


def test_revocation_checkpoints_commits_and_drops_the_partition():
    async def go():
        stage = await started(partitions=(0, 1))
        p = stage.producer
        await stage._fold(batch(1, [span("x", "a", 1)]))
        fetched_before = batch(1, [span("x", "b", 2)], first=1)

        await acking(p, stage.on_revoked({0, 1}))
        assert stage.consumer.commits == [{1: 1}]  # partition 0 had nothing to checkpoint
        assert stage.folds == {}
        sent = len(p.sent)
        await stage._fold(fetched_before)  # came in before the revocation: not ours any more
        assert len(p.sent) == sent
        stage.consumer = FakeConsumer([1])
        await stage.on_assigned({1})
        assert stage.consumer.seeks == {1: 1} and stage.folds[1].live.entries["x"].spans == 1

    run(go())
