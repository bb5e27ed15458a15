"""Raw record bytes -> ``ExportTraceServiceRequest`` (OTLP protobuf or OTLP/JSON).

OTLP/JSON writes trace and span ids as hex (as the Collector and the OTLP/HTTP spec do),
while protobuf's canonical JSON form is base64; both are accepted, told apart by length
(16-byte trace id: 32 hex chars vs 24 base64 chars). Enums may be integers or names and
int64 fields strings or numbers; ``json_format`` handles those.

>>> decode_request(b"").resource_spans  # an empty export request is valid protobuf
[]
>>> r = decode_request(b' {"resourceSpans": [{"scopeSpans": [{"spans": [{'
...     b'"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",'
...     b'"kind": 2, "startTimeUnixNano": "1000", "endTimeUnixNano": 2000}]}]}]}')
>>> span = r.resource_spans[0].scope_spans[0].spans[0]
>>> span.trace_id.hex(), span.span_id.hex(), span.kind, span.end_time_unix_nano
('5b8efff798038103d269b633813fc60c', 'eee19b7ec3c1b174', 2, 2000)
>>> decode_request(b"\\xff\\x00garbage")
Traceback (most recent call last):
...
app.otlp.decode.OtlpDecodeError: not an OTLP protobuf ExportTraceServiceRequest: ...
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

Encoding = Literal["auto", "otlp_proto", "otlp_json"]
ENCODINGS: tuple[str, ...] = ("auto", "otlp_proto", "otlp_json")

# (JSON key, id length in bytes); both lowerCamelCase and proto field names are valid JSON.
_ID_KEYS = (
    ("traceId", 16), ("trace_id", 16), ("spanId", 8), ("span_id", 8),
    ("parentSpanId", 8), ("parent_span_id", 8),
)
_JSON_WS = b" \t\r\n"


class OtlpDecodeError(ValueError):
    """A record that is not a decodable OTLP trace export request.

    ``code`` is the dead-letter reason code; ``field`` names the offending JSON field
    when one is known; ``original`` holds the record bytes.
    """

    def __init__(
        self, reason: str, *, code: str = "invalid_otlp", field: str | None = None,
        original: bytes | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason, self.code, self.field, self.original = reason, code, field, original


def decode_request(raw: bytes, encoding: Encoding | str = "auto") -> ExportTraceServiceRequest:
    """Decode one record; raises ``OtlpDecodeError`` (never another error) on bad bytes.

    ``auto`` treats a record whose first non-whitespace byte is ``{`` as JSON, else
    protobuf. A protobuf record can begin ``\\n{`` (field 1, length 123), so when the
    JSON guess fails on a record with leading whitespace, protobuf is tried too.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown OTLP encoding {encoding!r}; expected one of {ENCODINGS}")
    raw = bytes(raw)
    if encoding == "otlp_proto":
        return _decode_proto(raw)
    if encoding == "otlp_json" or raw[:1] == b"{":
        return _decode_json(raw)
    if raw.lstrip(_JSON_WS)[:1] != b"{":
        return _decode_proto(raw)
    try:
        return _decode_json(raw)
    except OtlpDecodeError as json_err:
        try:
            return _decode_proto(raw)
        except OtlpDecodeError:
            raise json_err from None


def _decode_proto(raw: bytes) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    try:
        req.ParseFromString(raw)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise _error(f"not an OTLP protobuf ExportTraceServiceRequest: {exc}", raw) from None
    # The request has one field; top-level unknown fields mean garbage that happened
    # to be well-formed wire format, not a newer OTLP version.
    if len(UnknownFieldSet(req)):
        raise _error("not an OTLP protobuf ExportTraceServiceRequest: unknown fields", raw)
    return req


def _decode_json(raw: bytes) -> ExportTraceServiceRequest:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _error(f"not valid JSON: {exc}", raw) from None
    if not isinstance(doc, dict):
        raise _error("OTLP/JSON record is not a JSON object", raw)
    spans_key = "resourceSpans" if "resourceSpans" in doc else "resource_spans"
    if doc and spans_key not in doc:
        # Unknown fields are ignored below for forward compatibility; without this check
        # a SpanEvent or a metrics export would pass as an empty trace request.
        raise _error("OTLP/JSON record has no resourceSpans", raw, field="resourceSpans")
    _hex_ids_to_base64(doc.get(spans_key))
    try:
        return json_format.ParseDict(doc, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError, TypeError, ValueError) as exc:
        path, detail = _parse_error_path(str(exc))
        reason = f"OTLP/JSON {path}: {detail}" if path else f"invalid OTLP/JSON: {detail}"
        raise _error(reason, raw, field=path.rsplit(".", 1)[-1] or None) from None


def _error(reason: str, raw: bytes, field: str | None = None) -> OtlpDecodeError:
    return OtlpDecodeError(reason, field=field, original=raw)


def _parse_error_path(msg: str) -> tuple[str, str]:
    """Turn json_format's nested "Failed to parse X field: ..." into ("a.b.X", detail).

    >>> _parse_error_path("Failed to parse spans field: Failed to parse kind field: bad.")
    ('spans.kind', 'bad.')
    """
    path, prefix = [], "Failed to parse "
    while msg.startswith(prefix) and " field: " in msg:
        name, _, msg = msg[len(prefix):].partition(" field: ")
        path.append(name)
    return ".".join(path), msg


def _hex_ids_to_base64(resource_spans: Any) -> None:
    """Rewrite hex trace/span ids (Collector style) in place as base64 for json_format."""
    for rs in _dicts(resource_spans):
        for ss in _dicts(rs.get("scopeSpans", rs.get("scope_spans"))):
            for span in _dicts(ss.get("spans")):
                _fix_ids(span)
                for link in _dicts(span.get("links")):
                    _fix_ids(link)


def _dicts(value: Any) -> list[dict]:
    # Malformed shapes are left alone here; json_format reports them with a path.
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _fix_ids(obj: dict) -> None:
    for key, size in _ID_KEYS:
        value = obj.get(key)
        if isinstance(value, str) and len(value) == 2 * size:
            try:
                obj[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
            except ValueError:
                pass  # not hex: leave it for base64 decoding to accept or report
