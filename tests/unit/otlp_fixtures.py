"""Real OTLP records for tests, made by the OpenTelemetry SDK and its own OTLP encoder.

Describe span trees with ``SpanSpec`` (each root is a new trace), then get an
``ExportTraceServiceRequest`` (``export_request``), protobuf bytes (``proto_record``),
canonical proto3 JSON with base64 ids (``json_record``) or the Collector file exporter's
form with hex ids and integer enums (``collector_json_record``). Ids are sequential so
tests can write the expected SpanEvents by hand: trace n is ``trace_hex(n)``, the k-th
span started is ``span_hex(k)`` (both from 1, depth-first in spec order).

The other direction: ``span_event_requests`` turns SpanEvent v1 dicts (e.g. simulated
workloads) into real SDK spans carrying the attributes docs/OTLP.md maps back to the same
fields (``genai_attributes``), one export request per batch.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Status, StatusCode

DEFAULT_RESOURCE: Mapping[str, Any] = {"service.name": "test-svc"}


@dataclass(frozen=True)
class SpanSpec:
    """One span and its children; ``error`` sets status ERROR with that description."""

    name: str
    start_ns: int
    end_ns: int
    attributes: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    children: tuple[SpanSpec, ...] = ()


def trace_hex(n: int) -> str:
    return f"{n:032x}"


def span_hex(k: int) -> str:
    return f"{k:016x}"


class SequentialIds(IdGenerator):
    """Trace ids 1, 2, ... and span ids 1, 2, ... in the order spans are started."""

    def __init__(self) -> None:
        self._trace, self._span = 0, 0

    def generate_trace_id(self) -> int:
        self._trace += 1
        return self._trace

    def generate_span_id(self) -> int:
        self._span += 1
        return self._span


def genai(
    operation: str, start_ns: int, end_ns: int, attrs: Mapping[str, Any] | None = None, *,
    children: Sequence[SpanSpec] = (), error: str | None = None, name: str | None = None,
) -> SpanSpec:
    """A GenAI span: ``gen_ai.operation.name`` plus ``attrs``."""
    attributes = {"gen_ai.operation.name": operation, **(attrs or {})}
    return SpanSpec(name or operation, start_ns, end_ns, attributes, error, tuple(children))


def record_spans(
    specs: Sequence[SpanSpec], *, resource: Mapping[str, Any] = DEFAULT_RESOURCE,
    scope: str = "loadshape.tests", scope_attributes: Mapping[str, Any] | None = None,
) -> list[ReadableSpan]:
    """Run ``specs`` through a real TracerProvider; finished spans in end order."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(dict(resource)),
                              id_generator=SequentialIds())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(scope, "1.0", attributes=scope_attributes)
    for spec in specs:
        _emit(tracer, spec, Context())
    provider.shutdown()
    return list(exporter.get_finished_spans())


def _emit(tracer: trace.Tracer, spec: SpanSpec, parent: Context) -> None:
    span = tracer.start_span(spec.name, context=parent, attributes=dict(spec.attributes),
                             start_time=spec.start_ns)
    if spec.error is not None:
        span.set_status(Status(StatusCode.ERROR, spec.error))
    for child in spec.children:
        _emit(tracer, child, trace.set_span_in_context(span, parent))
    span.end(end_time=spec.end_ns)


def export_request(specs: Sequence[SpanSpec], **kw: Any) -> ExportTraceServiceRequest:
    """The SDK's own OTLP encoding of ``record_spans(specs, **kw)``."""
    return encode_spans(record_spans(specs, **kw))


def proto_record(specs: Sequence[SpanSpec], **kw: Any) -> bytes:
    return export_request(specs, **kw).SerializeToString()


def json_record(specs: Sequence[SpanSpec], **kw: Any) -> bytes:
    """protobuf's canonical JSON: base64 ids, enum names, pretty-printed."""
    return json_format.MessageToJson(export_request(specs, **kw)).encode()


def collector_json_record(specs: Sequence[SpanSpec], **kw: Any) -> bytes:
    """One line as the Collector's file exporter writes it: hex ids, integer enums."""
    return to_collector_json(export_request(specs, **kw))


def to_collector_json(req: ExportTraceServiceRequest) -> bytes:
    doc = json_format.MessageToDict(req, use_integers_for_enums=True)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                _ids_to_hex(span)
                for link in span.get("links", []):
                    _ids_to_hex(link)
    return orjson.dumps(doc)


def _ids_to_hex(obj: dict[str, Any]) -> None:
    for key in ("traceId", "spanId", "parentSpanId"):
        if key in obj:
            obj[key] = base64.b64decode(obj[key]).hex()


# --- SpanEvent v1 dicts -> SDK spans --------------------------------------------------------

class SeededIds(IdGenerator):
    """Random-looking but reproducible trace and span ids (never the invalid id 0)."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)

    def _nonzero(self, bits: int) -> int:
        while not (value := self._rng.getrandbits(bits)):
            pass
        return value

    def generate_trace_id(self) -> int:
        return self._nonzero(128)

    def generate_span_id(self) -> int:
        return self._nonzero(64)


# SpanEvent field -> OTLP span attribute (docs/OTLP.md), for fields set only when not null.
EVENT_ATTRIBUTES: Mapping[str, str] = {
    "operation": "gen_ai.operation.name",
    "session_id": "gen_ai.conversation.id",
    "agent": "gen_ai.agent.name",
    "task_type": "loadshape.task_type",
    "model": "gen_ai.request.model",
    "input_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
    "tool_name": "gen_ai.tool.name",
    "error_type": "error.type",
    "context_limit": "loadshape.context_limit",
    "attempt": "loadshape.attempt",
    "reflection": "loadshape.reflection",
    "route": "loadshape.route",
    "cache_hit": "loadshape.cache_hit",
    "cache_age_s": "loadshape.cache_age_s",
    "complexity": "loadshape.complexity",
    "session_end": "loadshape.session_end",
}


def genai_attributes(ev: Mapping[str, Any]) -> dict[str, Any]:
    """The span attributes that map back to SpanEvent dict ``ev`` (null fields left out).

    Ids and times are the span's own; ``status`` is the span status (``span_status``).
    Every span carries agent, conversation id and task type, so the mapping never has to
    inherit them (the result does not depend on how spans are batched).
    """
    return {attr: ev[f] for f, attr in EVENT_ATTRIBUTES.items() if ev.get(f) is not None}


def span_status(ev: Mapping[str, Any]) -> Status | None:
    """ERROR (described by ``error_type``) for an error span, else None (status UNSET)."""
    if ev.get("status") == "error":
        return Status(StatusCode.ERROR, ev.get("error_type") or "error")
    return None


def span_event_requests(
    batches: Iterable[Sequence[Mapping[str, Any]]], *,
    resource: Mapping[str, Any] = DEFAULT_RESOURCE, scope: str = "loadshape.tests",
    id_generator: IdGenerator | None = None,
    children: Callable[[Mapping[str, Any]], Sequence[SpanSpec]] = lambda ev: (),
) -> Iterator[ExportTraceServiceRequest]:
    """One SDK-encoded export request per batch of SpanEvent v1 dicts, spans in batch order.

    Each event becomes a real SDK span with the event's exact start and end times and
    ``genai_attributes``; a span whose event has ``parent_span_id`` is started in its
    parent's context (same trace), so the SDK's own ids keep the tree; a root starts a new
    trace. Parents must be in the same batch (looked up by ``(trace_id, span_id)``). All
    spans of a batch are started (parents first), then ended in batch order: the SDK
    exports spans as they end, so the request lists them in batch order. ``children(ev)``
    adds other spans (e.g. an HTTP client span, not GenAI) inside the span of ``ev``; they
    end when started, so they come first in the request.

    Not round-trippable: ``status="error"`` without ``error_type`` maps back with
    ``error_type="_OTHER"``, and ``error_type`` on an ``ok`` span maps back as an error.
    """
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(dict(resource)),
                              id_generator=id_generator or SeededIds())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(scope, "1.0")
    try:
        for batch in batches:
            by_id = {(ev["trace_id"], ev["span_id"]): ev for ev in batch}
            if len(by_id) != len(batch):
                raise ValueError("a batch holds two events with the same (trace_id, span_id)")
            started: dict[tuple[str, str], SdkSpan] = {}
            for key in by_id:
                span = _start_event(tracer, key, by_id, started)
                for child in children(by_id[key]):
                    _emit(tracer, child, trace.set_span_in_context(span))
            for key in by_id:
                started[key].end(end_time=by_id[key]["end_time_unix_nano"])
            yield encode_spans(exporter.get_finished_spans())
            exporter.clear()
    finally:
        provider.shutdown()


def _start_event(tracer: trace.Tracer, key: tuple[str, str],
                 by_id: Mapping[tuple[str, str], Mapping[str, Any]],
                 started: dict[tuple[str, str], SdkSpan]) -> SdkSpan:
    if key in started:
        return started[key]
    ev = by_id[key]
    parent_ctx = Context()
    if ev.get("parent_span_id") is not None:
        parent_key = (ev["trace_id"], ev["parent_span_id"])
        if parent_key not in by_id:
            raise ValueError(f"span {key}: parent {parent_key} is not in the same batch")
        parent_ctx = trace.set_span_in_context(_start_event(tracer, parent_key, by_id, started))
    detail = ev.get("model") or ev.get("tool_name") or ev["agent"]
    span = tracer.start_span(f"{ev['operation']} {detail}", context=parent_ctx,
                             attributes=genai_attributes(ev),
                             start_time=ev["start_time_unix_nano"])
    status = span_status(ev)
    if status is not None:
        span.set_status(status)
    started[key] = span
    return span
