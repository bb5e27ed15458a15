"""The workload simulator: contract, determinism, scenario shapes and ground truth."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import subprocess
import sys
import types
from functools import cache
from pathlib import Path

import numpy as np
import orjson
import pytest

from app.cli import main
from app.core.session import close, fold
from app.simulate import (
    SCENARIOS,
    build,
    default_policy,
    ground_truth,
    iter_records,
    iter_sessions,
    iter_spans,
    policy_router,
    write_jsonl,
)
from app.simulate.routing import LARGE, SMALL, capabilities
from schemas.session import METRICS
from schemas.span import SpanEvent

ROOT = Path(__file__).resolve().parents[2]
N = 6000  # sessions per scenario run: ~1000 per segment and phase
SEED = 1


@cache
def run(name: str, seed: int = SEED, sessions: int = N):
    """(segment, phase) -> list of (SessionShape, SessionTruth), folded with stage 1."""
    out: dict = {}
    construct = SpanEvent.model_construct
    for s in iter_sessions(build(name, sessions=sessions), seed):
        state = None
        for rec in s.spans:
            state = fold(state, construct(**rec))
        out.setdefault((s.truth.segment, s.truth.phase), []).append((close(state, "idle"), s.truth))
    return out


def values(rows, metric: str) -> np.ndarray:
    vals = [shape.metric(metric) for shape, _ in rows]
    return np.array([v for v in vals if v is not None], dtype=float)


def ks(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.sort(a), np.sort(b)
    x = np.concatenate([a, b])
    fa = np.searchsorted(a, x, side="right") / len(a)
    fb = np.searchsorted(b, x, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


def ks_critical(na: int, nb: int) -> float:
    return 1.95 * ((na + nb) / (na * nb)) ** 0.5  # two-sample KS, alpha = 0.001


# --- contract and determinism ----------------------------------------------------------------

@pytest.mark.parametrize("name", SCENARIOS)
def test_records_are_exact_span_event_dumps(name):
    recs = list(iter_records(name, seed=3, sessions=60))
    for rec in recs:
        dumped = SpanEvent.model_validate(rec).model_dump(mode="json", exclude_none=False)
        assert dumped == rec and list(dumped) == list(rec)


def test_iter_spans_equals_validated_records():
    for span, rec in zip(iter_spans("dev-to-support", seed=2, sessions=30),
                         iter_records("dev-to-support", seed=2, sessions=30), strict=True):
        assert span == SpanEvent.model_validate(rec)


def digest(name: str, seed: int, sessions: int = 300) -> str:
    buf = io.BytesIO()
    write_jsonl(iter_records(name, seed=seed, sessions=sessions), buf)
    return hashlib.sha256(buf.getvalue()).hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes():
    assert digest("dev-to-support", 5) == digest("dev-to-support", 5)
    assert digest("dev-to-support", 5) != digest("dev-to-support", 6)


def test_cli_output_is_byte_identical_across_processes(tmp_path):
    """Other hash seeds, other processes: same bytes (no set order or hash() leaks in)."""
    outs = []
    for hashseed in ("1", "2"):
        out = tmp_path / f"spans{hashseed}.jsonl"
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        subprocess.run([sys.executable, "-m", "app", "simulate", "--scenario", "retry-storm",
                        "--seed", "9", "--sessions", "200", "--out", str(out)],
                       cwd=ROOT, env=env, check=True, capture_output=True)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    assert hashlib.sha256(outs[0]).hexdigest() == digest("retry-storm", 9, 200)


def test_session_structure_and_time_order():
    recs = list(iter_records("dev-to-support", seed=4, sessions=300))
    ends = [r["end_time_unix_nano"] for r in recs]
    assert ends == sorted(ends)
    by_session: dict = {}
    for r in recs:
        by_session.setdefault(r["session_id"], []).append(r)
    assert len(by_session) == 300
    starts = sorted(min(r["start_time_unix_nano"] for r in v) for v in by_session.values())
    assert starts[0] > build("steady").epoch_ns
    interleaved = 0
    for spans in by_session.values():
        ids = {r["span_id"]: r for r in spans}
        assert len(ids) == len(spans)
        root = spans[-1]
        assert root["session_end"] and root["operation"] == "invoke_agent"
        assert sum(r["session_end"] for r in spans) == 1
        for r in spans:
            assert r["parent_span_id"] is None or r["parent_span_id"] in ids
            parent = ids.get(r["parent_span_id"])
            if parent is not None:
                assert parent["start_time_unix_nano"] <= r["start_time_unix_nano"]
                assert r["end_time_unix_nano"] <= parent["end_time_unix_nano"]
        first, last = recs.index(spans[0]), recs.index(root)
        interleaved += any(x["session_id"] != root["session_id"] for x in recs[first:last])
    assert interleaved > 100  # sessions overlap in time


# --- per-session metrics agree with what the generator did ----------------------------------

def test_fold_of_simulated_sessions_matches_their_truth():
    caps = {p.segment.agent: p.context_cap for p in default_policy().segments}
    windows = {SMALL.name: SMALL.context_window, LARGE.name: LARGE.context_window}
    for (segment, _), rows in run("dev-to-support").items():
        for shape, truth in rows[:300]:
            assert shape.segment.key == segment and shape.session_id == truth.session_id
            assert shape.llm_calls == truth.llm_calls
            assert shape.truncations == truth.truncated_calls
            assert shape.errors == truth.errors
            assert shape.fanout - shape.retries <= truth.tool_steps <= shape.fanout
            limit = min(caps[segment], min(windows[m] for m in shape.models))
            assert shape.context_tokens == min(truth.context_demand, limit)
            assert shape.complexity_declared
            assert abs(shape.complexity - truth.complexity) <= 0.0301
            assert shape.depth in (3, 4) and shape.closed_by == "idle"


def test_shuffled_simulated_session_folds_the_same():
    rng = random.Random(0)
    for s in iter_sessions(build("dev-to-support", sessions=40, change_at=0), seed=8):
        construct = [SpanEvent.model_construct(**r) for r in s.spans]
        a = None
        for sp in construct:
            a = fold(a, sp)
        rng.shuffle(construct)
        b = None
        for sp in construct + construct[:3]:
            b = fold(b, sp)
        assert a.to_bytes() == b.to_bytes()


# --- scenario shapes -------------------------------------------------------------------------

def mean(rows, metric):
    return float(values(rows, metric).mean())


def test_dev_to_support_reference_shape():
    r = run("dev-to-support")
    before, after = r[("support", "before")], r[("support", "after")]
    assert 2.7 <= mean(before, "fanout") <= 3.3
    assert 10.3 <= mean(after, "fanout") <= 11.7
    assert np.percentile(values(before, "context_tokens"), 95) < 16_384  # within the 16K cap
    assert mean(before, "truncations") < 0.02
    assert np.median([t.context_demand for _, t in after]) >= 64_000
    assert (values(after, "context_tokens") == 16_384).mean() > 0.99  # cut at the cap ...
    assert mean(after, "truncations") > 4  # ... and counted as truncations
    assert mean(after, "complexity") > mean(before, "complexity") + 0.2

    def small_share(rows):
        calls = sum(t.llm_calls for _, t in rows)
        return sum(t.calls_by_model.get(SMALL.name, 0) for _, t in rows) / calls

    def misrouted(rows):
        return np.mean([t.misrouted for _, t in rows])

    assert 0.74 <= small_share(before) <= 0.86
    assert 0.74 <= small_share(r[("dev-assistant", "before")]) <= 0.86
    assert misrouted(before) < 0.06 and misrouted(after) > 4 * misrouted(before)
    assert mean(after, "errors") > 2 * mean(before, "errors")


def test_context_creep_is_gradual():
    rows = run("context-creep")[("dev-assistant", "after")]
    ctx = [shape.context_tokens for shape, _ in rows]  # in session order
    q = len(ctx) // 4
    before = mean(run("context-creep")[("dev-assistant", "before")], "context_tokens")
    assert before < np.mean(ctx[:q]) < np.mean(ctx[q:2 * q]) < np.mean(ctx[-q:])


def test_tail_only_moves_p99_not_median():
    r = run("tail-only")
    before, after = values(r[("search", "before")], "context_tokens"), \
        values(r[("search", "after")], "context_tokens")
    assert abs(np.median(after) / np.median(before) - 1) < 0.05
    assert np.percentile(after, 99) > 1.5 * np.percentile(before, 99)
    assert 0.02 <= np.mean([t.tail for _, t in r[("search", "after")]]) <= 0.04


def test_retry_storm_raises_retries():
    r = run("retry-storm")
    assert mean(r[("search", "after")], "retry_rate") > 5 * mean(r[("search", "before")],
                                                                 "retry_rate")


# --- ground truth ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", SCENARIOS)
def test_ground_truth_names_exactly_what_changes(name):
    """Claimed metrics move (KS significant, or P99 x1.5 for tails); every other metric of
    every segment stays within noise (KS not significant, <= 3% above the old P99)."""
    sc = build(name, sessions=N)
    truth = ground_truth(sc, SEED)
    claims = {c["segment"]: c for c in truth["changes"]}
    assert set(claims) | set(truth["unchanged_segments"]) == {s.key for s in sc.segments}
    r = run(name)
    for spec in sc.segments:
        claim = claims.get(spec.key, {"metrics": [], "incidental_metrics": []})
        for metric in METRICS:
            if metric in claim["incidental_metrics"]:
                continue
            b = values(r[(spec.key, "before")], metric)
            a = values(r[(spec.key, "after")], metric)
            significant = ks(b, a) > ks_critical(len(b), len(a))
            p99b, p99a = np.percentile(b, 99), np.percentile(a, 99)
            where = f"{name}/{spec.key}/{metric}"
            if metric in claim["metrics"]:
                assert significant or p99a > 1.5 * p99b, where
            else:
                assert not significant, where
                assert np.mean(a > p99b) <= 0.03, where


def test_ground_truth_change_time_is_the_change_session_arrival():
    sc = build("dev-to-support", sessions=200, change_at=120)
    change = ground_truth(sc, 4)["changes"][0]
    first_after = next(s for s in iter_sessions(sc, 4) if s.index == 120)
    assert change["change_time_unix_nano"] == first_after.start_ns
    assert ground_truth(build("steady", sessions=10), 4)["changes"] == []
    no_change = ground_truth(build("retry-storm", sessions=10, change_at=10), 4)
    assert no_change["changes"] == [] and len(no_change["unchanged_segments"]) == 3


# --- routing is pluggable --------------------------------------------------------------------

def test_router_is_pluggable_and_tasks_do_not_depend_on_it():
    sc = build("dev-to-support", sessions=400, change_at=100)
    calls = []

    def large_only(segment, complexity, demand):
        calls.append((segment.key, complexity, demand))
        return LARGE.name, "all-large", 200_000

    default = list(iter_sessions(sc, 3))
    custom = list(iter_sessions(sc, 3, router=large_only))
    assert calls and all(0.0 <= c <= 1.0 and d > 0 for _, c, d in calls)
    for a, b in zip(default, custom, strict=True):
        ta, tb = a.truth, b.truth
        assert (ta.segment, ta.complexity, ta.context_demand, ta.tool_steps) == \
               (tb.segment, tb.complexity, tb.context_demand, tb.tool_steps)
        assert tb.misrouted_calls == tb.truncated_calls == 0
        assert {r["route"] for r in b.spans if r["operation"] == "chat"} == {"all-large"}
    assert sum(s.truth.misrouted_calls for s in default) > 0


def test_policy_router_follows_the_policy():
    route = policy_router(default_policy())
    from schemas.common import Segment

    assert route(Segment(agent="support"), 0.7, 1)[0] == SMALL.name
    assert route(Segment(agent="support"), 0.71, 1)[0] == LARGE.name


def test_default_router_serves_the_reference_policy_file():
    """One reference world: examples/policy.yaml is the simulator's policy and its catalog the
    simulated models' truth; the default router decides exactly as ``app.loop.policy.route``."""
    from app.loop.policy import EXAMPLE_POLICY, load_policy, route
    from schemas.common import Segment

    policy = load_policy(EXAMPLE_POLICY)
    assert default_policy() == policy and policy.policy_id == "reference"
    assert capabilities() == {m.name: m.capability for m in policy.models}
    assert ground_truth(build("steady", sessions=1), 0)["model_capabilities"] == capabilities()
    assert (SMALL.name, SMALL.capability, LARGE.name, LARGE.capability) == \
        ("haiku-s", 0.55, "opus-l", 1.0)
    router = policy_router(policy)
    for agent in ("dev-assistant", "support", "search", "other"):
        for c in (0.0, 0.55, 0.7, 0.71, 1.0):
            for demand in (1, 20_000, 150_000):
                d = route(policy, Segment(agent=agent), c, demand)
                assert router(Segment(agent=agent), c, demand) == (d.model, d.rule, d.context_cap)


# --- CLI -------------------------------------------------------------------------------------

def test_cli_writes_spans_and_truth(tmp_path, capsys):
    out, truth, per = tmp_path / "s.jsonl", tmp_path / "t.json", tmp_path / "st.jsonl"
    rc = main(["simulate", "--scenario", "tail-only", "--seed", "2", "--sessions", "80",
               "--change-at", "30", "--rate", "5", "--out", str(out), "--truth", str(truth),
               "--session-truth", str(per), "--order", "session"])
    assert rc == 0
    lines = out.read_bytes().splitlines()
    assert all(SpanEvent.model_validate_json(line) for line in lines)
    gt = json.loads(truth.read_text())
    assert gt["scenario"] == "tail-only" and gt["seed"] == 2 and gt["sessions"] == 80
    assert gt["changes"][0]["segment"] == "search" and gt["changes"][0]["change_session"] == 30
    assert sum(p["sessions"] for seg in gt["stats"].values() for p in seg.values()) == 80
    assert len(per.read_bytes().splitlines()) == 80
    assert "80 sessions" in capsys.readouterr().err


def test_cli_rejects_bad_arguments(capsys):
    assert main(["simulate", "--scenario", "steady", "--rate", "0", "--out", os.devnull]) == 2


def test_cli_kafka_path_uses_the_emitter(monkeypatch, capsys):
    emitted = []

    waits = []

    class FakeEmitter:
        """SpanEmitter's API; its buffer 'drains' one record per wait of the simulator."""

        def __init__(self, settings, buffer_size):
            self.buffer_size, self.buffered = buffer_size, 0

        async def start(self):
            pass

        def emit(self, span):
            emitted.append(span)
            self.buffered += 1
            return len(emitted) % 10 != 0  # every tenth refused

        @property
        def stats(self):
            if self.buffered > self.buffer_size // 2:
                waits.append(self.buffered)
                self.buffered -= 200
            return types.SimpleNamespace(buffered=self.buffered, dropped=3)

        async def close(self):
            pass

    monkeypatch.setitem(sys.modules, "app.emitter", types.SimpleNamespace(SpanEmitter=FakeEmitter))
    rc = main(["simulate", "--scenario", "steady", "--sessions", "80", "--kafka",
               "--buffer-size", "400"])
    assert rc == 0
    assert [orjson.dumps(e) for e in emitted] == \
        [orjson.dumps(r) for r in iter_records("steady", seed=0, sessions=80)]
    assert f"({len(emitted) // 10 + 3} dropped)" in capsys.readouterr().err
    assert waits  # the simulator waited for the emitter's buffer to drain
