"""A copy of a session published long after the first (as stage 1 does after a crash) reaches a
running worker's stage 2 through Kafka and Faust with its ``loadshape-closed-wm`` header, and is
dropped: not folded again as late, though more than 1,024 sessions of its segment were released
between the two copies (the most a record without the header is checked against)."""

from __future__ import annotations

import asyncio

import pytest
from reliability_data import isolated, wait_for

from app.broker.client_config import aiokafka_kwargs
from app.broker.partitioner import partition_of
from app.testing import WorkerProcess, free_port, scrape_metrics
from schemas import closed_wm
from schemas.common import Segment
from schemas.heartbeat import WATERMARK_KEY, Heartbeat
from schemas.session import SessionShape

pytestmark = pytest.mark.integration

SEC = 10**9
T0 = 1_767_225_600 * SEC  # event time of session 0
SESSIONS, COPY_OF, COPY_AT = 1120, 10, 1110


def session(i: int) -> bytes:
    return SessionShape(session_id=f"copy-{i:05d}", segment=Segment(agent="copies"),
                        start_time_unix_nano=T0 + i * SEC - 1, end_time_unix_nano=T0 + i * SEC,
                        closed_by="session_end", spans=5, fanout=3 + i % 3).model_dump_json().encode()


def records(spans_partitions: int, q: int) -> list[tuple]:
    """(key, value, partition, headers) for the sessions topic, as stage 1 would send them:
    session i closed by span partition i % P; the partition of session 10 checkpoints no
    further than before it (its stage 1 died and is restored), the others follow closely."""
    down = COPY_OF % spans_partitions
    out = []

    def add(i: int) -> None:
        where = closed_wm.encode(i % spans_partitions, T0 + i * SEC)
        out.append((b"copies", session(i), q, [(closed_wm.HEADER, where)]))

    for i in range(SESSIONS):
        add(i)
        if i == COPY_AT:
            add(COPY_OF)  # published again by the restored stage 1
        if i % 5 == 4:
            for src in range(spans_partitions):
                ck = T0 + (5 if src == down else i - 40) * SEC
                beat = Heartbeat(src=src, wm=T0 + i * SEC, ck=max(ck, T0)).encode()
                out.append((WATERMARK_KEY, beat, q, None))
    for src in range(spans_partitions):
        out.append((WATERMARK_KEY, Heartbeat(src=src, wm=T0 + 10**6 * SEC).encode(), q, None))
    return out


async def _send(settings, recs) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**aiokafka_kwargs(settings))
    await producer.start()
    try:
        sent = [await producer.send(settings.topic_sessions, key=k, value=v, partition=p, headers=h)
                for k, v, p, h in recs]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def test_a_copy_with_its_header_is_dropped_by_a_running_worker(kafka_settings, tmp_path):
    settings = isolated(kafka_settings, tmp_path)
    q = partition_of(b"copies", settings.sessions_partitions)
    port = free_port()
    worker = WorkerProcess(settings, tmp_path / "worker.log", metrics_port=port).start()
    try:
        worker.wait_ready()
        asyncio.run(_send(settings, records(settings.spans_partitions, q)))
        folded = lambda: scrape_metrics(port).get("loadshape_session_fanout_count", 0.0)  # noqa: E731
        wait_for(lambda: folded() >= SESSIONS, 120, "every session folded")
        metrics = scrape_metrics(port)
        print(f"\ncopies: {metrics.get('loadshape_session_fanout_count'):.0f} folded, "
              f"{metrics.get('loadshape_sessions_copies_dropped_total'):.0f} copies dropped, "
              f"{metrics.get('loadshape_sessions_late_total'):.0f} late")
        assert metrics["loadshape_session_fanout_count"] == SESSIONS
        assert metrics["loadshape_sessions_copies_dropped_total"] == 1
        assert metrics["loadshape_sessions_late_total"] == 0
    finally:
        worker.stop()
