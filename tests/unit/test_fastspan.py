"""Contract: the compiled SpanEvent decoder (schemas.fastspan) agrees with pydantic, the schema of
record, on every record: accept/reject, decoded values (bit for bit), and the rejection reason.

Records are assembled from raw JSON tokens, so they can hold what a JSON encoder would never
write: NaN/Infinity literals, out-of-range numbers, wrong types, duplicate keys, nested or huge
unknown fields, lone surrogate escapes, invalid UTF-8, truncated text.
"""

from __future__ import annotations

import math
import struct

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core import session as core
from schemas.fastspan import MAX_FAST_BYTES, SpanRecord, decode_span_fast, extras, fast_record, fast_records
from schemas.span import SpanEvent
from schemas.validation import decode_span

FIELDS = tuple(SpanEvent.model_fields)
REQUIRED = ("trace_id", "span_id", "session_id", "agent", "operation",
            "start_time_unix_nano", "end_time_unix_nano")
STR_FIELDS = ("trace_id", "span_id", "parent_span_id", "session_id", "agent", "task_type",
              "operation", "model", "route", "tool_name", "error_type")
INT_FIELDS = ("input_tokens", "output_tokens", "context_limit", "attempt",
              "start_time_unix_nano", "end_time_unix_nano", "schema_version")
FLOAT_FIELDS = ("cache_age_s", "complexity")
BOOL_FIELDS = ("reflection", "cache_hit", "session_end")


def same(a, b) -> bool:
    """Equal values of equal types; floats bit for bit (-0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    return a == b


def assert_same_values(fast, ref: SpanEvent) -> None:
    for name in FIELDS:
        assert same(getattr(fast, name), getattr(ref, name)), (name, getattr(fast, name),
                                                              getattr(ref, name))


def check(raw: bytes | str) -> None:
    """The contract for one record."""
    ref = decode_span(raw)
    fast = fast_record(raw)
    if fast is not None:  # the fast path alone never accepts what pydantic rejects
        assert ref.ok, (raw, ref.reason)
        assert_same_values(fast, ref.value)
        assert extras(raw) == ref.value.model_extra or _has_nan(ref.value.model_extra)
    got = decode_span_fast(raw)  # the composed decoder: exactly pydantic's verdict
    assert got.ok == ref.ok, (raw, got, ref)
    if ref.ok:
        assert_same_values(got.value, ref.value)
    else:
        assert (got.reason, got.field, got.code) == (ref.reason, ref.field, ref.code)


def _has_nan(d: dict) -> bool:
    return any(isinstance(v, float) and math.isnan(v) for v in d.values())


# --- raw JSON tokens ---------------------------------------------------------------------------
def text(min_size=0, max_size=40):
    return st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)),
                   min_size=min_size, max_size=max_size)


def js(value) -> str:
    return orjson.dumps(value).decode()


EDGE_INTS = [0, 1, -1, 2, 2**31, 2**31 + 1, 2**53, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 2**64 + 1,
             1_000_000, 1_000_001, -(2**63), 10**30]
EDGE_FLOATS = ["0.0", "-0.0", "1.0", "1", "0", "-0", "1e-320", "5e-324", "1.0000000000000002",
               "0.30000000000000004", "1e308", "1.7976931348623157e308", "1e309", "1e400", "-1e-9",
               "NaN", "Infinity", "-Infinity", "1E2", "0.5e1", "1" + "0" * 400, "-1.5"]
ODD = ["null", "true", "false", '""', '"1"', '"ok"', "[]", "{}", "[1]", '{"a":1}', "1.0", "-1",
       '"\\ud800"', '"\\udc00"', '"\\ud800\\u0041"', '"\\ud800\\ud800"', '"\\ude00\\ud83d"',
       '"\\uD83D\\uDE00"', '"\\u0000"', '"a\\nb"', '"\\u00e9"', '"\\ud83d\\ude00"', '"\\/"']


def str_token(field: str):
    ok = text(min_size=1).map(js)
    edge = st.sampled_from([js("a" * 128), js("a" * 129), js("é" * 128), js("é" * 129),
                            js("\U0001f600" * 128), js("\U0001f600" * 129), js(""), js("x" * 4096),
                            js("x" * 4097)])
    if field == "operation":
        ok = st.sampled_from(["chat", "text_completion", "execute_tool", "invoke_agent"]).map(js) | ok
    return st.one_of(ok, ok, edge, st.sampled_from(ODD))


def int_token(field: str):
    lo, hi = {"context_limit": (1, 2**31), "attempt": (1, 1_000_000), "schema_version": (1, 1),
              "input_tokens": (0, 2**53), "output_tokens": (0, 2**53)}.get(field, (0, 2**63 - 1))
    ok = st.integers(lo, hi).map(str)
    return st.one_of(ok, ok, ok, st.sampled_from([str(i) for i in EDGE_INTS]),
                     st.integers().map(str), st.sampled_from(ODD + EDGE_FLOATS))


def float_token(field: str):
    hi = 1.0 if field == "complexity" else 1e12
    ok = st.floats(0, hi, allow_nan=False).map(js) | st.integers(0, 10**6).map(str)
    return st.one_of(ok, ok, st.floats().map(lambda f: repr(f).replace("inf", "Infinity")
                                             .replace("nan", "NaN")),
                     st.sampled_from(EDGE_FLOATS + ODD), st.integers(-(2**70), 2**70).map(str))


def token(field: str):
    if field in STR_FIELDS:
        return str_token(field)
    if field in INT_FIELDS:
        return int_token(field)
    if field in FLOAT_FIELDS:
        return float_token(field)
    if field == "status":
        return st.sampled_from(['"ok"', '"error"', '"OK"', "null", "1", "true"])
    return st.sampled_from(["true", "false", "true", "false", "null", "0", "1", '"true"'])


def extra_token():
    leaf = st.one_of(st.integers().map(str), st.floats(allow_nan=False, allow_infinity=False).map(js),
                     text().map(js), st.sampled_from(ODD + ["NaN", "1e400", "1" + "0" * 5000]))
    nested = st.integers(1, 300).map(lambda d: "[" * d + "]" * d)
    return st.one_of(leaf, leaf, nested)


@st.composite
def raw_records(draw) -> bytes:
    """A record, mostly valid, with a few odd tokens, extras and mutations."""
    valid = draw(st.booleans())  # half of the records: only in-contract values
    parts = []
    start = draw(st.integers(0, 2**62))
    for field in FIELDS:
        optional = field not in REQUIRED
        if draw(st.integers(0, 9)) == 0 and (optional or not valid):
            continue  # left out
        if field == "start_time_unix_nano" and valid:
            tok = str(start)
        elif field == "end_time_unix_nano" and valid:
            tok = str(start + draw(st.integers(0, 2**40)))
        elif valid:
            tok = draw(valid_token(field))
        else:
            tok = draw(token(field))
        parts.append(f"{js(field)}:{tok}")
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from(["x_custom", "gen_ai.system", "", "_private", "segment",
                                     "model_extra"]) | text(max_size=8))
        if name in FIELDS:
            continue
        parts.append(f"{js(name)}:{draw(extra_token())}")
    if draw(st.integers(0, 9)) == 0 and parts:  # a duplicate key
        parts.append(draw(st.sampled_from(parts)))
    parts = draw(st.permutations(parts))
    raw = ("{" + ",".join(parts) + "}").encode("utf-8", "surrogatepass")
    mutation = draw(st.integers(0, 19))
    if mutation == 0:
        raw = raw[:draw(st.integers(0, len(raw)))]
    elif mutation == 1:
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b" ", b"\x00"])) + raw[at:]
    elif mutation == 2:
        raw = b" \n" + raw + b"\r\n "
    return raw


def valid_token(field: str):
    if field in STR_FIELDS:
        return text(min_size=1).map(js)
    if field == "schema_version":
        return st.just("1")
    if field in INT_FIELDS:
        lo, hi = {"context_limit": (1, 2**31), "attempt": (1, 1_000_000)}.get(field, (0, 2**53))
        return st.integers(lo, hi).map(str)
    if field in FLOAT_FIELDS:
        return (st.floats(0, 1.0 if field == "complexity" else 1e12, allow_nan=False).map(js)
                | st.integers(0, 1000).map(str) | st.just("null"))
    if field == "status":
        return st.sampled_from(['"ok"', '"error"'])
    return st.sampled_from(["true", "false"] + (["null"] if field == "cache_hit" else []))


# --- the contract ---------------------------------------------------------------------------------
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_records())
def test_fast_path_agrees_with_pydantic(raw):
    check(raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(raw_records(), max_size=6), st.sampled_from([b"", b"\n", b"\r\n"]))
def test_block_of_lines_agrees_with_one_by_one(raws, end):
    """A block decodes at once only if every line would take the fast path, to the same values."""
    lines = [raw + end for raw in raws]
    got = fast_records(lines)
    if got is not None:
        for line, rec in zip(lines, got, strict=True):
            one = fast_record(line.rstrip(b"\r\n"))
            assert one is not None and type(one) is type(rec)
            for name in FIELDS:
                assert same(getattr(rec, name), getattr(one, name)), name


def test_block_of_ordinary_lines_takes_the_fast_path():
    line = b"{" + BASE.encode() + b"}\n"
    assert [r.span_id for r in fast_records([line] * 3)] == ["s"] * 3
    assert fast_records([line, b"\n"]) is None  # blank lines: the caller's, one by one
    assert fast_records([line, line.replace(b"9}", b"4}")]) is None  # end before start


@settings(max_examples=200, deadline=None)
@given(raw_records())
def test_fast_path_agrees_on_str_input(raw):
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        return
    check(s)


BASE = ('"trace_id":"t","span_id":"s","session_id":"x","agent":"a","operation":"chat",'
        '"start_time_unix_nano":5,"end_time_unix_nano":9')


@pytest.mark.parametrize("tail", [
    "", ',"custom":"kept"', ',"complexity":1', ',"complexity":0', ',"complexity":1.0000001',
    ',"cache_age_s":-0.0', ',"cache_age_s":1e400', ',"cache_age_s":NaN', ',"cache_age_s":Infinity',
    ',"cache_age_s":1' + "0" * 400, ',"input_tokens":1.0', ',"input_tokens":true',
    ',"input_tokens":9007199254740993', ',"attempt":0', ',"attempt":1000001', ',"context_limit":0',
    ',"context_limit":2147483649', ',"schema_version":2', ',"schema_version":1.0',
    ',"schema_version":true', ',"status":"OK"', ',"reflection":1', ',"reflection":null',
    ',"tool_name":""', ',"error_type":""', ',"input_tokens":1,"input_tokens":-2',
    ',"input_tokens":-2,"input_tokens":1', ',"x":' + "[" * 250 + "]" * 250,
    ',"x":1' + "0" * 5000, ',"x":"\\ud800"', ',"x":NaN', ',"x":[1,{"y":null}]',
    ',"end_time_unix_nano":4', ',"start_time_unix_nano":9223372036854775808',
])
def test_edge_records(tail):
    check("{" + BASE + tail + "}")
    check(("{" + BASE + tail + "}").encode())


@pytest.mark.parametrize("raw", [
    b"", b"{", b"[]", b"null", b"1", b'"x"', b"{}", b"{" + BASE.encode() + b"} x",
    b"\xef\xbb\xbf{" + BASE.encode() + b"}", b'{"x":"\xff",' + BASE.encode() + b"}",
    b'{"x":"\xed\xa0\x80",' + BASE.encode() + b"}", b'{"trace_id":"t\xc3",' + BASE.encode()[13:] + b"}",
    b"{" + BASE.encode() + b',"error_type":"' + b"e" * MAX_FAST_BYTES + b'"}',
])
def test_malformed_records(raw):
    check(raw)


@pytest.mark.parametrize("raw", [
    "{" + BASE + ',"x":"\ud800"}', "{" + BASE + ',"tool_name":"\udfff"}',  # lone surrogates in str
    bytearray(b"{" + BASE.encode() + b"}"), memoryview(b"{" + BASE.encode() + b"}"),
    bytearray(b"{" + BASE.encode() + b',"input_tokens":-1}'),
])
def test_other_input_types_never_raise(raw):
    """Whatever pydantic makes of str with lone surrogates or other buffers, the fast decoder
    says the same, and never raises."""
    assert fast_record(raw) is None
    got, ref = decode_span_fast(raw), decode_span(raw)
    assert (got.ok, got.reason, got.field, got.code) == (ref.ok, ref.reason, ref.field, ref.code)


def test_fast_path_takes_ordinary_records():
    """Valid records as agents write them (orjson) take the fast path, extras and all."""
    d = {"trace_id": "t", "span_id": "s", "parent_span_id": None, "session_id": "sé",
         "agent": "support", "operation": "execute_tool", "tool_name": "kb", "attempt": 2,
         "cache_hit": True, "cache_age_s": 12.5, "complexity": 0.25, "input_tokens": 10,
         "start_time_unix_nano": 1, "end_time_unix_nano": 1, "gen_ai.system": {"a": [1, 2]}}
    raw = orjson.dumps(d)
    rec = fast_record(raw)
    assert isinstance(rec, SpanRecord)
    ev = decode_span(raw).value
    assert_same_values(rec, ev)
    assert rec.to_event(raw) == ev and extras(raw) == ev.model_extra == {"gen_ai.system": {"a": [1, 2]}}
    assert rec.segment == ev.segment and rec.is_tool_call and not rec.is_llm_call


def test_struct_mirrors_the_model():
    """Same field names, in the same order, with the same defaults."""
    assert SpanRecord.__struct_fields__ == FIELDS
    rec = msgspec.json.decode(b'{' + BASE.encode() + b'}', type=SpanRecord)
    ev = SpanEvent.model_validate_json('{' + BASE + '}')
    assert_same_values(rec, ev)


@settings(max_examples=200, deadline=None)
@given(raw_records())
def test_stage1_folds_either_type_alike(raw):
    """The fold reads declared fields only: a SpanRecord folds like its SpanEvent."""
    rec, ref = fast_record(raw), decode_span(raw)
    if rec is None:
        return
    a = core.close(core.fold(None, rec), "flush")
    b = core.close(core.fold(None, ref.value), "flush")
    assert a == b
