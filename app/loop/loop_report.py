"""The closed-loop report: misroute rates before the change, between change and
recalibration, and after it, from the simulator's per-session ground truth (pure).

Phases, per session: ``before_change`` (drawn before the scenario's change point),
``after_change_before_recalibration`` (after it, routed by the initial policy) and
``after_recalibration`` (after it, routed by a recalibrated policy version). A session is
*misrouted* when one of its LLM calls went to a model whose capability is below the call's
complexity (it failed and was retried or escalated). ``misroute_rate`` counts the segments
the scenario changes (its ground truth); ``misroute_rate_all_segments`` counts every session.

>>> from app.simulate import build
>>> from app.loop.closed_loop import run_closed_loop
>>> r = loop_report(run_closed_loop(build("steady", sessions=30), seed=2))
>>> r["change_session"], r["recalibrations_applied"], r["misroute_rate"]["after_recalibration"]
(15, 0, None)
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable

from app.loop.closed_loop import LoopResult, RoutedSession

PHASES = ("before_change", "after_change_before_recalibration", "after_recalibration")


def phase(s: RoutedSession, initial_version: int) -> str:
    if s.truth.phase == "before":
        return PHASES[0]
    return PHASES[1] if s.served_version <= initial_version else PHASES[2]


def changed_segments(res: LoopResult) -> list[str]:
    """The segments whose profile changes inside the run (the ground truth's changes)."""
    sc = res.scenario
    return sorted(s.key for s in sc.segments if s.after is not None and sc.change_at < sc.sessions)


def rates(sessions: Iterable[RoutedSession], initial_version: int) -> dict:
    """Per phase: misrouted sessions / sessions (None for an empty phase), and the counts."""
    n, bad = Counter(), Counter()
    for s in sessions:
        p = phase(s, initial_version)
        n[p] += 1
        bad[p] += s.truth.misrouted
    rate = {p: (bad[p] / n[p] if n[p] else None) for p in PHASES}
    return {"rate": rate, "sessions": {p: n[p] for p in PHASES},
            "misrouted": {p: bad[p] for p in PHASES}}


def reduction(rate: dict) -> float | None:
    """1 - after / between: the share of misroutes the recalibration removed."""
    between, after = rate[PHASES[1]], rate[PHASES[2]]
    if between is None or after is None or between == 0:
        return None
    return 1.0 - after / between


def loop_report(res: LoopResult) -> dict:
    initial = _initial_version(res)
    changed = changed_segments(res)
    focus = rates((s for s in res.sessions if s.truth.segment in changed), initial)
    overall = rates(res.sessions, initial)
    applied = [o for o in res.offers if o.accepted]
    starts = [s.truth.start_ns for s in res.sessions]
    return {
        "scenario": res.scenario.name, "seed": res.seed, "sessions": len(res.sessions),
        "policy_id": res.policy_id, "signing_key": res.key_source,
        "change_session": res.scenario.change_at, "changed_segments": changed,
        "recalibrations_applied": len(applied), "recalibrations_offered": len(res.offers),
        "first_alert_session": _first_alert_session(res, starts),
        "first_recalibration_session": applied[0].before_session if applied else None,
        "misroute_rate": focus["rate"], "misroute_reduction": reduction(focus["rate"]),
        "sessions_by_phase": focus["sessions"], "misrouted_by_phase": focus["misrouted"],
        "misroute_rate_all_segments": overall["rate"],
        "misroute_reduction_all_segments": reduction(overall["rate"]),
        "misroute_rate_by_segment": {
            seg: rates((s for s in res.sessions if s.truth.segment == seg), initial)["rate"]
            for seg in sorted({s.truth.segment for s in res.sessions})},
        "alerts_by_kind": dict(sorted(Counter(a.kind for a in res.alerts).items())),
        "alerts": [_alert_line(a, starts) for a in res.alerts],
        "recalibrations": [_offer_line(o, res) for o in res.offers],
        "gateway": res.gateway_counters,
    }


def _initial_version(res: LoopResult) -> int:
    return min((s.served_version for s in res.sessions), default=0)


def _session_at(starts: list[int], t_ns: int) -> int:
    """Index of the last session started at or before ``t_ns`` (-1: none)."""
    return bisect_right(starts, t_ns) - 1


def _first_alert_session(res: LoopResult, starts: list[int]) -> int | None:
    firing = [a.detected_at for a in res.alerts if a.kind != "resolved"]
    return _session_at(starts, min(firing)) if firing else None


def _alert_line(a, starts: list[int]) -> dict:
    line = {"kind": a.kind, "segment": a.segment.key, "metric": a.metric, "detector": a.detector,
            "severity": a.severity, "detected_at": a.detected_at,
            "session": _session_at(starts, a.detected_at), "alert_id": a.alert_id}
    if a.assumption:
        line["assumption"] = a.assumption.get("id")
    return line


def _offer_line(o, res: LoopResult) -> dict:
    by_id = {a.alert_id: a for a in res.alerts}
    causes = []
    for aid in o.cause:
        a = by_id.get(aid)
        causes.append(aid if a is None else
                      f"{a.kind}:{a.segment.key}:{(a.assumption or {}).get('id', a.metric)}")
    return {"version": o.version, "at_ns": o.at_ns, "before_session": o.before_session,
            "accepted": o.accepted, "reason": o.reason, "changes": list(o.changes),
            "cause": causes}

