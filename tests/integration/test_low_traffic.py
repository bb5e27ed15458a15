"""A quiet pipeline still releases its sessions: stage 1 tells stage 2 its watermark on a
processing-time schedule too, not only every ``HEARTBEAT_EVERY`` spans of a partition.

40 one-span sessions of a segment whose declared assumption (fan-out p50 >= 1) they break,
then one sentinel span per span partition past the reorder lateness: a handful of spans per
partition, far fewer than ``HEARTBEAT_EVERY``. Stage 2 may release the sessions (and the
tracker judge them) only once every partition's watermark has passed them; without a
heartbeat between those every 128 spans it never hears of that, and no alert comes.
"""

from __future__ import annotations

import orjson
from pipeline_data import sentinel_records

from app.stream.stage1_partition import HEARTBEAT_EVERY
from app.testing import WorkerProcess, isolated_settings, produce, read_topic

SESSIONS = 40
T0 = 1_767_225_600 * 10**9


def quiet_records() -> list[tuple[bytes, bytes]]:
    spans = [{"trace_id": f"q-{i}", "span_id": "root", "session_id": f"q-{i}", "agent": "quiet",
              "operation": "invoke_agent", "session_end": True,
              "start_time_unix_nano": T0 + i * 10**9, "end_time_unix_nano": T0 + i * 10**9 + 1}
             for i in range(SESSIONS)]
    return [(s["session_id"].encode(), orjson.dumps(s)) for s in spans]


def test_a_few_spans_per_partition_are_released_and_judged(tmp_path, kafka_settings):
    assumptions = tmp_path / "assumptions.yaml"
    assumptions.write_text("assumptions:\n  - {id: quiet-fanout, segment: {agent: quiet}, "
                           "metric: fanout, stat: p50, op: '>=', bound: 1, why: low traffic}\n")
    settings = isolated_settings(kafka_settings, "loadshape-quiet", state_dir=tmp_path / "state",
                                 assumptions_file=assumptions, reorder_lateness_s=1.0)
    sentinels = sentinel_records(settings.spans_partitions, T0 + SESSIONS * 10**9)
    records = quiet_records() + [(s["session_id"].encode(), orjson.dumps(s)) for s in sentinels]
    assert len(records) < HEARTBEAT_EVERY  # fewer in all than one partition's heartbeat period
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        produce(settings, settings.topic_spans, records)
        alerts = read_topic(settings, settings.topic_alerts, timeout=60,
                            until=lambda recs: any(r["value"]["kind"] == "assumption_broken"
                                                   for r in recs))
    finally:
        worker.stop()
    broken = [r["value"] for r in alerts if r["value"]["kind"] == "assumption_broken"]
    assert broken, worker.log_path.read_text()[-3000:]
    assert broken[0]["segment"]["agent"] == "quiet"
