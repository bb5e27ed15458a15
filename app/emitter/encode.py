"""Validate a span and turn it into a Kafka record: key = session_id, value = compact JSON.

>>> key, value = encode_span({"trace_id": "t", "span_id": "s", "session_id": "sess-1",
...     "agent": "dev", "operation": "chat", "start_time_unix_nano": 1,
...     "end_time_unix_nano": 2, "custom": "kept"})
>>> key
b'sess-1'
>>> b'"custom":"kept"' in value and b'"attempt":1' in value
True
>>> encode_span({"trace_id": "t"})
Traceback (most recent call last):
...
app.emitter.encode.InvalidSpanError: span_id: Field required; session_id: Field required; ...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.span import SpanEvent
from schemas.validation import explain


class InvalidSpanError(ValueError):
    """A span the caller built wrong; ``field`` names the first bad field.

    >>> InvalidSpanError("input_tokens: must be >= 0", "input_tokens").field
    'input_tokens'
    """

    def __init__(self, reason: str, field: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


def validate_span(span: SpanEvent | Mapping[str, Any]) -> SpanEvent:
    """``span`` as a validated ``SpanEvent``; raises ``InvalidSpanError`` naming the field."""
    if isinstance(span, SpanEvent):
        return span  # already validated (the model is frozen)
    if not isinstance(span, dict):  # the common case skips the slower ABC check
        if not isinstance(span, Mapping):
            raise InvalidSpanError(
                f"span: expected a SpanEvent or a mapping, got {type(span).__name__}", None
            )
        span = dict(span)
    try:
        return SpanEvent.model_validate(span)
    except ValidationError as err:
        reason, field, _ = explain(err)
        raise InvalidSpanError(reason, field) from None


def encode_span(
    span: SpanEvent | Mapping[str, Any], max_bytes: int | None = None
) -> tuple[bytes, bytes]:
    """(key, value) of the Kafka record for ``span``; unknown extra fields are kept.

    ``max_bytes`` refuses records Kafka would refuse anyway (huge extra fields):

    >>> encode_span(SpanEvent.model_validate({"trace_id": "t", "span_id": "s",
    ...     "session_id": "x", "agent": "a", "operation": "chat", "blob": "x" * 5000,
    ...     "start_time_unix_nano": 1, "end_time_unix_nano": 2}), max_bytes=4096)
    Traceback (most recent call last):
    ...
    app.emitter.encode.InvalidSpanError: span: encoded record is 5431 bytes, over the 4096-byte limit
    """
    event = validate_span(span)
    key, value = event.session_id.encode(), orjson.dumps(event.model_dump(mode="json"))
    if max_bytes is not None and len(key) + len(value) > max_bytes:
        size = len(key) + len(value)
        raise InvalidSpanError(
            f"span: encoded record is {size} bytes, over the {max_bytes}-byte limit", None
        )
    return key, value
