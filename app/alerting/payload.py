"""Map a loadshape ``Alert`` to an Alertmanager API v2 postable alert. Pure: no I/O, no clock.

Labels identify the alert in Alertmanager (its fingerprint), so a resolution must repeat the
labels of the alert it resolves: alertname, severity, segment, metric, kind.

>>> from schemas import Alert, DistributionSummary, Segment
>>> drift = Alert(alert_id="a1", kind="drift", metric="fanout", segment=Segment(agent="support"),
...     detector="adwin", severity="page", detected_at=1_700_000_000_000_000_000,
...     baseline=DistributionSummary(n=500, mean=3.1, p50=3, p95=5, p99=6),
...     current=DistributionSummary(n=200, mean=11.2, p50=11, p95=14, p99=18),
...     message="fan-out drifted up")
>>> p = to_postable(drift, now_unix_nano=1_700_000_060_000_000_000)
>>> p["labels"]
{'alertname': 'LoadShapeDrift', 'severity': 'page', 'segment': 'support', 'metric': 'fanout', 'kind': 'drift'}
>>> p["startsAt"], p["endsAt"]
('2023-11-14T22:13:20.000000000Z', '2023-11-15T22:14:20.000000000Z')
>>> p["annotations"]["evidence"]
'p50 3 -> 11, p95 5 -> 14, p99 6 -> 18, mean 3.1 -> 11.2 (n 500 vs 200; detector adwin)'
>>> p["annotations"]["runbook"]
'docs/RUNBOOK.md#load-shape-drift'
>>> done = Alert(alert_id="r1", kind="resolved", resolves="a1", resolved_kind="drift",
...     metric="fanout", segment=Segment(agent="support"), detector="adwin", severity="info",
...     detected_at=1_700_000_500_000_000_000, message="fan-out back to baseline")
>>> r = to_postable(done, now_unix_nano=1_700_000_600_000_000_000, opened=p)
>>> r["labels"] == p["labels"], r["startsAt"] == p["startsAt"], r["endsAt"]
(True, True, '2023-11-14T22:21:40.000000000Z')
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from schemas import Alert
from schemas.common import DistributionSummary

NS = 1_000_000_000
DEFAULT_FIRING_TTL_S = 24 * 3600
DEFAULT_RUNBOOK_BASE = "docs/RUNBOOK.md"

ALERTNAMES: Mapping[str, str] = {
    "drift": "LoadShapeDrift",
    "assumption_broken": "WorkloadAssumptionBroken",
}
RUNBOOK_ANCHORS: Mapping[str, str] = {
    "drift": "load-shape-drift",
    "assumption_broken": "workload-assumption-broken",
}

Postable = dict[str, Any]


class PayloadError(ValueError):
    """The alert cannot be mapped (e.g. a resolution that names no kind)."""


def rfc3339(unix_nano: int) -> str:
    """RFC 3339 UTC with nanoseconds, as Alertmanager parses it.

    >>> rfc3339(1_500_000_000_123_456_789)
    '2017-07-14T02:40:00.123456789Z'
    """
    secs, nanos = divmod(unix_nano, NS)
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def episode_kind(alert: Alert) -> str:
    """The kind of episode an alert opens or resolves ('drift' or 'assumption_broken')."""
    kind = alert.resolved_kind if alert.kind == "resolved" else alert.kind
    if kind not in ALERTNAMES:
        raise PayloadError(f"alert {alert.alert_id}: resolved alert without resolved_kind")
    return kind


def labels_of(alert: Alert) -> dict[str, str]:
    kind = episode_kind(alert)
    return {
        "alertname": ALERTNAMES[kind], "severity": alert.severity,
        "segment": alert.segment.key, "metric": alert.metric, "kind": kind,
    }


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def evidence(alert: Alert) -> str:
    """Baseline vs current as one compact line (plus the assumption as JSON when present).

    >>> from schemas import Segment
    >>> a = Alert(alert_id="x", kind="assumption_broken", metric="context_tokens",
    ...     segment=Segment(agent="support"), detector="assumption", severity="warning",
    ...     detected_at=0, message="", assumption={"id": "ctx-16k", "max": 16000})
    >>> evidence(a)
    'assumption {"id":"ctx-16k","max":16000} (detector assumption)'
    """
    parts = []
    b, c = alert.baseline, alert.current
    if b is not None and c is not None:
        parts.append(_compare(b, c))
    elif c is not None:
        parts.append(", ".join(f"{k} {_fmt(getattr(c, k))}" for k in ("p50", "p95", "p99", "mean"))
                     + f" (n {c.n})")
    if alert.assumption:
        parts.append("assumption " + json.dumps(alert.assumption, separators=(",", ":"),
                                               sort_keys=True, default=str))
    detail = f"detector {alert.detector}"
    if parts and parts[-1].endswith(")"):
        parts[-1] = parts[-1][:-1] + f"; {detail})"
    else:
        parts.append(f"({detail})")
    return " ".join(parts)[:4096]


def _compare(b: DistributionSummary, c: DistributionSummary) -> str:
    stats = ", ".join(
        f"{k} {_fmt(getattr(b, k))} -> {_fmt(getattr(c, k))}" for k in ("p50", "p95", "p99", "mean")
    )
    return f"{stats} (n {b.n} vs {c.n})"


def annotations_of(alert: Alert, runbook_base: str) -> dict[str, str]:
    kind = episode_kind(alert)
    what = "drift" if kind == "drift" else "broken assumption"
    out = {
        "summary": alert.message or f"Load-shape {what} in {alert.segment.key}: {alert.metric}",
        "evidence": evidence(alert),
        "runbook": f"{runbook_base}#{RUNBOOK_ANCHORS[kind]}",
        "alert_id": alert.alert_id,
    }
    if alert.kind == "resolved":
        out["resolved_by"] = alert.alert_id
        out["alert_id"] = alert.resolves or alert.alert_id
    return out


def to_postable(
    alert: Alert, *, now_unix_nano: int, opened: Postable | None = None,
    firing_ttl_s: float = DEFAULT_FIRING_TTL_S, runbook_base: str = DEFAULT_RUNBOOK_BASE,
    generator_url: str | None = None,
) -> Postable:
    """One postable alert. Firing alerts hold for ``firing_ttl_s`` past ``now`` (the episode
    ends with an explicit ``resolved``); a resolution reuses the labels and startsAt of
    ``opened`` (the payload posted for the alert it resolves) when known, and ends now."""
    if alert.kind == "resolved":
        labels = dict(opened["labels"]) if opened else labels_of(alert)
        ends = min(alert.detected_at, now_unix_nano)
        starts = rfc3339(min(alert.detected_at, ends)) if opened is None else opened["startsAt"]
        annotations = {**(opened or {}).get("annotations", {}), **annotations_of(alert, runbook_base)}
    else:
        labels = labels_of(alert)
        ends = max(alert.detected_at, now_unix_nano) + int(firing_ttl_s * NS)
        starts = rfc3339(alert.detected_at)
        annotations = annotations_of(alert, runbook_base)
    end = rfc3339(ends)
    out: Postable = {
        "labels": labels, "annotations": annotations,
        "startsAt": min(starts, end), "endsAt": end,  # same fixed format: sorts as time
    }
    if generator_url:
        out["generatorURL"] = generator_url
    return out
