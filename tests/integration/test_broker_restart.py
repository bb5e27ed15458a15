"""The broker stopped and restarted under load (its own broker instance and port, so the
session broker is not disturbed): the worker recovers by itself, no span Kafka acknowledged is
lost, and the emitter counts every span it could not deliver (queued = sent + dropped).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import orjson
import pytest
from pipeline_data import sentinel_records
from reliability_data import compare, describe, isolated, session_records

from app.broker import manager
from app.broker.topics import ensure_topics
from app.emitter import SpanEmitter
from app.settings import Settings
from app.simulate import iter_records
from app.testing import WorkerProcess, free_port, read_topic, scrape_metrics

pytestmark = pytest.mark.integration

SESSIONS = 500
RATE = 1500  # spans per second, about what one worker folds on this 2-core machine
DOWN_S = 3.0
BUFFER = 2_000  # smaller than an outage's worth of spans: some are dropped, and counted


@pytest.fixture(scope="module")
def own_broker():
    """A second broker on its own port, below the Linux ephemeral range (32768-60999): a client
    reconnecting to a stopped broker on an ephemeral-range port can connect to itself (TCP
    simultaneous open) and hold the port, and the restarted broker then cannot bind it."""
    port = int(os.environ.get("LOADSHAPE_TEST_RESTART_KAFKA_PORT", "28592"))
    settings = Settings(kafka_port=port, bootstrap_servers=f"127.0.0.1:{port}")
    manager.wipe(settings)
    manager.up(settings)
    asyncio.run(ensure_topics(settings))
    yield settings
    manager.wipe(settings)


async def emit_with_outage(settings: Settings, records: list[dict]) -> tuple[object, dict]:
    """Emit ``records`` at RATE/s; stop the broker at 40% and restart it DOWN_S later."""
    emitter = SpanEmitter(settings, buffer_size=BUFFER, request_timeout_ms=60_000)
    await emitter.start()
    times: dict[str, float] = {}
    outage = None
    began = time.monotonic()
    for i, rec in enumerate(records):
        emitter.emit(rec)
        if i == int(0.4 * len(records)):
            outage = asyncio.create_task(asyncio.to_thread(bounce, settings, times))
        lag = i / RATE - (time.monotonic() - began)
        if lag > 0:
            await asyncio.sleep(lag)
        elif i % 200 == 0:
            await asyncio.sleep(0)
    await outage
    assert await emitter.flush(timeout=90)
    await emitter.close(timeout=10)
    return emitter.stats, times


def bounce(settings: Settings, times: dict[str, float]) -> None:
    """The broker dies (SIGKILL: no controlled shutdown), stays down DOWN_S, comes back."""
    paths = manager.BrokerPaths(Path(settings.kafka_home), settings.kafka_port)
    pid = manager.read_pid(paths)
    times["down_at"] = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    while Path(f"/proc/{pid}").exists() and not _zombie(pid):
        time.sleep(0.05)
    time.sleep(DOWN_S)
    manager.up(settings)
    times["up_at"] = time.monotonic()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except (OSError, IndexError):
        return True


def test_broker_restart_under_load(own_broker, tmp_path):
    settings = isolated(own_broker, tmp_path)
    records = list(iter_records("dev-to-support", seed=5, sessions=SESSIONS))
    records += sentinel_records(settings.spans_partitions, max(r["end_time_unix_nano"] for r in records))
    port = free_port()
    worker = WorkerProcess(settings, tmp_path / "worker.log", metrics_port=port).start()
    try:
        worker.wait_ready()
        stats, times = asyncio.run(emit_with_outage(settings, records))
        print(f"\nbroker down {times['up_at'] - times['down_at']:.1f}s; emitter {stats}")
        # Nothing silent: every accepted span was either acknowledged or counted as dropped.
        assert stats.queued == len(records) and stats.invalid == 0
        assert stats.sent + stats.dropped == stats.queued
        assert stats.buffered == 0 and stats.in_flight == 0

        # What Kafka acknowledged is on the topic (a producer retry may have written it twice).
        on_topic = read_topic(settings, settings.topic_spans, timeout=60,
                              until=lambda recs: len(recs) >= stats.sent)
        ids = {(r["value"]["session_id"], r["value"]["span_id"]) for r in on_topic}
        assert len(ids) >= stats.sent
        delivered = [r for r in records if (r["session_id"], r["span_id"]) in ids]

        # The worker, which lived through the outage, folded exactly those spans.
        path = tmp_path / "delivered.jsonl"
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in delivered))
        from reliability_data import reference

        ref = reference(settings, path)
        want = {s["session_id"] for s in ref.sessions}
        got = read_topic(settings, settings.topic_sessions, timeout=120,
                         until=lambda recs: want <= {r["value"].get("session_id") for r in recs})
        assert worker.proc.poll() is None, worker.log_tail()
        cmp = compare(session_records(got), ref.sessions, "session_id")
        assert cmp.equal, describe(cmp, "sessions") + "\n" + worker.log_tail()
        assert scrape_metrics(port).get("loadshape_spans_processed_total", 0) >= len(delivered)
        print(f"spans on topic {len(on_topic)} ({len(on_topic) - len(ids)} producer-retry duplicates), "
              f"sessions {len(ref.sessions)}, duplicate session records {cmp.duplicates}")
    finally:
        worker.stop()
