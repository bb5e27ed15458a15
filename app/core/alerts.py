"""Drift / resolved alerts of the segment monitor: ids, severity, readable messages.

Alert ids are content hashes, so a replay and a Kafka run of the same sessions give the
same ids: sha256 over ``kind|segment|metric|detected_at|session_id``, first 20 hex digits.

Severity rule: ``page`` when the move is large - mean, p50, p95 or p99 changed by a factor
of at least ``page_factor`` (either way; ``move_factor``) - *and* the gate saw it in the
tail (P95/P99/max aspects) or it is a context / fan-out metric (``PAGE_METRICS``);
``warning`` otherwise. A resolution carries the
severity of the alert it resolves (Alertmanager matches them by labels).

>>> alert_id("drift", "support", "fanout", 10, "s1")
'eccce29fb0f4095ff2db'
>>> fmt(48000.0), fmt(3.0), fmt(3.14159), fmt(0.0125)
('48K', '3', '3.14', '0.0125')
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from app.core.episodes import EpisodeState
from app.core.gate import Verdict
from schemas.alert import Alert
from schemas.common import DistributionSummary, Segment


def alert_id(kind: str, segment_key: str, metric: str, detected_at: int, session_id: str) -> str:
    raw = f"{kind}|{segment_key}|{metric}|{detected_at}|{session_id}".encode()
    return hashlib.sha256(raw).hexdigest()[:20]


def move_factor(old: Mapping, new: Mapping) -> float:
    """The largest ratio (either way) between old and new mean/p50/p95/p99; values below
    a tenth of the old p99 count as that much (a p50 of 0 has no ratio).

    >>> move_factor({"mean": 3.1, "p50": 3, "p95": 6, "p99": 8},
    ...             {"mean": 11.2, "p50": 11, "p95": 16, "p99": 19})
    3.6666666666666665
    """
    floor = max(0.1 * old["p99"], 1e-9)
    return max(max(a, b) / min(a, b) for s in ("mean", "p50", "p95", "p99")
               for a, b in [(max(old[s], floor), max(new[s], floor))])


def severity(metric: str, aspect: str, factor: float, page_factor: float, page_metrics) -> str:
    tail = aspect.startswith("tail_")
    return "page" if factor >= page_factor and (tail or metric in page_metrics) else "warning"


def fmt(v: float) -> str:
    """Short human number: 48K, 3, 3.14, 0.0125."""
    if abs(v) >= 10_000:
        return f"{v / 1000:.3g}K"
    if float(v).is_integer():
        return str(int(v))
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


def _moves(old: Mapping, new: Mapping) -> str:
    qs = ", ".join(f"{q} {fmt(old[q])} -> {fmt(new[q])}" for q in ("p50", "p95", "p99"))
    return f"{qs} (mean {fmt(old['mean'])} -> {fmt(new['mean'])})"


def drift_alert(*, segment: Segment, metric: str, ep: EpisodeState, verdict: Verdict,
                baseline: Mapping, detected_at: int, session_id: str) -> Alert:
    """The ``drift`` alert opening episode ``ep`` (``baseline``: summary of the old one)."""
    aspect = verdict.aspect.replace("_", " ")
    msg = (f"{segment.key} {metric} drifted: {_moves(baseline, verdict.post)} over "
           f"{verdict.window} sessions [{ep.detector}; {aspect}]")
    return Alert(alert_id=ep.alert_id, kind="drift", metric=metric, segment=segment,
                 detector=ep.detector, severity=ep.severity, detected_at=detected_at,
                 baseline=DistributionSummary(**baseline),
                 current=DistributionSummary(**verdict.post), message=msg)


def resolved_alert(*, segment: Segment, metric: str, closed: EpisodeState, new: Mapping,
                   detected_at: int, session_id: str) -> Alert:
    """``resolved`` for the episode ``closed``: baseline = the old shape, current = the new
    baseline now established."""
    old = closed.old or new
    msg = (f"{segment.key} {metric} drift resolved: new baseline established over "
           f"{new['n']} sessions; {_moves(old, new)}")
    return Alert(alert_id=alert_id("resolved", segment.key, metric, detected_at, session_id),
                 kind="resolved", metric=metric, segment=segment,
                 detector=closed.detector or "episode", severity=closed.severity or "info",
                 detected_at=detected_at, baseline=DistributionSummary(**old),
                 current=DistributionSummary(**new), message=msg, resolves=closed.alert_id,
                 resolved_kind="drift")
