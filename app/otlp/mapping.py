"""OTLP ``ExportTraceServiceRequest`` -> SpanEvent v1 (OpenTelemetry GenAI conventions).

A span is a GenAI span iff it carries ``gen_ai.operation.name`` (the conventions require
it on every GenAI span, and SpanEvent needs an operation). Other spans are skipped and
counted; those among them with other ``gen_ai.*`` attributes are counted again in
``partial_genai`` (usually instrumentation older than the conventions). Each mapped span
is validated as SpanEvent; a failure is a ``Rejection`` naming the field. Attribute
table and precedence rules: docs/OTLP.md.

>>> from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans
>>> req = ExportTraceServiceRequest(resource_spans=[ResourceSpans()])
>>> span = req.resource_spans[0].scope_spans.add().spans.add(
...     trace_id=bytes(range(16)), span_id=bytes(8), start_time_unix_nano=5,
...     end_time_unix_nano=9)
>>> attr = span.attributes.add(key="gen_ai.operation.name")
>>> attr.value.string_value = "chat"
>>> req.resource_spans[0].resource.attributes.add(key="service.name").value.string_value = "bot"
>>> ev = map_request(req).spans[0]
>>> ev.agent, ev.operation, ev.session_id == ev.trace_id, ev.span_id
('bot', 'chat', True, '0000000000000000')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from pydantic import ValidationError

from app.otlp.decode import Encoding, OtlpDecodeError, decode_request
from schemas.span import SpanEvent
from schemas.validation import explain

OPERATION = "gen_ai.operation.name"
AGENT = "gen_ai.agent.name"
CONVERSATION = "gen_ai.conversation.id"
TASK_TYPE = "loadshape.task_type"
SERVICE_NAME = "service.name"
REQUEST_MODEL, RESPONSE_MODEL = "gen_ai.request.model", "gen_ai.response.model"
PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system")  # current name first
ERROR_TYPE = "error.type"
OTHER_ERROR = "_OTHER"  # semconv's error.type when the instrumentation names none

# Span attribute -> SpanEvent field, read from the span itself only.
SPAN_FIELDS: Mapping[str, str] = MappingProxyType({
    OPERATION: "operation",
    "gen_ai.usage.input_tokens": "input_tokens",
    "gen_ai.usage.output_tokens": "output_tokens",
    "gen_ai.tool.name": "tool_name",
    ERROR_TYPE: "error_type",
    "loadshape.context_limit": "context_limit",
    "loadshape.attempt": "attempt",
    "loadshape.reflection": "reflection",
    "loadshape.route": "route",
    "loadshape.cache_hit": "cache_hit",
    "loadshape.cache_age_s": "cache_age_s",
    "loadshape.complexity": "complexity",
    "loadshape.session_end": "session_end",
})
# Session and segment labels: inherited from the nearest ancestor span in the same
# request, since the conventions put gen_ai.agent.name on invoke_agent spans only.
INHERITED: Mapping[str, str] = MappingProxyType(
    {AGENT: "agent", CONVERSATION: "session_id", TASK_TYPE: "task_type"})
_SPAN_KEYS = frozenset(
    {*SPAN_FIELDS, *INHERITED, REQUEST_MODEL, RESPONSE_MODEL, *PROVIDER_KEYS})
_CONTEXT_KEYS = frozenset({AGENT, TASK_TYPE, SERVICE_NAME})  # read from resource and scope
# SpanEvent field -> attribute it came from, to name both in a rejection.
_SOURCE: Mapping[str, str] = MappingProxyType({
    **{f: k for k, f in SPAN_FIELDS.items()}, **{f: k for k, f in INHERITED.items()},
    "model": REQUEST_MODEL,
})
_MAX_DEPTH = 256  # parent-chain walk bound: hostile input may contain cycles
_NO_WINDOWS: Mapping[str, int] = MappingProxyType({})

Attrs = dict[str, object]
_Index = dict[tuple[bytes, bytes], tuple[bytes, Attrs]]


@dataclass(frozen=True, slots=True)
class Rejection:
    """A GenAI span that mapped but failed SpanEvent validation.

    ``span_json`` is the SpanEvent candidate that failed, as JSON (it carries the
    trace and span ids); ``code`` is ``invalid_field`` or ``missing_field``.
    """

    reason: str
    field: str | None
    span_json: bytes | None
    code: str = "invalid_field"


@dataclass(slots=True)
class MappedBatch:
    """What one export request yielded."""

    spans: list[SpanEvent] = field(default_factory=list)
    skipped_non_genai: int = 0
    partial_genai: int = 0  # of the skipped: had gen_ai.* attributes but no operation name
    rejected: list[Rejection] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Ctx:
    """Resource- and scope-level attributes in force for one span."""

    resource: Attrs
    scope: Attrs


def map_request(
    req: ExportTraceServiceRequest, context_windows: Mapping[str, int] = _NO_WINDOWS,
) -> MappedBatch:
    """Map every GenAI span of ``req``; never raises on bad span content.

    ``context_windows`` (model name -> context window in tokens) fills ``context_limit``
    when the span has no ``loadshape.context_limit``.
    """
    out, index, todo = MappedBatch(), {}, []
    for span, attrs, ctx in _walk(req):
        index[(span.trace_id, span.span_id)] = (span.parent_span_id, attrs)
        if OPERATION in attrs:
            todo.append((span, attrs, ctx))
        else:
            out.skipped_non_genai += 1
            out.partial_genai += any(kv.key.startswith("gen_ai.") for kv in span.attributes)
    for span, attrs, ctx in todo:
        _validate(_candidate(span, attrs, ctx, index, context_windows), out)
    return out


def map_record(
    raw: bytes, encoding: Encoding | str = "auto",
    context_windows: Mapping[str, int] = _NO_WINDOWS,
) -> MappedBatch | OtlpDecodeError:
    """Decode and map one record; a record-level failure is returned, not raised.

    >>> map_record(b'{"resourceSpans": []}')
    MappedBatch(spans=[], skipped_non_genai=0, partial_genai=0, rejected=[])
    >>> map_record(b'{"resourceSpans": ').code
    'invalid_otlp'
    """
    try:
        return map_request(decode_request(raw, encoding), context_windows)
    except OtlpDecodeError as err:
        return err


def _walk(req: ExportTraceServiceRequest) -> Iterable[tuple[Span, Attrs, _Ctx]]:
    for rs in req.resource_spans:
        resource = _attrs(rs.resource.attributes, _CONTEXT_KEYS)
        for ss in rs.scope_spans:
            ctx = _Ctx(resource, _attrs(ss.scope.attributes, _CONTEXT_KEYS))
            for span in ss.spans:
                yield span, _attrs(span.attributes, _SPAN_KEYS), ctx


def _candidate(
    span: Span, attrs: Attrs, ctx: _Ctx, index: _Index, windows: Mapping[str, int],
) -> dict[str, object]:
    """The SpanEvent fields of one GenAI span, before validation."""
    trace_hex = span.trace_id.hex()
    ev: dict[str, object] = {f: attrs[k] for k, f in SPAN_FIELDS.items() if k in attrs}
    ev.update(
        trace_id=trace_hex, span_id=span.span_id.hex(),
        parent_span_id=_genai_parent(span, index),
        start_time_unix_nano=span.start_time_unix_nano,
        end_time_unix_nano=span.end_time_unix_nano,
        session_id=_label(CONVERSATION, span, attrs, index, ()) or trace_hex,
        agent=_label(AGENT, span, attrs, index, (ctx.scope, ctx.resource))
        or ctx.resource.get(SERVICE_NAME),
        task_type=_label(TASK_TYPE, span, attrs, index, (ctx.scope, ctx.resource)),
        model=attrs.get(REQUEST_MODEL, attrs.get(RESPONSE_MODEL)),
    )
    is_error = span.status.code == Status.STATUS_CODE_ERROR or ERROR_TYPE in attrs
    ev["status"] = "error" if is_error else "ok"
    if is_error:
        ev.setdefault("error_type", OTHER_ERROR)
    if "context_limit" not in ev:
        _fill_context_limit(ev, attrs, windows)
    provider = next((attrs[k] for k in PROVIDER_KEYS if k in attrs), None)
    if isinstance(provider, str):  # an extra field: not validated by SpanEvent
        ev["provider"] = provider
    return ev


def _genai_parent(span: Span, index: _Index) -> str | None:
    """The nearest ancestor that will be a SpanEvent: skipped (non-GenAI) spans of the same
    request are walked through, so a GenAI span under a framework's own span keeps its true
    depth in the session's span tree. A parent outside the request is kept as it is (it may
    be a GenAI span of another request)."""
    parent, seen = span.parent_span_id, 0
    while parent and seen < _MAX_DEPTH:
        node = index.get((span.trace_id, parent))
        if node is None or OPERATION in node[1]:
            return parent.hex()
        parent = node[0]
        seen += 1
    return parent.hex() or None


def _label(
    key: str, span: Span, attrs: Attrs, index: _Index, outer: tuple[Attrs, ...],
) -> object:
    """``key`` from the span, else its nearest ancestor in the request, else ``outer``."""
    if key in attrs:
        return attrs[key]
    parent, seen = span.parent_span_id, 0
    while parent and seen < _MAX_DEPTH:
        node = index.get((span.trace_id, parent))
        if node is None:
            break
        parent, ancestor = node
        if key in ancestor:
            return ancestor[key]
        seen += 1
    return next((level[key] for level in outer if key in level), None)


def _fill_context_limit(ev: dict[str, object], attrs: Attrs, windows: Mapping[str, int]) -> None:
    """Catalog window of the request model, else of the response model."""
    for key in (REQUEST_MODEL, RESPONSE_MODEL):
        model = attrs.get(key)
        if isinstance(model, str) and model in windows:
            ev["context_limit"] = windows[model]
            return


def _validate(ev: dict[str, object], out: MappedBatch) -> None:
    try:
        out.spans.append(SpanEvent.model_validate(ev))
    except ValidationError as err:
        reason, name, code = explain(err)
        if name in _SOURCE:
            reason = f"{reason} [OTLP attribute {_SOURCE[name]}]"
        out.rejected.append(Rejection(reason, name, orjson.dumps(ev, default=_jsonable), code))


def _attrs(kvs: Iterable[KeyValue], wanted: frozenset[str]) -> Attrs:
    """The ``wanted`` attributes as Python values; empty values count as absent."""
    out: Attrs = {}
    for kv in kvs:
        if kv.key in wanted:
            value = _value(kv.value)
            if value is not None:
                out[kv.key] = value
    return out


def _value(v: AnyValue) -> object:
    """Scalars as themselves; arrays and kvlists one level deep (only to show in errors).

    >>> _value(AnyValue(int_value=7)), _value(AnyValue()), _value(AnyValue(bool_value=True))
    (7, None, True)
    """
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_scalar(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _scalar(kv.value) for kv in v.kvlist_value.values}
    return _scalar(v)


def _scalar(v: AnyValue) -> object:
    kind = v.WhichOneof("value")
    return None if kind in (None, "array_value", "kvlist_value") else getattr(v, kind)


def _jsonable(obj: object) -> object:
    """orjson fallback for attribute values JSON lacks (bytes_value)."""
    return obj.hex() if isinstance(obj, bytes) else repr(obj)
