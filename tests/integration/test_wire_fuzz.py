"""The wire fuzz corpus (tests/unit/wire_corpus.py: 10,000 agent.spans records and 2,000
otlp_spans records made by Hypothesis) through a live worker, in bulk: every record is
dead-lettered or accepted exactly as the pure decoders predict, record by record (by offset),
the counts add up to what was sent, and the worker survives and still folds a good session.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson
import pytest
from reliability_data import isolated, session_records, wait_for
from wire_corpus import expect_otlp, expect_span, otlp_corpus, span_corpus

from app.broker.client_config import aiokafka_kwargs
from app.testing import WorkerProcess, free_port, read_topic, scrape_metrics

pytestmark = pytest.mark.integration


async def _produce_to_partition0(settings, topic: str, values) -> list[int]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(linger_ms=20, max_batch_size=1 << 20, max_request_size=4 << 20,
                                **aiokafka_kwargs(settings))
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, partition=0) for v in values]
        return [m.offset for m in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


def produce_to_partition0(settings, topic: str, values) -> list[int]:
    """Send unkeyed records to partition 0; their offsets, in order."""
    return asyncio.run(_produce_to_partition0(settings, topic, values))


def test_fuzzed_records_are_dead_lettered_or_accepted_and_the_worker_survives(kafka_settings,
                                                                             tmp_path):
    spans, otlp = span_corpus(), otlp_corpus()
    settings = isolated(kafka_settings, tmp_path)
    want_spans = {i: expect_span(raw) for i, raw in enumerate(spans)}
    want_otlp = {i: expect_otlp(raw, settings.otlp_encoding) for i, raw in enumerate(otlp)}
    span_offsets = produce_to_partition0(settings, settings.topic_spans, spans)
    otlp_offsets = produce_to_partition0(settings, settings.topic_otlp, otlp)
    expected_dlq = Counter()
    for i, off in enumerate(span_offsets):
        expected_dlq[(settings.topic_spans, off)] += want_spans[i].dead_letters
    for i, off in enumerate(otlp_offsets):
        expected_dlq[(settings.topic_otlp, off)] += want_otlp[i].dead_letters
    expected_dlq = +expected_dlq  # drop zero counts
    accepted = sum(e.spans for e in want_spans.values()) + sum(e.spans for e in want_otlp.values())
    dead = sum(expected_dlq.values())

    port = free_port()
    worker = WorkerProcess(settings, tmp_path / "worker.log", metrics_port=port).start()
    try:
        worker.wait_ready()
        dlq = read_topic(settings, settings.topic_dlq, timeout=180, until=lambda recs: len(recs) >= dead)
        wait_for(lambda: scrape_metrics(port).get("loadshape_spans_processed_total", 0) >= accepted, 120,
                 f"{accepted} accepted spans")
        got_dlq = Counter((r["value"]["source"], r["value"]["offset"]) for r in dlq)
        processed = scrape_metrics(port)["loadshape_spans_processed_total"]
        print(f"\nfuzz: {len(spans)} agent.spans + {len(otlp)} otlp_spans records "
              f"({len(set(spans)) + len(set(otlp))} distinct); dead-lettered {len(dlq)}, "
              f"spans accepted {processed:.0f}; reasons "
              f"{dict(Counter(r['value']['reason_code'] for r in dlq))}")
        assert got_dlq == expected_dlq, (set(got_dlq.items()) ^ set(expected_dlq.items()))
        assert processed == accepted
        # Every record is accounted for: a native record is either accepted or dead-lettered.
        native_dead = sum(n for (src, _), n in got_dlq.items() if src == settings.topic_spans)
        native_ok = sum(e.spans for e in want_spans.values())
        assert native_dead + native_ok == len(spans)

        # Still alive, and still folding: one good session after the storm.
        good = {"trace_id": "after", "span_id": "root", "session_id": "after-fuzz", "agent": "support",
                "operation": "invoke_agent", "session_end": True,
                "start_time_unix_nano": 1, "end_time_unix_nano": 2}
        produce_to_partition0(settings, settings.topic_spans, [orjson.dumps(good)])
        out = read_topic(settings, settings.topic_sessions, timeout=60, until=lambda recs: any(
            r["value"].get("session_id") == "after-fuzz" for r in recs))
        assert any(s.get("session_id") == "after-fuzz" for s in session_records(out))
        assert worker.proc.poll() is None, worker.log_tail()
        assert b"Traceback" not in worker.log_path.read_bytes(), worker.log_tail(80)
    finally:
        worker.stop()
