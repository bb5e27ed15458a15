"""Closed loop: simulated agents behind the gateway, recalibrated by the worker's core."""

from __future__ import annotations

import json

import orjson
import pytest

from app.cli import main
from app.core.segment import MonitorConfig
from app.loop.closed_loop import DEMO_KEY, LoopConfig, gateway_router, run_closed_loop
from app.loop.gateway import Gateway
from app.loop.loop_report import PHASES, loop_report
from app.loop.policy import EXAMPLE_POLICY, load_policy
from app.loop.signing import verify
from app.simulate import build, default_policy, iter_sessions, policy_router
from schemas import Segment, SpanEvent

SESSIONS, SEED = 3000, 7  # ~450 support sessions per phase, ~1.5 s


@pytest.fixture(scope="module")
def reference():
    res = run_closed_loop(build("dev-to-support", sessions=SESSIONS), SEED)
    return res, loop_report(res)


def test_recalibration_cuts_misroutes_by_80_percent(reference):
    _, r = reference
    rate = r["misroute_rate"]
    assert r["change_session"] == SESSIONS // 2 and r["changed_segments"] == ["support"]
    assert r["recalibrations_applied"] >= 1 and r["gateway"]["rejected"] == {}
    assert rate["before_change"] < 0.06  # a few %: the routine tasks between 0.55 and 0.7
    assert rate["after_change_before_recalibration"] > 0.15  # complex support work on haiku-s
    assert rate["after_recalibration"] <= 0.2 * rate["after_change_before_recalibration"]
    assert r["misroute_reduction"] >= 0.8
    assert all(r["sessions_by_phase"][p] >= 30 for p in PHASES)  # every phase measured
    assert r["change_session"] < r["first_alert_session"] < r["first_recalibration_session"]


def test_first_recalibration_is_the_reference_story(reference):
    res, r = reference
    assert any(a.kind == "assumption_broken" and a.assumption["id"] == "support-context-cap"
               for a in res.alerts)
    first = next(o for o in res.offers if o.accepted)
    assert first.version == 2 and first.cause
    changed = {c["field"]: (c["old"], c["new"]) for c in first.changes
               if c["segment"]["agent"] == "support"}
    assert changed["context_cap"][0] == 16384 and changed["context_cap"][1] >= 65536
    assert changed["routes[0].max_complexity"] == (0.7, 0.55)  # haiku-s's capability
    assert {c["segment"]["agent"] for c in first.changes} == {"support"}  # nothing else alerted
    assert r["recalibrations"][0]["before_session"] == r["first_recalibration_session"]


def test_tracker_alone_closes_the_loop():
    """No drift detector can fire (baselines never fill): the 16K-cap assumption triggers it."""
    cfg = LoopConfig(monitor=MonitorConfig(baseline_n=10**7, rebaseline_n=10**7))
    res = run_closed_loop(build("dev-to-support", sessions=2000), SEED, config=cfg)
    r = loop_report(res)
    assert set(r["alerts_by_kind"]) == {"assumption_broken"}
    assert r["recalibrations"][0]["cause"] == ["assumption_broken:support:support-context-cap"]
    assert r["misroute_reduction"] >= 0.8


def test_messages_are_signed_and_replay_through_a_fresh_gateway(reference):
    res, _ = reference
    gw = Gateway(load_policy(EXAMPLE_POLICY), DEMO_KEY)
    for offer in res.offers:
        assert verify(json.loads(offer.message), DEMO_KEY)
        assert gw.offer(offer.message).accepted == offer.accepted
    assert gw.policy.version == 1 + sum(o.accepted for o in res.offers)
    forged = Gateway(load_policy(EXAMPLE_POLICY), "another-key")
    assert {forged.offer(o.message).reason for o in res.offers} == {"bad_signature"}


def test_without_alerts_the_loop_routes_exactly_like_the_simulator():
    sc = build("steady", sessions=300)
    res = run_closed_loop(sc, 3)
    assert res.alerts == [] and res.offers == []
    open_loop = [s.truth.to_dict() for s in iter_sessions(sc, 3)]
    assert [s.truth.to_dict() for s in res.sessions] == open_loop


def test_gateway_router_matches_the_policy_router():
    gw, direct = gateway_router(Gateway(default_policy(), "k")), policy_router(default_policy())
    for agent in ("dev-assistant", "support", "search", "other"):
        for c in (0.1, 0.55, 0.7, 0.9):
            for demand in (5_000, 90_000, 150_000):
                assert gw(Segment(agent=agent), c, demand) == direct(Segment(agent=agent), c, demand)


def test_propose_mode_needs_a_human():
    res = run_closed_loop(build("dev-to-support", sessions=2000), SEED,
                          config=LoopConfig(mode="propose"))
    r = loop_report(res)
    assert r["recalibrations_offered"] >= 1 and r["recalibrations_applied"] == 0
    assert set(r["gateway"]["rejected"]) == {"proposal_only"}
    assert r["misroute_rate"]["after_recalibration"] is None and r["misroute_reduction"] is None


def test_same_seed_same_report(reference):
    _, r = reference
    again = loop_report(run_closed_loop(build("dev-to-support", sessions=SESSIONS), SEED))
    assert orjson.dumps(again) == orjson.dumps(r)


def test_cli_closed_loop(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOADSHAPE_RECALIBRATION_KEY", "cli-key")
    report, recs, spans = tmp_path / "r.json", tmp_path / "rec.jsonl", tmp_path / "s.jsonl"
    rc = main(["simulate", "--scenario", "dev-to-support", "--closed-loop", "--sessions", "1600",
               "--seed", str(SEED), "--report", str(report), "--recalibrations-out", str(recs),
               "--out", str(spans)])
    assert rc == 0
    r = json.loads(report.read_text())
    assert {"change_session", "recalibrations_applied", "misroute_rate"} <= set(r)
    assert set(r["misroute_rate"]) == set(PHASES)
    assert r["signing_key"].startswith("settings.recalibration_key")
    lines = recs.read_bytes().splitlines()
    assert len(lines) == r["recalibrations_offered"] >= 1
    assert all(verify(json.loads(line), "cli-key") for line in lines)
    records = [orjson.loads(line) for line in spans.read_bytes().splitlines()]
    assert sum(rec["session_end"] for rec in records) == 1600
    ends = [rec["end_time_unix_nano"] for rec in records]
    assert ends == sorted(ends) and SpanEvent.model_validate(records[-1])
    assert "recalibrations applied" in capsys.readouterr().err


def test_cli_closed_loop_rejects_bad_arguments(tmp_path, capsys):
    base = ["simulate", "--scenario", "dev-to-support", "--closed-loop", "--sessions", "10"]
    assert main([*base, "--kafka"]) == 2
    assert main([*base, "--out", "-"]) == 2  # spans and report would share stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy_id: x\n")
    assert main([*base, "--policy", str(bad)]) == 2
    assert f"{bad}: " in capsys.readouterr().err
