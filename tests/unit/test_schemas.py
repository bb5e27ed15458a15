"""Contract tests over every schema: round-trips (Hypothesis), rejections naming the field,
unknown fields kept, JSON Schema files current."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import CONTRACTS, SpanEvent, decode_span
from schemas.export import render, stale

ids = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)
opt_ids = st.none() | ids
u63 = st.integers(0, 2**62)


@st.composite
def span_dicts(draw):
    start = draw(u63)
    d = {
        "schema_version": 1, "trace_id": draw(ids), "span_id": draw(ids),
        "parent_span_id": draw(opt_ids), "session_id": draw(ids), "agent": draw(ids),
        "task_type": draw(opt_ids), "operation": draw(st.sampled_from(
            ["chat", "text_completion", "embeddings", "execute_tool", "invoke_agent", "plan"])),
        "model": draw(opt_ids), "route": draw(opt_ids),
        "input_tokens": draw(st.integers(0, 2**40)), "output_tokens": draw(st.integers(0, 2**40)),
        "context_limit": draw(st.none() | st.integers(1, 2**31)), "tool_name": draw(opt_ids),
        "attempt": draw(st.integers(1, 1000)), "reflection": draw(st.booleans()),
        "status": draw(st.sampled_from(["ok", "error"])), "error_type": draw(opt_ids),
        "cache_hit": draw(st.none() | st.booleans()),
        "cache_age_s": draw(st.none() | st.floats(0, 1e9, allow_nan=False)),
        "complexity": draw(st.none() | st.floats(0, 1, allow_nan=False)),
        "session_end": draw(st.booleans()),
        "start_time_unix_nano": start,
        "end_time_unix_nano": start + draw(st.integers(0, 2**40)),
    }
    if draw(st.booleans()):
        d["x_custom"] = draw(ids)
    return d


@settings(max_examples=300, deadline=None)
@given(span_dicts())
def test_span_round_trips_through_json(d):
    ev = SpanEvent.model_validate_json(orjson.dumps(d))
    again = SpanEvent.model_validate_json(ev.model_dump_json())
    assert again == ev
    assert again.model_dump(mode="json") == d


@settings(max_examples=100, deadline=None)
@given(span_dicts())
def test_every_contract_round_trips_its_own_json(d):
    ev = SpanEvent.model_validate(d)
    assert SpanEvent.model_validate_json(ev.model_dump_json()) == ev


BASE = {"trace_id": "t", "span_id": "s", "session_id": "x", "agent": "a", "operation": "chat",
        "start_time_unix_nano": 10, "end_time_unix_nano": 20}


@pytest.mark.parametrize("patch,field", [
    ({"input_tokens": -1}, "input_tokens"),
    ({"output_tokens": -3}, "output_tokens"),
    ({"end_time_unix_nano": 5}, "end_time_unix_nano"),
    ({"attempt": 0}, "attempt"),
    ({"complexity": float("nan")}, "complexity"),
    ({"cache_age_s": float("inf")}, "cache_age_s"),
    ({"agent": "x" * 5000}, "agent"),
    ({"status": "maybe"}, "status"),
    ({"input_tokens": "12"}, "input_tokens"),
    ({"schema_version": 2}, "schema_version"),
    ({"complexity": 1.5}, "complexity"),
])
def test_impossible_values_are_rejected_naming_the_field(patch, field):
    raw = json.dumps({**BASE, **patch}, allow_nan=True).encode()
    r = decode_span(raw)
    assert not r.ok
    assert r.field == field
    assert field in r.reason


def test_missing_field_is_named():
    raw = orjson.dumps({k: v for k, v in BASE.items() if k != "session_id"})
    r = decode_span(raw)
    assert (r.ok, r.field, r.code) == (False, "session_id", "missing_field")


@pytest.mark.parametrize("raw,code", [
    (b"\xff\xfe{", "invalid_utf8"), (b"{", "invalid_json"), (b"[1,2]", "invalid_field"),
    (b"", "invalid_json"), (b"[" * 100_000, "invalid_json"),
])
def test_garbage_never_raises(raw, code):
    r = decode_span(raw)
    assert not r.ok and r.code == code


def test_unknown_fields_are_kept():
    ev = decode_span(orjson.dumps({**BASE, "team": "infra", "nested": {"a": 1}})).value
    assert ev.model_extra == {"team": "infra", "nested": {"a": 1}}
    assert orjson.loads(ev.model_dump_json())["team"] == "infra"


def test_json_schema_files_are_current():
    assert stale() == [], "run: python -m schemas.export"
    assert set(render()) == {f"{n}.schema.json" for n in CONTRACTS}


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_every_contract_exports_a_schema(name):
    schema = json.loads(render()[f"{name}.schema.json"])
    assert schema["type"] == "object" and schema["properties"]


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(0, 2**63 - 1), st.none() | st.integers(0, 2**63 - 1))
def test_a_heartbeat_round_trips_through_its_bytes(src, wm, ck):
    from app.stream.source_state import decode_heartbeat
    from schemas import Heartbeat

    beat = Heartbeat(src=src, wm=wm, ck=ck)
    assert Heartbeat.model_validate_json(beat.encode()) == beat
    assert decode_heartbeat(beat.encode(), src + 1).value == (src, wm, ck)
    assert decode_heartbeat(beat.encode(), src).field == "src"  # not one of the partitions
