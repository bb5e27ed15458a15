"""OTLP -> SpanEvent mapping, on records made by the real OpenTelemetry SDK and encoder."""

from __future__ import annotations

import orjson
import pytest
from otlp_fixtures import (
    SpanSpec,
    collector_json_record,
    export_request,
    genai,
    json_record,
    proto_record,
    span_hex,
    to_collector_json,
    trace_hex,
)

from app.core import session
from app.otlp import (
    MappedBatch,
    OtlpDecodeError,
    decode_request,
    iter_otlp_json_lines,
    map_record,
    map_request,
)
from schemas import SpanEvent

CATALOG = {"small-8b": 16_000, "large-70b": 128_000}
SUPPORT = {"gen_ai.agent.name": "support", "gen_ai.conversation.id": "conv-1",
           "loadshape.task_type": "refund", "gen_ai.provider.name": "openai"}


def session_specs() -> list[SpanSpec]:
    """Trace 1: a support session (spans 1-9); trace 2: a bare chat (10); trace 3: not GenAI."""
    small = {"gen_ai.request.model": "small-8b"}
    http = SpanSpec("POST /v1/chat", 1150, 1900, {"http.request.method": "POST"})
    root = genai("invoke_agent", 1000, 9000, {**SUPPORT, "loadshape.complexity": 0.7}, children=[
        genai("chat", 1100, 2000, {**small, "gen_ai.usage.input_tokens": 1200,
                                   "gen_ai.usage.output_tokens": 300, "loadshape.route": "small",
                                   "gen_ai.conversation.id": "conv-1"}, children=[http]),
        genai("execute_tool", 2100, 2500, {"gen_ai.tool.name": "search",
                                           "loadshape.cache_hit": True,
                                           "loadshape.cache_age_s": 12.5}),
        genai("execute_tool", 2600, 3600, {"gen_ai.tool.name": "lookup_order",
                                           "error.type": "TimeoutError"}, error="timed out"),
        genai("execute_tool", 3700, 4000, {"gen_ai.tool.name": "lookup_order",
                                           "loadshape.attempt": 2}),
        genai("chat", 4100, 5000, {**small, "loadshape.context_limit": 32_000,
                                   "gen_ai.usage.input_tokens": 15_000,
                                   "gen_ai.usage.output_tokens": 100,
                                   "loadshape.reflection": True}),
        genai("chat", 5100, 5200, small, error="rate limited"),
        genai("chat", 5300, 8900, {"gen_ai.response.model": "large-70b",
                                   "gen_ai.usage.input_tokens": 50,
                                   "gen_ai.usage.output_tokens": 20,
                                   "loadshape.session_end": True}),
    ])
    bare = genai("chat", 10_000, 11_000, {"gen_ai.system": "anthropic",
                                          "gen_ai.request.model": "unknown-model",
                                          "gen_ai.usage.input_tokens": 10,
                                          "gen_ai.usage.output_tokens": 5})
    legacy = SpanSpec("llm call", 12_000, 13_000, {"gen_ai.system": "x",
                                                   "gen_ai.request.model": "m"})
    return [root, bare, legacy]


def native(k: int, operation: str, start: int, end: int, parent: int | None = 1,
           **fields: object) -> SpanEvent:
    """The SpanEvent an agent of trace 1 would emit directly for span ``k``."""
    base = dict(trace_id=trace_hex(1), span_id=span_hex(k), session_id="conv-1",
                parent_span_id=span_hex(parent) if parent else None, agent="support",
                task_type="refund", operation=operation,
                start_time_unix_nano=start, end_time_unix_nano=end)
    return SpanEvent.model_validate({**base, **fields})


def expected_events() -> list[SpanEvent]:
    return [
        native(1, "invoke_agent", 1000, 9000, parent=None, complexity=0.7,
               provider="openai"),
        native(2, "chat", 1100, 2000, model="small-8b", input_tokens=1200, output_tokens=300,
               route="small", context_limit=16_000),
        native(4, "execute_tool", 2100, 2500, tool_name="search", cache_hit=True,
               cache_age_s=12.5),
        native(5, "execute_tool", 2600, 3600, tool_name="lookup_order", status="error",
               error_type="TimeoutError"),
        native(6, "execute_tool", 3700, 4000, tool_name="lookup_order", attempt=2),
        native(7, "chat", 4100, 5000, model="small-8b", context_limit=32_000,
               input_tokens=15_000, output_tokens=100, reflection=True),
        native(8, "chat", 5100, 5200, model="small-8b", context_limit=16_000, status="error",
               error_type="_OTHER"),
        native(9, "chat", 5300, 8900, model="large-70b", context_limit=128_000, input_tokens=50,
               output_tokens=20, session_end=True),
        SpanEvent(trace_id=trace_hex(2), span_id=span_hex(10), session_id=trace_hex(2),
                  agent="test-svc", operation="chat", model="unknown-model", input_tokens=10,
                  output_tokens=5, start_time_unix_nano=10_000, end_time_unix_nano=11_000,
                  provider="anthropic"),
    ]


def by_span(events: list[SpanEvent]) -> dict[str, SpanEvent]:
    return {ev.span_id: ev for ev in events}


@pytest.fixture(scope="module")
def records() -> dict[str, bytes]:
    specs = session_specs()
    return {"otlp_proto": proto_record(specs), "otlp_json": json_record(specs),
            "collector_json": collector_json_record(specs)}


@pytest.mark.parametrize("kind", ["otlp_proto", "otlp_json", "collector_json"])
@pytest.mark.parametrize("auto", [False, True])
def test_every_encoding_maps_to_the_native_events(records, kind, auto) -> None:
    encoding = "auto" if auto else kind.replace("collector_json", "otlp_json")
    batch = map_request(decode_request(records[kind], encoding), CATALOG)
    assert batch.rejected == []
    assert by_span(batch.spans) == by_span(expected_events())
    assert (batch.skipped_non_genai, batch.partial_genai) == (2, 1)


def test_context_limit_comes_from_the_span_then_the_catalog(records) -> None:
    bare = {ev.span_id: ev.context_limit for ev in map_record(records["otlp_proto"]).spans}
    assert bare[span_hex(7)] == 32_000  # explicit attribute, no catalog needed
    assert bare[span_hex(2)] is None and bare[span_hex(9)] is None
    mapped = map_record(records["otlp_proto"], context_windows=CATALOG).spans
    assert {ev.span_id: ev.context_limit for ev in mapped}[span_hex(9)] == 128_000


def test_agent_precedence_span_ancestor_scope_resource_service() -> None:
    http = SpanSpec("GET /", 2, 3, {"http.request.method": "GET"},
                    children=(genai("chat", 2, 3),))
    specs = [genai("invoke_agent", 1, 9, {"gen_ai.agent.name": "own"}, children=[http]),
             genai("chat", 10, 11)]

    def agents(**kw) -> list[str]:
        spans = sorted(map_request(export_request(specs, **kw)).spans, key=lambda e: e.span_id)
        return [ev.agent for ev in spans]

    with_scope = agents(resource={"service.name": "svc", "gen_ai.agent.name": "res"},
                        scope_attributes={"gen_ai.agent.name": "scope"})
    assert with_scope == ["own", "own", "scope"]  # chat under a non-GenAI span inherits too
    assert agents(resource={"service.name": "svc", "gen_ai.agent.name": "res"})[2] == "res"
    assert agents(resource={"service.name": "svc"})[2] == "svc"


def test_genai_span_under_a_framework_span_keeps_its_depth() -> None:
    # invoke_agent -> GET / (not GenAI, skipped) -> chat -> execute_tool: three GenAI levels
    tool = genai("execute_tool", 3, 4, {"gen_ai.tool.name": "search"})
    http = SpanSpec("GET /", 2, 6, {"http.request.method": "GET"},
                    children=(genai("chat", 2, 5, children=[tool]),))
    mapped = map_request(export_request([genai("invoke_agent", 1, 9, children=[http])]))
    parents = {ev.span_id: ev.parent_span_id for ev in mapped.spans}
    assert mapped.skipped_non_genai == 1
    assert parents == {span_hex(1): None, span_hex(3): span_hex(1), span_hex(4): span_hex(3)}
    state = None
    for ev in mapped.spans:
        state = session.fold(state, ev)
    assert session.close(state, "session_end").depth == 3
    # no GenAI ancestor at all: the chat is a root of the session's tree
    alone = map_request(export_request([http])).spans
    assert {ev.span_id: ev.parent_span_id for ev in alone}[span_hex(2)] is None


def test_a_parent_cycle_in_hostile_input_terminates() -> None:
    doc = orjson.loads(to_collector_json(export_request([genai("chat", 1, 2)])))
    span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["parentSpanId"] = span["spanId"]
    (ev,) = map_record(orjson.dumps(doc), "otlp_json").spans
    assert ev.agent == "test-svc" and ev.parent_span_id == ev.span_id


@pytest.mark.parametrize(("attrs", "field", "attribute"), [
    ({"gen_ai.usage.input_tokens": -5}, "input_tokens", "gen_ai.usage.input_tokens"),
    ({"loadshape.complexity": 1.5}, "complexity", "loadshape.complexity"),
    ({"loadshape.reflection": "yes"}, "reflection", "loadshape.reflection"),
    ({"gen_ai.operation.name": ""}, "operation", "gen_ai.operation.name"),
])
def test_a_span_with_a_bad_attribute_is_rejected_naming_the_field(attrs, field, attribute):
    specs = [genai("chat", 1, 2, attrs), genai("chat", 3, 4)]
    batch = map_record(collector_json_record(specs), "otlp_json")
    (rejection,) = batch.rejected
    assert rejection.field == field and attribute in rejection.reason
    assert orjson.loads(rejection.span_json)["span_id"] == span_hex(1)
    assert [ev.span_id for ev in batch.spans] == [span_hex(2)]  # the good span still maps


def test_end_before_start_is_rejected() -> None:
    doc = orjson.loads(collector_json_record([genai("chat", 5, 9)]))
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["endTimeUnixNano"] = "4"
    (rejection,) = map_record(orjson.dumps(doc)).rejected
    assert rejection.field == "end_time_unix_nano"


def test_a_json_line_with_an_undecodable_field_is_a_record_error() -> None:
    doc = orjson.loads(collector_json_record([genai("chat", 5, 9)]))
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["startTimeUnixNano"] = "yesterday"
    err = map_record(orjson.dumps(doc))
    assert isinstance(err, OtlpDecodeError) and err.field == "startTimeUnixNano"
    assert "resourceSpans.scopeSpans.spans.startTimeUnixNano" in err.reason


@pytest.mark.parametrize("cut", [1, 40, -1])
def test_truncated_or_garbage_proto_is_a_decode_error(records, cut) -> None:
    raw = records["otlp_proto"]
    for bad in (raw[:cut], b"\x08\x01" + raw, b"hello world"):
        with pytest.raises(OtlpDecodeError) as exc:
            decode_request(bad, "otlp_proto")
        assert exc.value.code == "invalid_otlp" and exc.value.original == bad


def test_auto_detection_of_json_with_whitespace_and_proto_starting_like_json() -> None:
    req = export_request([genai("chat", 1, 2)])
    assert decode_request(b" \n\t" + to_collector_json(req)) == req
    # A proto whose first field is 123 bytes long starts b"\n{", which looks like JSON.
    first = req.resource_spans[0]
    first.resource.Clear()
    first.scope_spans[0].scope.Clear()
    pad = first.resource.attributes.add(key="pad").value
    while first.ByteSize() < 123:
        pad.string_value += "x"
    raw = req.SerializeToString()
    assert raw[:2] == b"\n{"
    assert decode_request(raw) == req


def test_json_that_is_not_a_trace_export_is_a_decode_error() -> None:
    span_event = expected_events()[0].model_dump_json().encode()
    with pytest.raises(OtlpDecodeError, match="no resourceSpans"):
        decode_request(span_event)
    with pytest.raises(ValueError, match="unknown OTLP encoding"):
        decode_request(b"{}", "otlp_yaml")


def test_collector_file_lines(tmp_path, records) -> None:
    good = records["collector_json"]
    bad = good.replace(b'"startTimeUnixNano":"1000"', b'"startTimeUnixNano":"soon"', 1)
    path = tmp_path / "traces.jsonl"
    path.write_bytes(b"\n".join([good, b"", b"\x00garbage", bad, good]) + b"\n")
    results = list(iter_otlp_json_lines(path, CATALOG))
    assert [n for n, _ in results] == [1, 3, 4, 5]
    kinds = [type(r) for _, r in results]
    assert kinds == [MappedBatch, OtlpDecodeError, OtlpDecodeError, MappedBatch]
    assert results[1][1].original == b"\x00garbage"
    assert results[2][1].field == "startTimeUnixNano"
    assert by_span(results[3][1].spans) == by_span(expected_events())
