"""Decode a raw record into a contract model, or explain exactly why not.

>>> r = decode_span(b'{"trace_id":"t","span_id":"s","session_id":"x","agent":"a",'
...                 b'"operation":"chat","input_tokens":-5,'
...                 b'"start_time_unix_nano":1,"end_time_unix_nano":2}')
>>> r.ok, r.field, r.code
(False, 'input_tokens', 'invalid_field')
>>> print(r.reason)
input_tokens: Input should be greater than or equal to 0 (got -5)
>>> decode_span(b'{not json').code
'invalid_json'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from schemas.span import SpanEvent

M = TypeVar("M", bound=BaseModel)
_MAX_SHOWN = 80


@dataclass(slots=True)  # not frozen: built once per span, and frozen init is 3x slower
class Decoded(Generic[M]):
    """Either ``value`` (ok) or ``reason``/``field``/``code`` (rejected)."""

    value: M | None = None
    reason: str = ""
    field: str | None = None
    code: str = ""

    @property
    def ok(self) -> bool:
        return self.value is not None


def explain(err: ValidationError) -> tuple[str, str | None, str]:
    """(reason, first field, code) of a pydantic error, naming every bad field."""
    parts, first_field, code = [], None, "invalid_field"
    for e in err.errors(include_url=False):
        msg = e["msg"].removeprefix("Value error, ")
        # model-level validators name their field as "field: ..." at the start of the message
        loc = ".".join(str(p) for p in e["loc"]) or _leading_field(msg) or "(record)"
        if e["type"] == "json_invalid":
            return f"not valid JSON: {e['msg']}", None, "invalid_json"
        if e["type"] == "missing":
            code = "missing_field" if first_field is None else code
        first_field = first_field or loc
        shown = repr(e.get("input"))
        shown = shown if len(shown) <= _MAX_SHOWN else shown[:_MAX_SHOWN] + "..."
        got = "" if e["type"] == "missing" or msg.startswith(loc) else f" (got {shown})"
        parts.append(msg if msg.startswith(loc) else f"{loc}: {msg}{got}")
    if first_field == "(record)":
        first_field = None
    return "; ".join(parts), first_field, code


def _leading_field(msg: str) -> str | None:
    head, sep, _ = msg.partition(": ")
    return head if sep and head.isidentifier() else None


def decode(model: type[M], raw: bytes | str) -> Decoded[M]:
    """Validate JSON bytes into ``model``; never raises on bad input."""
    if isinstance(raw, bytes):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Decoded(reason=f"not valid UTF-8: {exc}", code="invalid_utf8")
    try:
        return Decoded(value=model.model_validate_json(raw))
    except ValidationError as err:
        reason, field, code = explain(err)
        return Decoded(reason=reason, field=field, code=code)
    except (ValueError, RecursionError) as exc:  # pathological JSON (deep nesting, huge ints)
        return Decoded(reason=f"not decodable: {exc}", code="invalid_json")


def decode_span(raw: bytes | str) -> Decoded[SpanEvent]:
    return decode(SpanEvent, raw)
