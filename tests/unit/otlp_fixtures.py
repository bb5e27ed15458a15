"""Real OTLP records for tests, made by the OpenTelemetry SDK and its own OTLP encoder.

Describe span trees with ``SpanSpec`` (each root is a new trace), then get an
``ExportTraceServiceRequest`` (``export_request``), protobuf bytes (``proto_record``),
canonical proto3 JSON with base64 ids (``json_record``) or the Collector file exporter's
form with hex ids and integer enums (``collector_json_record``). Ids are sequential so
tests can write the expected SpanEvents by hand: trace n is ``trace_hex(n)``, the k-th
span started is ``span_hex(k)`` (both from 1, depth-first in spec order).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
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
