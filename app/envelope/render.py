"""Render an envelope report as a plain-text table or a JSON-able dict (pure).

>>> fmt(0.123456), fmt(16384.0), fmt(None), fmt(2.5e6), pct(0.0421), pct(None)
('0.123', '16384', '-', '2500000', '4.2%', '-')
>>> print(table([("A", "B"), ("x", "12")]))
A  B
x  12
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from app.envelope.evaluate import KEY_METRICS, Load, Report, Risk, Side, Verdict


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def ratio(now: float | None, projected: float | None) -> str:
    return "-" if not now or projected is None else f"x{projected / now:.3g}"


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def describe(report: Report) -> str:
    e = report.envelope
    parts = [f"usage x{fmt(e.usage)}", f"complexity x{fmt(e.complexity)}"]
    parts += [f"+{c.name} like {c.like}" + ("" if c.share is None else f" ({pct(c.share)} of traffic)")
              for c in e.add]
    policy = report.policy_id or "none (recorded context limits)"
    return f"envelope: {', '.join(parts)}; policy: {policy}; seed {e.seed}"


def render_text(report: Report, notes: Sequence[str] = ()) -> str:
    """The human report: assumptions, P99s, risk and load, then the verdict."""
    censored = (f" ({report.censored_sessions} hit the context limit: their demand, and so "
                "projected context, is a lower bound)" if report.censored_sessions else "")
    head = [describe(report),
            f"recording: {report.recorded_spans} spans, {report.recorded_sessions} sessions over "
            f"{report.duration_s:.1f} s of event time{censored}", *notes]
    blocks = ["\n".join(head), _assumptions(report.verdicts), _p99s(report),
              _risks(report), _load(report.now.load, report.projected.load), _verdict(report)]
    return "\n\n".join(blocks) + "\n"


def _assumptions(verdicts: Sequence[Verdict]) -> str:
    rows = [("ASSUMPTION", "", "NOW", "PROJECTED", "VERDICT")]
    rows += [(v.assumption.id, v.assumption.sentence, fmt(v.now.observed),
              fmt(v.projected.observed), v.status.upper().replace("_", " ")) for v in verdicts]
    return table(rows)


def _p99s(report: Report) -> str:
    rows = [("SEGMENT", "P99 OF", "NOW", "PROJECTED", "")]
    for key, (_, proj) in report.projected.segments.items():
        now = report.now.segments.get(key, (None, {}))[1]
        for m in KEY_METRICS:
            rows.append((key, m, fmt(now.get(m)), fmt(proj[m]), ratio(now.get(m), proj[m])))
    return table(rows)


def _risks(report: Report) -> str:
    rows = [("SEGMENT", "SESSIONS", "TRUNCATING", "MISROUTED: COMPLEXITY", "MISROUTED: CONTEXT")]
    now_all = [("all", report.now.overall)]
    for key, risk in [*((k, v[0]) for k, v in report.now.segments.items()), *now_all]:
        rows.append(_risk_row(f"{key} now", risk))
    proj_all = [("all", report.projected.overall)]
    for key, risk in [*((k, v[0]) for k, v in report.projected.segments.items()), *proj_all]:
        rows.append(_risk_row(f"{key} projected", risk))
    return table(rows)


def _risk_row(label: str, r: Risk) -> tuple[str, ...]:
    return (label, str(r.sessions), pct(r.truncation_rate), pct(r.misroute_complexity),
            pct(r.misroute_context))


def _load(now: Load, proj: Load) -> str:
    rows = [("LOAD", "NOW", "PROJECTED", "")]
    for name, label in (("sessions_per_s", "sessions/s"), ("spans_per_s", "spans/s"),
                        ("tokens_per_s", "tokens/s")):
        a, b = getattr(now, name), getattr(proj, name)
        rows.append((label, fmt(a), fmt(b), ratio(a, b)))
    return table(rows)


def _verdict(report: Report) -> str:
    broken = [v.assumption.id for v in report.verdicts if v.status == "breaks"]
    no_data = sum(v.status == "no_data" for v in report.verdicts)
    tail = f" ({no_data} without data)" if no_data else ""
    if broken:
        return (f"verdict: BREAKS - {len(broken)} of {len(report.verdicts)} assumptions break "
                f"under this envelope: {', '.join(broken)}{tail}")
    return f"verdict: HOLDS - every assumption with data holds under this envelope{tail}"


def to_json(report: Report, intake: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The report as plain JSON types (schema in docs/ENVELOPE.md)."""
    e = report.envelope
    return {
        "verdict": "breaks" if report.breaks else "holds",
        "envelope": {"usage": e.usage, "complexity": e.complexity, "seed": e.seed,
                     "add_capability": [asdict(c) for c in e.add], "policy": report.policy_id},
        "input": {"spans": report.recorded_spans, "sessions": report.recorded_sessions,
                  "duration_s": report.duration_s, "censored_sessions": report.censored_sessions,
                  **(intake or {})},
        "assumptions": [_verdict_json(v) for v in report.verdicts],
        "segments": _segments_json(report.now, report.projected),
        "risk": {"now": asdict(report.now.overall), "projected": asdict(report.projected.overall)},
        "load": {"now": asdict(report.now.load), "projected": asdict(report.projected.load)},
    }


def _verdict_json(v: Verdict) -> dict[str, Any]:
    a = v.assumption
    return {"id": a.id, "assumption": a.sentence, "segment": a.segment.key, "metric": a.metric,
            "stat": a.stat, "op": a.op, "bound": a.bound, "why": a.why,
            "now": asdict(v.now), "projected": asdict(v.projected), "verdict": v.status}


def _segments_json(now: Side, projected: Side) -> list[dict[str, Any]]:
    def side(s: Side, key: str) -> dict[str, Any] | None:
        if key not in s.segments:
            return None
        r, p99 = s.segments[key]
        return {**asdict(r), "p99": p99}

    keys = sorted(set(now.segments) | set(projected.segments))
    return [{"segment": k, "now": side(now, k), "projected": side(projected, k)} for k in keys]
