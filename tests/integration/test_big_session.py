"""A session too large for one state record neither stalls nor loses its span partition.

Stage 1 checkpoints an open session's state as one record of its compacted state topic, and
a Kafka record is at most 1 MB. A producer can send a session whose span ids alone pass that
(here 10,000 spans with 120-character ids, ~1.3 MB), left open across a checkpoint. Before
the size guard the broker refused that record and took the meta record after it: the
partition was restored without the session (the worker log said "checkpoint failed").
Now the spans beyond ``session_max_state_bytes`` are dead-lettered, and the session closes
with the rest.
"""

from __future__ import annotations

import time

import orjson
from pipeline_data import sentinel_records

from app.testing import WorkerProcess, isolated_settings, produce, read_topic

T0 = 1_767_225_600 * 10**9
BIG_SPANS = 10_000


def span(session: str, span_id: str, i: int, **extra) -> tuple[bytes, bytes]:
    rec = {"trace_id": session, "span_id": span_id, "session_id": session, "agent": "big",
           "operation": "execute_tool", "tool_name": "grep", "parent_span_id": "root",
           "start_time_unix_nano": T0 + i * 10**6, "end_time_unix_nano": T0 + i * 10**6 + 1,
           **extra}
    return session.encode(), orjson.dumps(rec)


def test_an_oversized_session_is_capped_and_its_partition_goes_on(tmp_path, kafka_settings):
    settings = isolated_settings(kafka_settings, "loadshape-big", state_dir=tmp_path / "state",
                                 reorder_lateness_s=1.0)
    big = [span("big-1", f"{i:08d}" + "x" * 112, i) for i in range(BIG_SPANS)]
    later = [span(f"after-{k}", "root", BIG_SPANS + k, session_end=True) for k in range(20)]
    end = [span("big-1", "the-end", BIG_SPANS + 30, session_end=True)]
    sentinels = [(s["session_id"].encode(), orjson.dumps(s))
                 for s in sentinel_records(settings.spans_partitions, T0 + (BIG_SPANS + 100) * 10**6)]
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        produce(settings, settings.topic_spans, big)
        time.sleep(3 * settings.stage1_checkpoint_s)  # a checkpoint with the session open
        produce(settings, settings.topic_spans, later + end + sentinels)
        sessions = read_topic(settings, settings.topic_sessions, timeout=60, until=lambda recs: {
            "big-1", *(f"after-{k}" for k in range(20))} <= {r["value"].get("session_id") for r in recs})
        shapes = {r["value"]["session_id"]: r["value"] for r in sessions if "session_id" in r["value"]}
        refused = BIG_SPANS + 1 - shapes.get("big-1", {}).get("spans", BIG_SPANS + 1)
        dlq = read_topic(settings, settings.topic_dlq, timeout=30,
                         until=lambda recs: len(recs) >= refused)
    finally:
        worker.stop()
    log = worker.log_path.read_text()
    assert "big-1" in shapes and all(f"after-{k}" in shapes for k in range(20)), log[-3000:]
    assert "checkpoint failed" not in log, log[-3000:]
    assert shapes["big-1"]["closed_by"] == "session_end"
    assert 0 < refused < BIG_SPANS  # part of the session kept, the rest dead-lettered
    letters = [r["value"] for r in dlq]
    assert len(letters) == refused and {d["reason_code"] for d in letters} == {"session_too_large"}
    assert len({d["offset"] for d in letters}) == refused  # each refused span once
