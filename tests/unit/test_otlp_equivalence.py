"""Issue 6 acceptance: real OpenTelemetry SDK spans through both OTLP encodings give the
same sessions and the same alerts as the equivalent native SpanEvents.

A simulated dev-to-support workload (large enough to raise drift alerts) is rebuilt as
real SDK span trees: each session's tree from its ``parent_span_id`` links, children
started in their parent's context, every SpanEvent field on the GenAI / ``loadshape.*``
attribute docs/OTLP.md maps it from, exact start and end times. The SDK's own OTLP
encoder writes one ``ExportTraceServiceRequest`` per batch of sessions, as (a) Collector
file-exporter OTLP/JSON lines (hex ids, integer enums) and (b) protobuf records. The
native JSON-lines file holds the very same events in the very same order, so every
difference is the mapping's.

What cannot survive the round trip, and why that is fine:

- ``trace_id`` / ``span_id`` / ``parent_span_id``: the SDK assigns its own ids. Sessions
  key on ``gen_ai.conversation.id``, stage 1 only uses span ids to link children to
  parents (the tree is kept: checked span by span below) and SessionShape and Alert carry
  no span ids, so shapes and alerts must match exactly (alert_id included).
- Nothing else: the simulator never emits ``status="error"`` without ``error_type`` (that
  would map back as ``_OTHER``) nor ``error_type`` on an ``ok`` span (would map as error);
  ``test_workload`` checks it.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
import pytest
from otlp_fixtures import SpanSpec, span_event_requests, to_collector_json

from app.otlp import MappedBatch, map_record
from app.replay import Replayer, ReplayResult, build_replayer, feed_file
from app.settings import Settings
from app.simulate import build, iter_sessions, ordered
from schemas import SpanEvent

SEED = 7
SESSIONS = 2000  # ~23k spans; 6 drift alerts (support) with baseline_sessions=500
PER_REQUEST = 64  # sessions per ExportTraceServiceRequest (~730 spans, like a Collector batch)
# Explicit: no assumptions file (drift alerts only), small baselines so drift shows early.
SETTINGS = Settings(baseline_sessions=500, assumptions_file=None, policy_file=None)
IDS = ("trace_id", "span_id", "parent_span_id")


def scenario():
    """dev-to-support with support labelled by a task type, so ``loadshape.task_type``
    travels too and the alerts' segment has one (support is the segment that drifts)."""
    sc = build("dev-to-support", sessions=SESSIONS)
    segments = tuple(replace(s, task_type="escalation") if s.agent == "support" else s
                     for s in sc.segments)
    return replace(sc, segments=segments)


def http_child(ev: dict) -> list[SpanSpec]:
    """A failed LLM call's HTTP client span (HTTP instrumentation, not GenAI): skipped."""
    if ev["operation"] != "chat" or ev["status"] != "error":
        return []
    attrs = {"http.request.method": "POST", "http.response.status_code": 429,
             "server.address": "llm.internal"}
    return [SpanSpec("POST", ev["start_time_unix_nano"], ev["end_time_unix_nano"], attrs,
                     error="429")]


@dataclass(frozen=True)
class Workload:
    events: list[dict]  # the native SpanEvents, in file order
    native: Path  # SpanEvent JSON lines
    otlp_json: Path  # Collector file-exporter lines, one export request per line
    proto: list[bytes]  # the same requests as protobuf records
    http_spans: int  # non-GenAI spans among them

    def __repr__(self) -> str:  # pytest prints fixtures on failure: keep it short
        return f"Workload({len(self.events)} events, {len(self.proto)} requests)"


@pytest.fixture(scope="module")
def workload(tmp_path_factory) -> Workload:
    tmp = tmp_path_factory.mktemp("otlp_equivalence")
    sessions = list(iter_sessions(scenario(), SEED))
    # Batch order: PER_REQUEST sessions at a time, their spans merged by end time (as an
    # SDK exports concurrent sessions' spans as they end). The native file is the same
    # sequence, so both sides see identical event order and watermarks.
    batches = [list(ordered(sessions[i:i + PER_REQUEST]))
               for i in range(0, len(sessions), PER_REQUEST)]
    events = [ev for batch in batches for ev in batch]
    requests = list(span_event_requests(batches, resource={"service.name": "agents"},
                                        children=http_child))
    native, otlp_json = tmp / "spans.jsonl", tmp / "otlp.jsonl"
    native.write_bytes(b"".join(orjson.dumps(ev) + b"\n" for ev in events))
    otlp_json.write_bytes(b"".join(to_collector_json(r) + b"\n" for r in requests))
    http_spans = sum(len(http_child(ev)) for ev in events)
    return Workload(events, native, otlp_json, [r.SerializeToString() for r in requests],
                    http_spans)


@dataclass
class Replay:
    result: ReplayResult
    sessions: list[dict]
    alerts: list[dict]
    dead_letters: list[dict]
    spans: list[SpanEvent]  # what reached the replayer, in order

    def __repr__(self) -> str:
        return f"Replay({len(self.spans)} spans, {len(self.sessions)} sessions, {len(self.alerts)} alerts)"


def replay(feed: Callable[[Replayer], None]) -> Replay:
    """Run ``feed`` on a replayer wired as `loadshape replay` wires it (JSON-lines sinks)."""
    alerts, sessions, dlq = io.BytesIO(), io.BytesIO(), io.BytesIO()
    rp = build_replayer(SETTINGS, alerts_fh=alerts, sessions_fh=sessions, dlq_fh=dlq)
    seen: list[SpanEvent] = []
    feed_spans = rp.feed_many

    def capture(spans: Iterable[SpanEvent], where=None) -> None:
        spans = list(spans)
        seen.extend(spans)
        feed_spans(spans, where)

    rp.feed_many = capture  # feed_file, feed_raw and feed all end in replayer.feed_many
    feed(rp)
    result = rp.finish()
    lines = lambda fh: [orjson.loads(x) for x in fh.getvalue().splitlines()]  # noqa: E731
    return Replay(result, lines(sessions), lines(alerts), lines(dlq), seen)


@pytest.fixture(scope="module")
def native(workload) -> Replay:
    return replay(lambda rp: feed_file(rp, workload.native))


@pytest.fixture(scope="module")
def via_otlp_json(workload) -> Replay:
    return replay(lambda rp: feed_file(rp, workload.otlp_json, fmt="otlp-json"))


@pytest.fixture(scope="module")
def proto_batches(workload) -> list[MappedBatch]:
    out = [map_record(raw, encoding="otlp_proto") for raw in workload.proto]
    errors = [b for b in out if not isinstance(b, MappedBatch)]
    assert errors == [], errors[0]
    return out


@pytest.fixture(scope="module")
def via_proto(proto_batches) -> Replay:
    def feed(rp: Replayer) -> None:
        for batch in proto_batches:
            for span in batch.spans:
                rp.feed(span)

    return replay(feed)


def test_workload(workload, native):
    """The native side is a real test: drift alerts, no rejections, every session closed."""
    assert any(a["kind"] == "drift" for a in native.alerts)
    assert {a["segment"]["task_type"] for a in native.alerts} == {"escalation"}
    assert native.dead_letters == [] and native.result.dead_letters == 0
    assert native.result.sessions == SESSIONS == len(native.sessions)
    assert len(native.spans) == len(workload.events)
    for ev in workload.events:  # the only status/error_type pairs that round-trip
        assert (ev["status"] == "error") == (ev["error_type"] is not None)
    assert workload.http_spans > 0


def test_proto_records_map_to_native_events_apart_from_ids(workload, proto_batches):
    assert [r for b in proto_batches for r in b.rejected] == []
    assert sum(b.skipped_non_genai for b in proto_batches) == workload.http_spans
    assert sum(b.partial_genai for b in proto_batches) == 0
    assert_same_events(workload.events, [s for b in proto_batches for s in b.spans])


def test_otlp_json_lines_map_to_native_events_apart_from_ids(workload, via_otlp_json):
    assert via_otlp_json.dead_letters == []
    assert_same_events(workload.events, via_otlp_json.spans)


@pytest.mark.parametrize("path", ["via_otlp_json", "via_proto"])
def test_same_sessions_and_alerts_as_native(path, native, request):
    other: Replay = request.getfixturevalue(path)
    assert other.dead_letters == [] and other.result.dead_letters == 0
    assert (other.result.spans, other.result.late_spans, other.result.sessions) == (
        native.result.spans, native.result.late_spans, native.result.sessions)
    # SessionShape has no span or trace ids: every shape must be equal, in emission order.
    assert len(other.sessions) == len(native.sessions)
    for mine, theirs in zip(other.sessions, native.sessions, strict=True):
        assert mine == theirs, mine["session_id"]
    # Full alert dicts, alert_id included (it hashes segment, metric, time and session).
    assert other.alerts == native.alerts
    assert [a.model_dump(mode="json") for a in other.result.alerts] == native.alerts


def assert_same_events(native: list[dict], mapped: Iterable[SpanEvent]) -> None:
    """Field for field equal apart from ids; the SDK's ids keep the same trees."""
    mapped = list(mapped)
    assert len(mapped) == len(native)
    new_id: dict[tuple[str, str], tuple[str, str]] = {}  # native (trace, span) -> SDK's
    trace_of: dict[str, str] = {}  # session -> SDK trace id
    for ev, span in zip(native, mapped, strict=True):
        got = span.model_dump(mode="json")
        assert {k: v for k, v in got.items() if k not in IDS} == {
            k: v for k, v in ev.items() if k not in IDS}, ev
        new_id[(ev["trace_id"], ev["span_id"])] = (span.trace_id, span.span_id)
        # one trace per session, never the simulator's ids
        assert trace_of.setdefault(span.session_id, span.trace_id) == span.trace_id
        assert span.trace_id != ev["trace_id"] and len(span.trace_id) == 32
    assert len(set(new_id.values())) == len(new_id)  # the SDK's span ids are unique
    assert len(set(trace_of.values())) == len(trace_of)
    for ev, span in zip(native, mapped, strict=True):
        if ev["parent_span_id"] is None:
            assert span.parent_span_id is None
        else:
            assert new_id[(ev["trace_id"], ev["parent_span_id"])] == (
                span.trace_id, span.parent_span_id)
