"""The Faust worker against the real broker: dev-to-support yields drift alerts for the
support segment's fan-out and context metrics, none for unchanged segments, and exactly the
alerts an offline replay of the same records gives; malformed records are dead-lettered."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_data import SENTINEL_AGENT, keyed_lines, replay_alerts, workload_file

from app.settings import PROJECT_ROOT
from app.testing import WorkerProcess, isolated_settings, produce, read_topic

ASSUMPTIONS = PROJECT_ROOT / "examples" / "assumptions.yaml"
MALFORMED = [b'{"trace_id": "t", "span_id": "s"', b"\xff\xfe not utf-8",
             b'{"trace_id":"t","span_id":"s","session_id":"x","agent":"a","operation":"chat",'
             b'"input_tokens":-4,"start_time_unix_nano":1,"end_time_unix_nano":2}']


@pytest.fixture(scope="module")
def run(tmp_path_factory, kafka_settings):
    tmp = tmp_path_factory.mktemp("pipeline")
    settings = isolated_settings(kafka_settings, "loadshape-it", state_dir=tmp / "state",
                                 assumptions_file=ASSUMPTIONS, baseline_sessions=500)
    data = workload_file(tmp / "spans.jsonl", scenario="dev-to-support", seed=7, sessions=4000,
                         partitions=settings.spans_partitions)
    records = keyed_lines(data)
    mixed = records[:500] + [(b"bad", m) for m in MALFORMED] + records[500:]
    produce(settings, settings.topic_spans, mixed)
    worker = WorkerProcess(settings, tmp / "worker.log").start()
    expected = replay_alerts(settings, data)
    try:
        worker.wait_ready()
        got = read_topic(settings, settings.topic_alerts, timeout=240,
                         until=lambda recs: len(recs) >= len(expected))
        extra = read_topic(settings, settings.topic_alerts, timeout=3)  # nothing more arrives
        dlq = read_topic(settings, settings.topic_dlq, timeout=30,
                         until=lambda recs: len(recs) >= len(MALFORMED))
    finally:
        worker.stop()
    return {"expected": expected, "got": [r["value"] for r in got], "extra": extra, "dlq": dlq,
            "log": Path(worker.log_path)}


def _drifts(alerts, agent):
    return {a["metric"] for a in alerts if a["kind"] == "drift" and a["segment"]["agent"] == agent}


def test_worker_alerts_equal_offline_replay(run):
    assert run["expected"], "the replay found no alerts at all"
    key = lambda a: a["alert_id"]  # noqa: E731
    assert sorted(run["got"], key=key) == sorted(run["expected"], key=key), run["log"].read_text()[-3000:]
    assert len(run["extra"]) == len(run["got"])


def test_support_fanout_and_context_drift_and_nothing_else(run):
    support = _drifts(run["got"], "support")
    assert "fanout" in support
    assert support & {"context_tokens", "context_utilization", "truncations"}
    for agent in ("dev-assistant", "search", SENTINEL_AGENT):
        assert _drifts(run["got"], agent) == set(), agent


def test_16k_cap_assumption_breaks(run):
    broken = [a for a in run["got"] if a["kind"] == "assumption_broken"]
    assert any(a["assumption"]["id"] == "support-context-cap" for a in broken)
    assert all("architectural review" in a["message"] for a in broken)


def test_malformed_records_are_dead_lettered_with_reason_and_offset(run):
    letters = [r["value"] for r in run["dlq"]]
    assert len(letters) == len(MALFORMED)
    assert {dl["reason_code"] for dl in letters} == {"invalid_json", "invalid_utf8", "invalid_field"}
    bad_field = next(dl for dl in letters if dl["reason_code"] == "invalid_field")
    assert bad_field["field"] == "input_tokens" and "input_tokens" in bad_field["reason"]
    assert all(dl["offset"] is not None and dl["partition"] is not None for dl in letters)
