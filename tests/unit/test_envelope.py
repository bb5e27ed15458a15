"""``loadshape envelope``: the what-if transform, its evaluation and the CLI gate."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from otlp_fixtures import SpanSpec, collector_json_record

from app.cli import main
from app.commands.assumptions import sessions_from_spans
from app.envelope import Envelope, evaluate, parse_capability, project, record
from app.envelope.evaluate import KEY_METRICS
from app.envelope.model import project_session
from app.loop.observe import matching_stats
from app.loop.policy import EXAMPLE_POLICY, load_policy, parse_policy
from schemas import Segment, SpanEvent

try:  # the simulator when it is importable; else a small local generator (below)
    from app.simulate import iter_records
except ImportError:  # pragma: no cover
    iter_records = None

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SEC = 10**9


# ---------------------------------------------------------------- test data

def session(i: int, agent: str, *, tools: int, inputs: list[int], limit: int | None = 16384,
            complexity: float | None = None, t0: int = 0) -> list[dict]:
    """One small session: root -> plan -> (chats with ``inputs``, ``tools`` tool calls)."""
    start = t0 + i * SEC
    base = {"trace_id": f"t{i}", "session_id": f"{agent}-{i:04d}", "agent": agent,
            "start_time_unix_nano": start, "end_time_unix_nano": start + SEC // 2}
    spans = [{**base, "span_id": "root", "operation": "invoke_agent", "complexity": complexity,
              "session_end": True},
             {**base, "span_id": "plan", "parent_span_id": "root", "operation": "plan"}]
    spans += [{**base, "span_id": f"c{k}", "parent_span_id": "plan", "operation": "chat",
               "model": "haiku-s", "input_tokens": n, "output_tokens": 100, "context_limit": limit,
               "complexity": complexity} for k, n in enumerate(inputs)]
    spans += [{**base, "span_id": f"k{k}", "parent_span_id": "plan", "operation": "execute_tool",
               "tool_name": f"tool{k % 3}"} for k in range(tools)]
    return spans


def local_workload(n: int = 300) -> list[dict]:
    """Three segments with varied, partly declared complexity (no simulator needed)."""
    out = []
    for i in range(n):
        agent = ("dev-assistant", "support", "search")[i % 3]
        inputs = [2000 + 37 * (i % 50) * (k + 1) for k in range(1 + i % 4)]
        out += session(i, agent, tools=i % 7, inputs=inputs,
                       complexity=None if i % 2 else round((i % 10) / 10, 2))
    return out


def workload_records() -> list[dict]:
    if iter_records is None:  # pragma: no cover
        return local_workload()
    return list(iter_records("steady", seed=11, sessions=450))


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def write_assumptions(path: Path, entries: list[dict]) -> Path:
    path.write_text(json.dumps({"assumptions": entries}))  # JSON is YAML
    return path


def assumption(ident, agent, metric, stat, bound, op="<=") -> dict:
    return {"id": ident, "segment": {"agent": agent}, "metric": metric, "stat": stat, "op": op,
            "bound": bound, "why": "test"}


@pytest.fixture(scope="module")
def spans_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("env") / "spans.jsonl", workload_records())


@pytest.fixture(scope="module")
def today(spans_file):
    """Observed stats of the recording, as ``loadshape assumptions check`` sees them."""
    sessions = list(sessions_from_spans(spans_file))
    return lambda agent, metric: matching_stats(sessions, Segment(agent=agent), metric)


@pytest.fixture(scope="module")
def a15(tmp_path_factory, today) -> Path:
    """Assumptions whose bounds sit 15% above today's observed values."""
    entries = [assumption(f"{agent}-{metric}-{stat}", agent, metric, stat,
                          round(today(agent, metric).get(stat) * 1.15, 3))
               for agent, metric, stat in [("support", "fanout", "p95"),
                                           ("dev-assistant", "llm_calls", "p90"),
                                           ("search", "fanout", "mean")]]
    return write_assumptions(tmp_path_factory.mktemp("a") / "a15.yaml", entries)


def envelope(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["envelope", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def envelope_json(capsys, *argv) -> tuple[int, dict]:
    rc, out, err = envelope(capsys, *argv, "--json")
    return rc, json.loads(out)


# ---------------------------------------------------------------- acceptance

def test_acceptance_bound_15pct_above_today_holds_then_breaks_at_complexity_1_3(
        capsys, spans_file, a15):
    rc, out, _ = envelope(capsys, "--spans", spans_file, "--assumptions", a15)
    assert rc == 0, out
    assert "verdict: HOLDS" in out
    rc, doc = envelope_json(capsys, "--spans", spans_file, "--assumptions", a15,
                            "--complexity", 1.3)
    assert rc == 1 and doc["verdict"] == "breaks"
    for a in doc["assumptions"]:
        assert a["now"]["holds"] is True
        assert a["verdict"] == "breaks", a
        assert a["projected"]["observed"] > a["bound"]


def test_now_is_the_recording_exactly_without_policy(spans_file):
    rec = record(SpanEvent.model_validate(r) for r in workload_records())
    shapes = [p.shape for p in project(rec, Envelope())]
    assert shapes == list(sessions_from_spans(spans_file))


# ---------------------------------------------------------------- usage

def test_usage_scales_load_not_shape(capsys, spans_file, a15):
    _, base = envelope_json(capsys, "--spans", spans_file, "--assumptions", a15)
    rc, doc = envelope_json(capsys, "--spans", spans_file, "--assumptions", a15, "--usage", 3)
    assert rc == 0
    assert doc["assumptions"] == base["assumptions"]
    assert doc["segments"] == base["segments"]
    assert doc["risk"] == base["risk"]
    for name, now in doc["load"]["now"].items():
        assert doc["load"]["projected"][name] == pytest.approx(3 * now)
        assert now == base["load"]["projected"][name]


# ---------------------------------------------------------------- complexity model

def test_complexity_scales_counts_as_integers_and_keeps_shape(spans_file):
    rec = record(SpanEvent.model_validate(r) for r in workload_records())
    now, proj = project(rec, Envelope()), project(rec, Envelope(complexity=2.0))
    for metric in ("fanout", "llm_calls", "reflections"):
        before = sum(getattr(p.shape, metric) for p in now)
        after = sum(getattr(p.shape, metric) for p in proj)
        assert all(isinstance(getattr(p.shape, metric), int) for p in proj)
        assert after == pytest.approx(2 * before, rel=0.03)  # exact in expectation
    fan_now = matching_stats([p.shape for p in now], Segment(agent="support"), "fanout")
    fan_proj = matching_stats([p.shape for p in proj], Segment(agent="support"), "fanout")
    assert fan_proj.p95 == pytest.approx(2 * fan_now.p95, rel=0.1)
    for a, b in zip(now, proj, strict=True):
        assert b.demand == round(a.demand * 2) or a.demand == 0 or abs(b.demand - 2 * a.demand) <= 2
        assert b.shape.retry_rate <= 1 and b.shape.max_parallel_fanout <= b.shape.fanout


def test_counts_never_decrease_as_complexity_grows():
    rec = record(SpanEvent.model_validate(r) for r in local_workload(90))
    for s in rec.sessions:
        prev = None
        for x in (0.5, 0.9, 1.0, 1.1, 1.3, 2.0):
            p = project_session(s, x, seed=0, tool_catalog=3).shape
            cur = (p.fanout, p.llm_calls, p.spans, p.context_tokens, p.truncations, p.complexity)
            assert prev is None or all(c >= q for c, q in zip(cur, prev, strict=True)), s
            prev = cur


def test_context_saturates_at_the_cap_and_counts_truncation():
    spans = session(1, "dev", tools=2, inputs=[6000, 12000], limit=16384, complexity=0.6)
    rec = record(SpanEvent.model_validate(r) for r in spans)
    p = project_session(rec.sessions[0], 1.5, seed=0, tool_catalog=3)
    assert (p.demand, p.shape.context_tokens, p.shape.context_utilization) == (18000, 16384, 1.0)
    assert p.shape.truncations == 1 and not p.censored
    assert p.shape.complexity == pytest.approx(0.9)  # declared: scaled
    assert project_session(rec.sessions[0], 2.0, seed=0, tool_catalog=3).shape.complexity == 1.0


def test_derived_complexity_is_recomputed_and_censoring_is_flagged():
    spans = session(1, "dev", tools=4, inputs=[16384], limit=16384)  # at the cap: censored
    rec = record(SpanEvent.model_validate(r) for r in spans)
    s = rec.sessions[0]
    assert s.censored and not s.shape.complexity_declared
    p = project_session(s, 2.0, seed=0, tool_catalog=3)
    assert p.censored and p.demand == 32768 and p.shape.context_tokens == 16384
    assert p.shape.complexity > s.shape.complexity


# ---------------------------------------------------------------- policy

POLICY = {
    "policy_id": "test", "version": 1,
    "models": [{"name": "small", "tier": 1, "capability": 0.5, "context_window": 16384},
               {"name": "large", "tier": 3, "capability": 1.0, "context_window": 200000}],
    "segments": [{"segment": {"agent": "support"}, "context_cap": 16384, "retry_budget": 2,
                  "routes": [{"max_complexity": 0.8, "model": "small"},
                             {"max_complexity": 1.0, "model": "large"}]}],
}


def test_misroute_risk_under_a_policy(capsys, spans_file, a15, tmp_path):
    policy = parse_policy(POLICY, "test")
    rec = record(SpanEvent.model_validate(r) for r in workload_records())
    support = [s.shape for s in rec.sessions if s.shape.segment.agent == "support"]
    # complexity <= 0.8 goes to the small model, which handles only <= 0.5
    expected = sum(0.5 < s.complexity <= 0.8 for s in support) / len(support)
    report = evaluate(rec, Envelope(), [], policy)
    risk, _ = report.now.segments["support"]
    assert expected > 0 and risk.misroute_complexity == pytest.approx(expected)
    # the small model's window is the cap: a truncated session needs another model
    truncated = sum(s.context_tokens >= 16384 for s in support) / len(support)
    assert risk.truncation_rate == pytest.approx(truncated)
    assert risk.misroute_context <= risk.truncation_rate
    # other segments fall to the default route: the cheapest capable model that fits
    assert report.now.segments["search"][0].misroute_complexity == 0.0
    harder = evaluate(rec, Envelope(complexity=1.3), [], policy).projected.segments["support"][0]
    assert harder.truncation_rate >= risk.truncation_rate
    doubled = evaluate(rec, Envelope(complexity=2.0), [], policy).projected.segments["support"][0]
    assert doubled.misroute_context > risk.misroute_context
    rc, doc = envelope_json(capsys, "--spans", spans_file, "--assumptions", a15,
                            "--policy", EXAMPLE_POLICY)
    assert doc["envelope"]["policy"] == load_policy(EXAMPLE_POLICY).policy_id
    assert doc["risk"]["now"]["misroute_complexity"] is not None


# ---------------------------------------------------------------- add-capability

def test_add_capability_with_share_and_default(capsys, spans_file, a15, tmp_path):
    entries = json.loads(a15.read_text())["assumptions"]
    entries.append(assumption("billing-fanout", "billing", "fanout", "p95", 10**6))
    path = write_assumptions(tmp_path / "a.yaml", entries)
    rc, doc = envelope_json(capsys, "--spans", spans_file, "--assumptions", path,
                            "--add-capability", "billing=support:0.25")
    assert rc == 0
    segs = {s["segment"]: s for s in doc["segments"]}
    total = doc["risk"]["projected"]["sessions"]
    assert segs["billing"]["now"] is None
    assert segs["billing"]["projected"]["sessions"] == pytest.approx(0.25 * total, abs=1)
    for m, v in segs["support"]["now"]["p99"].items():  # resampled: the same distribution
        assert segs["billing"]["projected"]["p99"][m] == pytest.approx(v, rel=0.1), m
    assert total == doc["risk"]["now"]["sessions"] + segs["billing"]["projected"]["sessions"]
    billing = next(a for a in doc["assumptions"] if a["id"] == "billing-fanout")
    assert billing["now"]["n"] == 0 and billing["projected"]["n"] > 0
    ratio = total / doc["risk"]["now"]["sessions"]
    assert doc["load"]["projected"]["sessions_per_s"] == pytest.approx(
        ratio * doc["load"]["now"]["sessions_per_s"])
    _, doc = envelope_json(capsys, "--spans", spans_file, "--assumptions", path,
                           "--add-capability", "billing=support")
    segs = {s["segment"]: s for s in doc["segments"]}
    assert segs["billing"]["projected"]["sessions"] == segs["support"]["now"]["sessions"]
    assert segs["billing"]["projected"]["p99"] == segs["support"]["now"]["p99"]  # exact copies


def test_parse_capability_forms():
    assert parse_capability("a/b=support/refund:0.1").share == 0.1
    for bad in ("billing", "=support", "billing=", "billing=support:x", "billing=support:0",
                "billing=support:1", "billing=support:nan"):
        with pytest.raises(ValueError, match="--add-capability"):
            parse_capability(bad)


# ---------------------------------------------------------------- determinism and JSON

def test_same_input_same_output(capsys, spans_file, a15):
    argv = ["--spans", spans_file, "--assumptions", a15, "--policy", EXAMPLE_POLICY,
            "--complexity", 1.3, "--usage", 2, "--add-capability", "billing=support:0.2"]
    first, second = envelope(capsys, *argv), envelope(capsys, *argv)
    assert first == second
    assert envelope(capsys, *argv, "--json") == envelope(capsys, *argv, "--json")


def test_json_schema(capsys, spans_file, a15):
    rc, doc = envelope_json(capsys, "--spans", spans_file, "--assumptions", a15,
                            "--complexity", 1.3, "--policy", EXAMPLE_POLICY)
    assert set(doc) == {"verdict", "envelope", "input", "assumptions", "segments", "risk", "load"}
    assert doc["envelope"] == {"usage": 1.0, "complexity": 1.3, "seed": 0, "add_capability": [],
                               "policy": "reference"}
    assert set(doc["input"]) == {"spans", "sessions", "duration_s", "censored_sessions",
                                 "rejected_lines", "rejected_records", "skipped_non_genai"}
    for a in doc["assumptions"]:
        assert set(a) >= {"id", "assumption", "segment", "metric", "stat", "op", "bound", "why",
                          "now", "projected", "verdict"}
        assert set(a["now"]) == set(a["projected"]) == {"holds", "observed", "n"}
        assert a["verdict"] in ("holds", "breaks", "no_data")
    risk_keys = {"sessions", "truncation_rate", "misroute_complexity", "misroute_context"}
    for s in doc["segments"]:
        for side in ("now", "projected"):
            assert set(s[side]) == risk_keys | {"p99"}
            assert set(s[side]["p99"]) == set(KEY_METRICS)
    assert set(doc["risk"]["now"]) == risk_keys
    for side in ("now", "projected"):
        assert set(doc["load"][side]) == {"sessions_per_s", "spans_per_s", "tokens_per_s"}


# ---------------------------------------------------------------- OTLP input

def _attrs(r: dict) -> dict:
    a = {"gen_ai.operation.name": r["operation"], "gen_ai.conversation.id": r["session_id"],
         "gen_ai.agent.name": r["agent"]}
    names = {"model": "gen_ai.request.model", "input_tokens": "gen_ai.usage.input_tokens",
             "output_tokens": "gen_ai.usage.output_tokens", "tool_name": "gen_ai.tool.name",
             "error_type": "error.type", "context_limit": "loadshape.context_limit",
             "attempt": "loadshape.attempt", "route": "loadshape.route",
             "cache_hit": "loadshape.cache_hit", "cache_age_s": "loadshape.cache_age_s",
             "complexity": "loadshape.complexity", "task_type": "loadshape.task_type"}
    a.update({otel: r[f] for f, otel in names.items() if r.get(f) is not None})
    a.update({f"loadshape.{f}": True for f in ("reflection", "session_end") if r.get(f)})
    return a


def otlp_line(spans: list[dict]) -> bytes:
    """One session as the Collector's file exporter writes it (real OTel SDK + encoder)."""
    kids: dict[str | None, list[dict]] = {}
    for r in spans:
        kids.setdefault(r.get("parent_span_id"), []).append(r)

    def spec(r: dict) -> SpanSpec:
        return SpanSpec(r["operation"], r["start_time_unix_nano"], r["end_time_unix_nano"],
                        _attrs(r), "failed" if r.get("status") == "error" else None,
                        tuple(spec(c) for c in kids.get(r["span_id"], [])))
    return collector_json_record([spec(r) for r in kids[None]])


def test_otlp_json_gives_the_same_envelope(capsys, tmp_path, a15):
    by_session: dict[str, list[dict]] = {}
    for r in workload_records():
        by_session.setdefault(r["session_id"], []).append(r)
    by_session = dict(list(by_session.items())[:150])  # whole sessions
    records = [r for spans in by_session.values() for r in spans]
    native = write_jsonl(tmp_path / "native.jsonl", records)
    otlp = tmp_path / "otlp.jsonl"
    otlp.write_bytes(b"".join(otlp_line(v) + b"\n" for v in by_session.values()) + b"{bad\n")
    argv = ["--assumptions", a15, "--complexity", 1.3, "--usage", 2]
    _, a = envelope_json(capsys, "--spans", native, *argv)
    rc, out, err = envelope(capsys, "--spans", otlp, "--format", "otlp-json", *argv, "--json")
    b = json.loads(out)
    assert f"{otlp}:{len(by_session) + 1}: skipped: invalid_otlp" in err
    assert b["input"]["rejected_lines"] == 1
    for key in ("assumptions", "segments", "risk", "verdict"):
        assert a[key] == b[key], key


# ---------------------------------------------------------------- bad input: exit 2

def test_rejected_span_lines_are_warned_with_line_numbers(capsys, tmp_path, a15):
    lines = [orjson.dumps(r) for r in local_workload(30)]
    lines.insert(3, b'{"trace_id": "t", "span_id": "s"}')
    lines.insert(7, b"not json")
    path = tmp_path / "spans.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    rc, out, err = envelope(capsys, "--spans", path, "--assumptions", a15)
    assert rc in (0, 1)
    assert f"{path}:4: skipped: session_id: Field required" in err
    assert f"{path}:8: skipped: not valid JSON" in err
    assert "skipped 2 rejected record(s)" in out


@pytest.mark.parametrize("extra,message", [
    (["--usage", "-1"], "--usage must be a number > 0 and <= 1000, got -1.0"),
    (["--complexity", "0"], "--complexity must be a number > 0"),
    (["--usage", "inf"], "--usage must be a number > 0"),
    (["--complexity", "nan"], "--complexity must be a number > 0"),
    (["--add-capability", "billing"], "--add-capability 'billing': expected NAME=LIKE_SEGMENT"),
    (["--add-capability", "billing=support:2"], "SHARE must be a number in (0, 1), got '2'"),
    (["--add-capability", "billing=nope"], "unknown LIKE_SEGMENT 'nope'; recorded segments: "),
    (["--add-capability", "search=support"], "segment 'search' already exists"),
    (["--add-capability", "b=support:0.6", "--add-capability", "c=search:0.5"],
     "SHAREs must sum to less than 1"),
])
def test_bad_flags_exit_2(capsys, spans_file, a15, extra, message):
    rc, out, err = envelope(capsys, "--spans", spans_file, "--assumptions", a15, *extra)
    assert rc == 2 and out == ""
    assert message in err


def test_non_numeric_flag_is_a_usage_error(capsys, spans_file, a15):
    with pytest.raises(SystemExit) as exc:  # argparse: exit 2 with its usage message
        main(["envelope", "--spans", str(spans_file), "--assumptions", str(a15), "--usage", "x"])
    assert exc.value.code == 2
    assert "argument --usage: invalid float value: 'x'" in capsys.readouterr().err


def test_bad_files_exit_2_naming_file_and_field(capsys, spans_file, a15, tmp_path):
    rc, _, err = envelope(capsys, "--spans", tmp_path / "missing.jsonl", "--assumptions", a15)
    assert rc == 2 and f"{tmp_path / 'missing.jsonl'}: cannot read" in err
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("assumptions: [\n  - id: x\n")
    rc, _, err = envelope(capsys, "--spans", spans_file, "--assumptions", bad_yaml)
    assert rc == 2 and f"{bad_yaml}: not valid YAML" in err and "line" in err
    bad_field = write_assumptions(tmp_path / "f.yaml", [assumption("x", "support", "fanout", "p80", 3)])
    rc, _, err = envelope(capsys, "--spans", spans_file, "--assumptions", bad_field)
    assert rc == 2 and f"{bad_field}: assumptions[0] (id=x): field 'stat'" in err
    bad_policy = tmp_path / "policy.yaml"
    bad_policy.write_text("policy_id: p\nversion: 1\nmodels: []\nsegments: []\n")
    rc, _, err = envelope(capsys, "--spans", spans_file, "--assumptions", a15, "--policy", bad_policy)
    assert rc == 2 and f"{bad_policy}: models:" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"garbage\n")
    rc, _, err = envelope(capsys, "--spans", empty, "--assumptions", a15)
    assert rc == 2 and f"{empty}: no valid spans (1 rejected line(s))" in err
    assert f"{empty}:1: skipped: not valid JSON" in err
