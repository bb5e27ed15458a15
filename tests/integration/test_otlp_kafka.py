"""OTLP/protobuf records (made by the real OTel SDK and its OTLP encoder) through the real
broker: the worker's sessions equal those folded offline from the Collector-JSON encoding."""

from __future__ import annotations

import pytest
from otlp_fixtures import collector_json_record, genai, proto_record

from app.core import session as core
from app.otlp import map_json_lines
from app.testing import WorkerProcess, isolated_settings, produce, read_topic

T0 = 1_767_225_600_000_000_000
SESSIONS = 24


def session_spec(i: int):
    t = T0 + i * 10**9
    agent = ("support", "dev-assistant")[i % 2]
    ident = {"gen_ai.agent.name": agent, "gen_ai.conversation.id": f"otel-{i}"}
    calls = [genai("chat", t + 1000 * k, t + 1000 * k + 500,
                   {**ident, "gen_ai.request.model": "haiku-s",
                    "gen_ai.usage.input_tokens": 1000 * (k + i % 5), "gen_ai.usage.output_tokens": 100,
                    "loadshape.context_limit": 16384})
             for k in range(1 + i % 3)]
    tools = [genai("execute_tool", t + 5000 + k, t + 6000 + k, {**ident, "gen_ai.tool.name": f"tool{k}"})
             for k in range(i % 4)]
    plain = genai("http", t + 7000, t + 7100, {}, name="GET /health")  # not a GenAI span
    plain = type(plain)(plain.name, plain.start_ns, plain.end_ns, {}, None, ())
    return genai("invoke_agent", t, t + 10**8, {**ident, "loadshape.session_end": True},
                 children=calls + tools + [plain])


def batches(n_per_record: int = 6):
    specs = [session_spec(i) for i in range(SESSIONS)]
    return [specs[i:i + n_per_record] for i in range(0, len(specs), n_per_record)]


def offline_sessions() -> dict[str, dict]:
    lines = [collector_json_record(b) for b in batches()]
    states: dict[str, core.SessionState] = {}
    for _, batch in map_json_lines(lines):
        for span in batch.spans:
            states[span.session_id] = core.fold(states.get(span.session_id), span)
    return {sid: core.close(st, "session_end").model_dump(mode="json") for sid, st in states.items()}


@pytest.fixture(scope="module")
def kafka_sessions(tmp_path_factory, kafka_settings):
    tmp = tmp_path_factory.mktemp("otlp")
    settings = isolated_settings(kafka_settings, "loadshape-otlp", state_dir=tmp / "state",
                                 otlp_encoding="otlp_proto")
    records = [(None, proto_record(b)) for b in batches()] + [(None, b"\x00garbage")]
    produce(settings, settings.topic_otlp, records)
    worker = WorkerProcess(settings, tmp / "worker.log").start()
    try:
        worker.wait_ready()
        recs = read_topic(settings, settings.topic_sessions, timeout=90,
                          until=lambda rs: sum(r["key"] != b"__watermark__" for r in rs) >= SESSIONS)
        dlq = read_topic(settings, settings.topic_dlq, timeout=20, until=lambda rs: len(rs) >= 1)
    finally:
        worker.stop()
    sessions = {r["value"]["session_id"]: r["value"] for r in recs if r["key"] != b"__watermark__"}
    return sessions, dlq


def test_proto_path_gives_the_json_paths_sessions(kafka_sessions):
    sessions, _ = kafka_sessions
    expected = offline_sessions()
    assert len(expected) == SESSIONS
    assert sessions == expected


def test_undecodable_record_is_dead_lettered(kafka_sessions):
    _, dlq = kafka_sessions
    assert [d["value"]["reason_code"] for d in dlq] == ["invalid_otlp"]
