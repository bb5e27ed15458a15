"""A compiled fast path for decoding SpanEvent v1 (msgspec); pydantic stays the schema of record.

``SpanRecord`` mirrors ``SpanEvent``'s fields and constraints as a msgspec ``Struct``, so a
well-formed record is decoded and validated in C, several times faster than pydantic.
``decode_span_fast`` accepts a record only when msgspec does *and* the checks that msgspec
cannot express hold (end >= start, the UTF-8 and nesting limits pydantic applies to the whole
record). Every other record, valid or not, goes to ``schemas.validation.decode_span``: its
verdict and its error message (naming the field) are the answer, and a record pydantic
accepts comes back as a ``SpanEvent``. So the result is accepted exactly when pydantic
accepts it, with the same field values (``tests/unit/test_fastspan.py`` checks that contract).

What the fast path leaves out: unknown extra fields are accepted but not kept on a
``SpanRecord`` (``extras(raw)`` recovers them; ``to_event(raw)`` builds the full SpanEvent).
The stage-1 fold reads only declared fields, so it takes either type.

>>> r = decode_span_fast(b'{"trace_id":"t","span_id":"s","session_id":"x","agent":"a",'
...                      b'"operation":"chat","input_tokens":10,"custom":"kept",'
...                      b'"start_time_unix_nano":1,"end_time_unix_nano":2}')
>>> type(r.value).__name__, r.value.input_tokens, r.value.attempt, r.value.segment.key
('SpanRecord', 10, 1, 'a')
>>> r = decode_span_fast(b'{"trace_id":"t","span_id":"s","session_id":"x","agent":"a",'
...                      b'"operation":"chat","input_tokens":-5,'
...                      b'"start_time_unix_nano":1,"end_time_unix_nano":2}')
>>> r.ok, r.field                 # rejected: pydantic's explanation
(False, 'input_tokens')
"""

from __future__ import annotations

import json
import operator
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from schemas.common import Segment
from schemas.span import LLM_OPERATIONS, TOOL_OPERATIONS, SpanEvent
from schemas.validation import Decoded, decode_span

# The same bounds as schemas.common / schemas.span (the contract test pins them together).
_Id = Annotated[str, Meta(min_length=1, max_length=128)]
_Label = Annotated[str, Meta(min_length=1, max_length=128)]
_Text = Annotated[str, Meta(max_length=4096)]
_NonNegInt = Annotated[int, Meta(ge=0, le=2**53)]
_UnixNano = Annotated[int, Meta(ge=0, le=2**63 - 1)]
_ContextLimit = Annotated[int, Meta(gt=0, le=2**31)]
_Attempt = Annotated[int, Meta(ge=1, le=1_000_000)]
_NonNegFloat = Annotated[float, Meta(ge=0.0)]  # msgspec rejects NaN and out-of-range numbers
_UnitFloat = Annotated[float, Meta(ge=0.0, le=1.0)]

# Beyond these, pydantic's JSON parser may refuse what msgspec skips over inside unknown
# fields (its nesting limit, Python's int-digits limit): such records take the pydantic path.
# Agents' spans are a few hundred bytes of flat JSON.
MAX_FAST_BYTES = 4096
MAX_FAST_BRACKETS = 32


class SpanRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """SpanEvent v1 as a msgspec Struct: the same field names, types, defaults and bounds."""

    schema_version: Literal[1] = 1
    trace_id: _Id
    span_id: _Id
    parent_span_id: _Id | None = None
    session_id: _Id
    agent: _Label
    task_type: _Label | None = None
    operation: _Label
    model: _Label | None = None
    route: _Label | None = None
    input_tokens: _NonNegInt = 0
    output_tokens: _NonNegInt = 0
    context_limit: _ContextLimit | None = None
    tool_name: _Label | None = None
    attempt: _Attempt = 1
    reflection: bool = False
    status: Literal["ok", "error"] = "ok"
    error_type: _Text | None = None
    cache_hit: bool | None = None
    cache_age_s: _NonNegFloat | None = None
    complexity: _UnitFloat | None = None
    session_end: bool = False
    start_time_unix_nano: _UnixNano
    end_time_unix_nano: _UnixNano

    @property
    def segment(self) -> Segment:
        return Segment(agent=self.agent, task_type=self.task_type)

    @property
    def is_llm_call(self) -> bool:
        return self.operation in LLM_OPERATIONS

    @property
    def is_tool_call(self) -> bool:
        return self.operation in TOOL_OPERATIONS

    def to_event(self, raw: bytes | str | None = None) -> SpanEvent:
        """The SpanEvent of record (with the unknown fields of ``raw``, when given)."""
        data = msgspec.structs.asdict(self)
        if raw is not None:
            data.update(extras(raw))
        return SpanEvent.model_validate(data)


class _FlatRecord(SpanRecord, forbid_unknown_fields=True):
    """A ``SpanRecord`` read from JSON with no unknown fields: every value is a scalar of a
    declared field, so nothing nested and nothing skipped (the usual span; no limits to scan)."""


FIELDS = frozenset(SpanRecord.__struct_fields__)
_decoder = msgspec.json.Decoder(SpanRecord)
_flat_decoder = msgspec.json.Decoder(_FlatRecord)


def extras(raw: bytes | str) -> dict[str, Any]:
    """The unknown fields of a record that decoded (what ``SpanEvent.model_extra`` keeps)."""
    # the standard library, like pydantic, reads 1e400 as inf and any int (not a hot path)
    return {k: v for k, v in json.loads(raw).items() if k not in FIELDS}


def fast_record(raw: bytes | str) -> SpanRecord | None:
    """The record if the fast path alone accepts it, else None (the contract test's subject)."""
    if raw.__class__ is bytes and len(raw) <= MAX_FAST_BYTES and raw.isascii():
        try:
            rec = _flat_decoder.decode(raw)
        except msgspec.DecodeError:
            pass  # unknown fields, or invalid: the general checks below decide
        else:
            return rec if rec.end_time_unix_nano >= rec.start_time_unix_nano else None
    if isinstance(raw, bytes):
        if len(raw) > MAX_FAST_BYTES:
            return None
        if not raw.isascii():
            try:
                raw.decode("utf-8")  # msgspec does not check the bytes it skips
            except UnicodeDecodeError:
                return None
        # a flat object (the usual span) is told apart with two memchr scans, not two counts
        if (b"[" in raw or raw.find(b"{", 1) != -1) and (
                raw.count(b"[") + raw.count(b"{") > MAX_FAST_BRACKETS):
            return None
    elif isinstance(raw, str):
        if len(raw) > MAX_FAST_BYTES or raw.count("[") + raw.count("{") > MAX_FAST_BRACKETS:
            return None
    else:  # bytearray, memoryview, ...: pydantic's path
        return None
    try:
        rec = _decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError, UnicodeError):  # ValidationError is a DecodeError
        return None
    if rec.end_time_unix_nano < rec.start_time_unix_nano:
        return None
    return rec


def fast_records(lines: list[bytes]) -> list[SpanRecord] | None:
    """``[fast_record(line) for line in lines]`` when every line is a flat record the fast
    path accepts (a line may keep its line end), else None: the caller then takes the lines
    one by one. A block of a file's lines decodes with no Python code run per line.

    >>> line = (b'{"trace_id":"t","span_id":"s","session_id":"x","agent":"a",'
    ...         b'"operation":"chat","start_time_unix_nano":1,"end_time_unix_nano":2}\\n')
    >>> [r.span_id for r in fast_records([line, line])], fast_records([line, b"\\n"])
    (['s', 's'], None)
    """
    if not all(map(bytes.isascii, lines)) or max(map(len, lines), default=0) > MAX_FAST_BYTES:
        return None
    try:
        records = list(map(_flat_decoder.decode, lines))
    except msgspec.DecodeError:
        return None
    if any(map(operator.lt, map(_END, records), map(_START, records))):
        return None
    return records


_START = operator.attrgetter("start_time_unix_nano")
_END = operator.attrgetter("end_time_unix_nano")


def decode_span_fast(raw: bytes | str) -> Decoded[SpanRecord | SpanEvent]:
    """``decode_span`` with a compiled fast path; never raises on bad input.

    Accepts exactly the records ``decode_span`` accepts, with the same field values: a
    ``SpanRecord`` from the fast path, else whatever ``decode_span`` says (a ``SpanEvent``,
    or the reason, field and code of the rejection).
    """
    rec = fast_record(raw)
    if rec is not None:
        return Decoded(value=rec)
    return decode_span(raw)
