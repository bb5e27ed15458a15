"""OTLP trace export requests (protobuf or JSON) -> SpanEvent v1; pure, no I/O but
``iter_otlp_json_lines``. Mapping rules and extension attributes: docs/OTLP.md."""

from app.otlp.decode import ENCODINGS, Encoding, OtlpDecodeError, decode_request
from app.otlp.jsonlines import iter_otlp_json_lines, map_json_lines
from app.otlp.mapping import MappedBatch, Rejection, map_record, map_request

__all__ = [
    "ENCODINGS", "Encoding", "MappedBatch", "OtlpDecodeError", "Rejection", "decode_request",
    "iter_otlp_json_lines", "map_json_lines", "map_record", "map_request",
]
