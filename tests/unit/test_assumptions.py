"""Assumptions file validation, the pure check, the episode tracker and the CLI check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import main
from app.core.stats import MetricStats
from app.loop.assumptions import Assumption, check, load_assumptions
from app.loop.fileload import LoadError
from app.loop.tracker import AssumptionTracker, TrackerConfig, TrackerState
from schemas import Segment, SessionShape

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GOOD = {"id": "cap", "segment": {"agent": "support"}, "metric": "context_tokens",
        "stat": "p95", "op": "<=", "bound": 16000, "why": "we cap context at 16K"}


def write(tmp_path, entries) -> Path:
    path = tmp_path / "assumptions.yaml"
    path.write_text(json.dumps({"assumptions": entries}))  # JSON is YAML
    return path


def test_example_file_loads():
    ids = [a.id for a in load_assumptions(EXAMPLES / "assumptions.yaml")]
    assert "support-context-cap" in ids and "support-fanout" in ids
    assert any(i.startswith("dev-assistant") for i in ids)


@pytest.mark.parametrize("field,value,expect", [
    ("stat", "p80", "field 'stat': must be one of 'mean', 'p50', 'p90', 'p95', 'p99' or 'max'"),
    ("op", "==", "field 'op': must be one of"),
    ("metric", "tokens", "field 'metric': must be one of"),
    ("bound", "lots", "field 'bound':"),
    ("why", "", "field 'why':"),
    ("segment", {"agent": "support", "tier": 1}, "field 'segment.tier': is not a known field"),
])
def test_errors_name_file_entry_and_field(tmp_path, field, value, expect):
    bad = {**GOOD, "id": "support-context-cap", field: value}
    path = write(tmp_path, [{**GOOD, "id": "a"}, {**GOOD, "id": "b"}, bad])
    with pytest.raises(LoadError) as err:
        load_assumptions(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: assumptions[2] (id=support-context-cap): ")
    assert expect in msg


def test_missing_field_and_duplicate_id(tmp_path):
    entry = {k: v for k, v in GOOD.items() if k != "why"}
    with pytest.raises(LoadError, match=r"assumptions\[0\] \(id=cap\): field 'why': is required"):
        load_assumptions(write(tmp_path, [entry]))
    with pytest.raises(LoadError, match=r"assumptions\[1\] \(id=cap\): field 'id': duplicate"):
        load_assumptions(write(tmp_path, [GOOD, GOOD]))


def test_bad_yaml_and_shape(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text("assumptions: [\n")
    with pytest.raises(LoadError, match="not valid YAML"):
        load_assumptions(path)
    path.write_text("- just a list\n")
    with pytest.raises(LoadError, match="list under 'assumptions'"):
        load_assumptions(path)


def stats(value: float, n: int = 50) -> MetricStats:
    return MetricStats(n=n, mean=value, p50=value, p90=value, p95=value, p99=value, max=value)


@pytest.mark.parametrize("op,bound,value,holds", [
    ("<=", 10, 10, True), ("<", 10, 10, False), (">=", 10, 10, True), (">", 10, 11, True),
    (">", 10, 10, False),
])
def test_check_ops(op, bound, value, holds):
    a = Assumption.model_validate({**GOOD, "op": op, "bound": bound})
    res = check(a, stats(value))
    assert (res.holds, res.observed, res.n) == (holds, value, 50)
    assert check(a, None).holds is None and check(a, stats(value, n=0)).holds is None


def tracker(**kw) -> AssumptionTracker:
    return AssumptionTracker((Assumption.model_validate(GOOD),), TrackerConfig(**kw))


def feed(t, state, values, seg=Segment(agent="support"), n=40, start=0):
    out = []
    for i, v in enumerate(values):
        state, alerts = t.observe(state, seg, {"context_tokens": stats(v, n)}, start + i, f"s{i}")
        out += alerts
    return state, out


def test_tracker_one_alert_per_episode_then_resolved():
    t = tracker(min_samples=30, resolve_after=3, margin=0.05)
    state, alerts = feed(t, TrackerState(), [9000, 17000, 18000, 16100, 15900, 15500])
    assert [a.kind for a in alerts] == ["assumption_broken"]
    broken = alerts[0]
    assert broken.severity == "page" and "architectural review" in broken.message
    assert broken.assumption["why"] == "we cap context at 16K"
    assert broken.observed == 17000 and broken.since == 1
    assert broken.model_extra["session_id"] == "s1" and broken.current.p95 == 17000
    # 15900 and 15500 hold, but not by the 5% margin (bound 16000 - 800): still open.
    assert t.gauges(state) == {"cap": 0}
    state, alerts = feed(t, state, [15000, 14000, 15100], start=10)
    assert [a.kind for a in alerts] == ["resolved"]
    assert alerts[0].resolves == broken.alert_id and alerts[0].resolved_kind == "assumption_broken"
    assert t.gauges(state) == {"cap": 1}
    # A new break opens a new episode with a new id.
    _, again = feed(t, state, [20000], start=20)
    assert [a.kind for a in again] == ["assumption_broken"] and again[0].alert_id != broken.alert_id


def test_tracker_waits_for_min_samples_and_ignores_other_segments():
    t = tracker(min_samples=30)
    state, alerts = feed(t, TrackerState(), [50000] * 3, n=29)
    assert alerts == [] and t.gauges(state) == {}  # not judged yet: no gauge
    state, alerts = feed(t, TrackerState(), [50000], seg=Segment(agent="search"))
    assert alerts == [] and t.gauges(state) == {}  # another segment's state reports nothing
    _, alerts = feed(t, TrackerState(), [50000], seg=Segment(agent="support", task_type="refund"))
    assert len(alerts) == 1 and alerts[0].segment.key == "support/refund"


def test_tracker_state_round_trips_and_is_deterministic():
    t = tracker(resolve_after=2)
    state, a1 = feed(t, TrackerState(), [20000, 9000])
    restored = TrackerState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert restored == state
    _, a2 = feed(t, TrackerState(), [20000, 9000])
    assert [a.alert_id for a in a1] == [a.alert_id for a in a2]


def session(i: int, agent: str, **metrics) -> SessionShape:
    return SessionShape(session_id=f"{agent}-{i}", segment=Segment(agent=agent), spans=1,
                        start_time_unix_nano=i, end_time_unix_nano=i + 1, closed_by="flush",
                        **metrics)


def test_cli_check_sessions(tmp_path, capsys):
    path = tmp_path / "sessions.jsonl"
    rows = [session(i, "support", context_tokens=16384, fanout=11) for i in range(40)]
    rows += [session(i, "dev-assistant", context_tokens=4000, fanout=3) for i in range(40)]
    path.write_text("".join(s.model_dump_json() + "\n" for s in rows))
    code = main(["assumptions", "check", "--sessions", str(path),
                 "--assumptions", str(EXAMPLES / "assumptions.yaml")])
    out = {r["id"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert code == 1
    assert out["support-context-cap"]["holds"] is False
    assert out["support-context-cap"]["observed"] == 16384 and out["support-context-cap"]["n"] == 40
    assert out["dev-assistant-fanout"]["holds"] is True


def span(sid: str, session_id: str, **kw) -> str:
    base = {"trace_id": "t", "span_id": sid, "session_id": session_id, "agent": "support",
            "operation": "execute_tool", "start_time_unix_nano": 1, "end_time_unix_nano": 2}
    return json.dumps({**base, **kw}) + "\n"


def test_cli_check_spans(tmp_path, capsys):
    path = tmp_path / "spans.jsonl"
    lines = [span(f"{s}-{k}", f"s{s}") for s in range(3) for k in range(5)]
    lines.append(span("x", "s0", operation="chat", input_tokens=20000, context_limit=16384))
    path.write_text("".join(lines) + "{bad json\n")
    code = main(["assumptions", "check", "--spans", str(path),
                 "--assumptions", str(EXAMPLES / "assumptions.yaml")])
    out = {r["id"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert code == 1  # fanout p50 = 5 > 3
    assert out["support-fanout"]["observed"] == 5 and out["support-fanout"]["n"] == 3
    assert out["dev-assistant-fanout"]["holds"] is None


def test_cli_bad_assumptions_file_exits_2(tmp_path, capsys):
    sessions = tmp_path / "s.jsonl"
    sessions.write_text("")
    code = main(["assumptions", "check", "--sessions", str(sessions),
                 "--assumptions", str(write(tmp_path, [{**GOOD, "stat": "median"}]))])
    assert code == 2 and "field 'stat'" in capsys.readouterr().err
