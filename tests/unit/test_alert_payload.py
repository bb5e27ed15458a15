"""Alert -> Alertmanager API v2 payload (pure core of the pager path)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from app.alerting.forwarder import ForwardOptions, build_batch
from app.alerting.index import PostedIndex
from app.alerting.payload import PayloadError, rfc3339, to_postable
from app.metrics import LoadshapeMetrics
from schemas import Alert, DistributionSummary, Segment

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000


def drift(**kw) -> Alert:
    base = dict(
        alert_id="d1", kind="drift", metric="fanout",
        segment=Segment(agent="support", task_type="escalation"), detector="adwin",
        severity="page", detected_at=T0,
        baseline=DistributionSummary(n=1000, mean=3.0, p50=3, p95=5, p99=6),
        current=DistributionSummary(n=200, mean=11.0, p50=11, p95=15, p99=19),
        message="fan-out of support/escalation drifted: p95 5 -> 15",
    )
    return Alert(**{**base, **kw})


def resolved(**kw) -> Alert:
    base = dict(
        alert_id="r1", kind="resolved", resolves="d1", resolved_kind="drift", metric="fanout",
        segment=Segment(agent="support", task_type="escalation"), detector="adwin",
        severity="page", detected_at=T0 + 600 * S, message="fan-out back to baseline",
    )
    return Alert(**{**base, **kw})


def test_drift_page_labels_and_annotations():
    p = to_postable(drift(), now_unix_nano=T0 + 5 * S)
    assert p["labels"] == {
        "alertname": "LoadShapeDrift", "severity": "page", "segment": "support/escalation",
        "metric": "fanout", "kind": "drift",
    }
    ann = p["annotations"]
    assert ann["summary"] == "fan-out of support/escalation drifted: p95 5 -> 15"
    assert ann["evidence"].startswith("p50 3 -> 11, p95 5 -> 15, p99 6 -> 19")
    assert "n 1000 vs 200" in ann["evidence"] and "adwin" in ann["evidence"]
    assert ann["runbook"] == "docs/RUNBOOK.md#load-shape-drift"
    assert ann["alert_id"] == "d1"
    assert p["startsAt"] == rfc3339(T0)
    assert p["endsAt"] == rfc3339(T0 + 5 * S + 24 * 3600 * S)
    json.dumps(p)  # wire-ready
    assert all(isinstance(v, str) for v in (*p["labels"].values(), *ann.values()))


def test_assumption_broken_gets_its_own_alertname_and_runbook():
    a = drift(kind="assumption_broken", severity="warning", baseline=None,
              assumption={"id": "support-ctx-16k", "text": "context_tokens p95 <= 16000"},
              message="")
    p = to_postable(a, now_unix_nano=T0, runbook_base="https://example.invalid/RUNBOOK.md")
    assert p["labels"]["alertname"] == "WorkloadAssumptionBroken"
    assert p["labels"]["kind"] == "assumption_broken"
    assert p["annotations"]["runbook"] == (
        "https://example.invalid/RUNBOOK.md#workload-assumption-broken")
    assert "support-ctx-16k" in p["annotations"]["evidence"]
    assert p["annotations"]["summary"] == (
        "Load-shape broken assumption in support/escalation: fanout")


def test_resolution_repeats_the_opening_labels_and_ends_now():
    opened = to_postable(drift(), now_unix_nano=T0)
    r = to_postable(resolved(severity="info"), now_unix_nano=T0 + 700 * S, opened=opened)
    assert r["labels"] == opened["labels"]  # same fingerprint, although severity differs
    assert r["startsAt"] == opened["startsAt"]
    assert r["endsAt"] == rfc3339(T0 + 600 * S)
    assert r["annotations"]["resolved_by"] == "r1" and r["annotations"]["alert_id"] == "d1"


def test_resolution_without_known_opening_derives_labels():
    r = to_postable(resolved(), now_unix_nano=T0 + 700 * S)
    assert r["labels"] == to_postable(drift(), now_unix_nano=T0)["labels"]


def test_resolution_in_the_future_ends_now():
    r = to_postable(resolved(detected_at=T0 + 900 * S), now_unix_nano=T0 + 100 * S)
    assert r["endsAt"] == rfc3339(T0 + 100 * S)


def test_resolution_without_kind_is_rejected():
    with pytest.raises(PayloadError):
        to_postable(resolved(resolved_kind=None), now_unix_nano=T0)


@given(detected=st.integers(0, 2**62), now=st.integers(0, 2**62), resolve=st.booleans())
def test_starts_never_after_ends(detected, now, resolve):
    alert = resolved(detected_at=detected) if resolve else drift(detected_at=detected)
    p = to_postable(alert, now_unix_nano=now)
    assert p["startsAt"] <= p["endsAt"]


def test_build_batch_skips_garbage_and_links_resolutions():
    registry = CollectorRegistry()
    metrics = LoadshapeMetrics.create(registry, max_segments=5)
    index = PostedIndex()
    raw = [
        drift().model_dump_json().encode(),
        b"{not json",
        resolved(severity="info").model_dump_json().encode(),
        resolved(alert_id="r2", resolved_kind=None).model_dump_json().encode(),
    ]
    payloads, kinds = build_batch(raw, index, now_unix_nano=T0 + 700 * S,
                                  opts=ForwardOptions("http://x"), metrics=metrics)
    assert kinds == ["drift", "resolved"]
    assert payloads[1]["labels"] == payloads[0]["labels"]
    assert payloads[1]["labels"]["severity"] == "page"
    skipped = {
        kind: registry.get_sample_value(
            "loadshape_alerts_forwarded_total", {"kind": kind, "outcome": "skipped"})
        for kind in ("invalid", "resolved")
    }
    assert skipped == {"invalid": 1.0, "resolved": 1.0}
