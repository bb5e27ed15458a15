"""Generate the Grafana dashboards in grafana/dashboards/ (committed JSON, schemaVersion 39).

    .venv/bin/python grafana/generate.py            # rewrite the JSON files
    .venv/bin/python grafana/generate.py --check    # exit 1 if they are out of date

Every query names only metrics of app/metrics.py (plus Prometheus' own ``up``/``ALERTS``);
tests/unit/test_grafana.py checks that, tests/integration/test_grafana_queries.py runs
every query against a real Prometheus.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"
DS = {"type": "prometheus", "uid": "prometheus"}
SEG = 'segment=~"$segment"'
RI = "$__rate_interval"
QUANTILES = (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"))


def target(expr: str, legend: str = "", ref: str = "A", fmt: str = "time_series") -> dict:
    instant = fmt == "table"
    return {"refId": ref, "datasource": DS, "expr": expr, "legendFormat": legend,
            "format": fmt, "range": not instant, "instant": instant}


def panel(title: str, targets: list[dict], *, kind: str = "timeseries", unit: str = "short",
          w: int = 12, h: int = 8, description: str = "", options: dict | None = None,
          field_defaults: dict | None = None) -> dict:
    return {
        "type": kind, "title": title, "description": description, "datasource": DS,
        "targets": targets, "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
        "fieldConfig": {"defaults": {"unit": unit, **(field_defaults or {})}, "overrides": []},
        "options": options or {"legend": {"displayMode": "list", "placement": "bottom"},
                               "tooltip": {"mode": "multi"}},
    }


def quantiles_panel(title: str, hist: str, unit: str) -> dict:
    """P50/P95/P99 over time per segment, from the histogram buckets."""
    return panel(title, [
        target(f"histogram_quantile({q}, sum by (segment, le) "
               f"(rate({hist}_bucket{{{SEG}}}[{RI}])))", f"{{{{segment}}}} {name}", chr(65 + i))
        for i, (q, name) in enumerate(QUANTILES)
    ], unit=unit, description=f"From the {hist} histogram (bucket-interpolated).")


def sketch_panel(title: str, metric: str, unit: str) -> dict:
    return panel(title, [target(
        f'max by (segment, stat) (loadshape_metric_quantile{{{SEG},metric="{metric}"}})',
        "{{segment}} {{stat}}")], unit=unit,
        description="Quantiles from the stream's relative-error sketches (what drift compares).")


def heatmap_panel(title: str, hist: str, unit: str) -> dict:
    return panel(title, [target(
        f"sum by (le) (rate({hist}_bucket{{{SEG}}}[{RI}]))", "{{le}}", fmt="heatmap")],
        kind="heatmap", unit=unit, options={
            "calculate": False, "yAxis": {"unit": unit}, "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges"}, "tooltip": {"show": True}})


def row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": [],
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0}}


def segment_variable() -> dict:
    query = "label_values(loadshape_session_fanout_count, segment)"
    return {
        "name": "segment", "label": "segment", "type": "query", "datasource": DS,
        "query": {"query": query, "refId": "segment"}, "definition": query,
        "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2, "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


ALERT_ANNOTATION = {
    "name": "Alerts", "datasource": DS, "enable": True, "iconColor": "red",
    "expr": 'ALERTS{alertstate="firing", alertname=~"Loadshape.*"}',
    "step": "60s", "titleFormat": "{{alertname}}",
    "textFormat": "{{segment}} {{metric}} {{assumption}} ({{severity}})",
    "useValueForTime": False,
}


def layout(panels: list[dict]) -> list[dict]:
    """Assign ids and grid positions left to right, top to bottom."""
    x = y = line_h = 0
    for i, p in enumerate(panels, start=1):
        p["id"] = i
        pos = p["gridPos"]
        if x + pos["w"] > 24:
            x, y, line_h = 0, y + line_h, 0
        pos["x"], pos["y"] = x, y
        x, line_h = x + pos["w"], max(line_h, pos["h"])
    return panels


def dashboard(uid: str, title: str, panels: list[dict], *, variables: bool = True) -> dict:
    return {
        "uid": uid, "title": title, "tags": ["loadshape"], "timezone": "browser",
        "schemaVersion": 39, "version": 1, "editable": True, "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"}, "graphTooltip": 1,
        "templating": {"list": [segment_variable()] if variables else []},
        "annotations": {"list": [ALERT_ANNOTATION]},
        "links": [{"type": "dashboards", "tags": ["loadshape"], "asDropdown": True,
                   "title": "loadshape", "includeVars": True, "keepTime": True}],
        "panels": layout(panels),
    }


def overview() -> dict:
    h = "loadshape_session_"
    return dashboard("loadshape-overview", "loadshape / Load-shape overview", [
        row("Context use"),
        quantiles_panel("Context utilization P50/P95/P99", h + "context_utilization_ratio",
                        "percentunit"),
        heatmap_panel("Context utilization distribution", h + "context_utilization_ratio",
                      "percentunit"),
        quantiles_panel("Context tokens P50/P95/P99", h + "context_tokens", "short"),
        sketch_panel("Context tokens (sketch quantiles)", "context_tokens", "short"),
        row("Tool-call fan-out"),
        quantiles_panel("Fan-out (tool calls per session) P50/P95/P99", h + "fanout", "short"),
        heatmap_panel("Fan-out distribution", h + "fanout", "short"),
        quantiles_panel("Widest parallel fan-out P50/P95/P99", h + "max_parallel_fanout", "short"),
        sketch_panel("Fan-out (sketch quantiles)", "fanout", "short"),
        row("Retries and reflection"),
        quantiles_panel("Retry rate P50/P95/P99", h + "retry_rate_ratio", "percentunit"),
        quantiles_panel("Reflections per session P50/P95/P99", h + "reflections", "short"),
        row("Complexity and depth"),
        quantiles_panel("Task complexity P50/P95/P99", h + "complexity_ratio", "percentunit"),
        heatmap_panel("Task complexity distribution", h + "complexity_ratio", "percentunit"),
        quantiles_panel("LLM calls per session P50/P95/P99", h + "llm_calls", "short"),
        quantiles_panel("Span tree depth P50/P95/P99", h + "depth", "short"),
        row("Volume, truncation, cache"),
        panel("Sessions per second", [target(
            f"sum by (segment) (rate({h}llm_calls_count{{{SEG}}}[{RI}]))", "{{segment}}")],
            unit="ops"),
        panel("Truncations per second", [target(
            f"sum by (segment) (rate({h}truncations_sum{{{SEG}}}[{RI}]))", "{{segment}}")],
            unit="ops"),
        quantiles_panel("Age of cache hits P50/P95/P99", h + "cache_age_seconds", "s"),
        quantiles_panel("Distinct tools per session P50/P95/P99", h + "distinct_tools", "short"),
    ])


def drift() -> dict:
    red_green = [{"type": "value", "options": {
        "0": {"text": "holds", "color": "green"}, "1": {"text": "broken", "color": "red"}}}]
    return dashboard("loadshape-drift", "loadshape / Drift & assumptions", [
        panel("Open drift episodes", [target(
            f"sum(max by (segment, metric) (loadshape_drift_episodes_open{{{SEG}}}))")],
            kind="stat", w=6, h=5, options={"colorMode": "background", "graphMode": "none"},
            field_defaults={"thresholds": {"mode": "absolute", "steps": [
                {"color": "green", "value": None}, {"color": "red", "value": 1}]}}),
        panel("Broken assumptions", [target(
            f"sum(max by (assumption, segment) (loadshape_assumption_broken{{{SEG}}}))")],
            kind="stat", w=6, h=5, options={"colorMode": "background", "graphMode": "none"},
            field_defaults={"thresholds": {"mode": "absolute", "steps": [
                {"color": "green", "value": None}, {"color": "red", "value": 1}]}}),
        panel("Alerts published per second by kind", [target(
            f"sum by (kind) (rate(loadshape_alerts_published_total[{RI}]))", "{{kind}}")],
            w=12, h=5, unit="ops"),
        panel("Drift episodes (segment / metric)", [target(
            f"max by (segment, metric) (loadshape_drift_episodes_open{{{SEG}}})",
            "{{segment}} {{metric}}")], kind="state-timeline", w=24,
            field_defaults={"mappings": [{"type": "value", "options": {
                "0": {"text": "stable", "color": "green"}, "1": {"text": "drift", "color": "red"}}}],
                "color": {"mode": "thresholds"}, "thresholds": {"mode": "absolute", "steps": [
                    {"color": "green", "value": None}, {"color": "red", "value": 1}]}}),
        panel("Workload assumptions", [target(
            f"max by (assumption, segment) (loadshape_assumption_broken{{{SEG}}})",
            "{{assumption}} ({{segment}})")], kind="state-timeline", w=24,
            field_defaults={"mappings": red_green, "color": {"mode": "thresholds"},
                            "thresholds": {"mode": "absolute", "steps": [
                                {"color": "green", "value": None}, {"color": "red", "value": 1}]}}),
        panel("Prometheus alerts (pending / firing)", [target(
            'ALERTS{alertname=~"Loadshape.*"}', fmt="table")],
            kind="table", w=12, options={"showHeader": True}),
        panel("P50 / P95 / P99 of every metric now (sketch)", [target(
            f"max by (segment, metric, stat) (loadshape_metric_quantile{{{SEG}}})", fmt="table")],
            kind="table", w=12, options={"showHeader": True}),
    ])


def routing() -> dict:
    h = "loadshape_session_"
    return dashboard("loadshape-routing", "loadshape / Routing", [
        panel("Routing policy version", [target(
            "max by (policy) (loadshape_routing_policy_version)", "{{policy}}")],
            kind="stat", w=8, h=5, options={"graphMode": "area", "colorMode": "value"}),
        panel("Recalibrations (last 24h) by mode", [target(
            "sum by (policy, mode) (increase(loadshape_recalibrations_total[24h]))",
            "{{policy}} {{mode}}")], kind="stat", w=8, h=5),
        panel("Misrouted sessions (last 24h)", [target(
            f"sum(increase(loadshape_misroutes_total{{{SEG}}}[24h]))")], kind="stat", w=8, h=5),
        panel("Misroutes per second by segment", [target(
            f"sum by (segment) (rate(loadshape_misroutes_total{{{SEG}}}[{RI}]))", "{{segment}}")],
            unit="ops"),
        panel("Misrouted share of sessions", [target(
            f"sum by (segment) (rate(loadshape_misroutes_total{{{SEG}}}[{RI}])) / "
            f"sum by (segment) (rate({h}complexity_ratio_count{{{SEG}}}[{RI}]))", "{{segment}}")],
            unit="percentunit",
            description="Complex sessions routed to a model below their complexity / sessions."),
        panel("Recalibrations over time", [target(
            f"sum by (policy, mode) (rate(loadshape_recalibrations_total[{RI}]))",
            "{{policy}} {{mode}}")], unit="ops"),
        quantiles_panel("Task complexity P50/P95/P99 (routing input)", h + "complexity_ratio",
                        "percentunit"),
    ])


def pipeline() -> dict:
    return dashboard("loadshape-pipeline", "loadshape / Pipeline health", [
        panel("Workers up", [target('sum(up{job="loadshape-worker"})')], kind="stat", w=6, h=5),
        panel("Sessions open", [target("sum(loadshape_sessions_open)")], kind="stat", w=6, h=5),
        panel("Seconds since last processed span (stall)", [target(
            "time() - max by (instance) (loadshape_last_processed_timestamp_seconds)",
            "{{instance}}")], kind="stat", w=6, h=5, unit="s"),
        panel("Event-time delay (wall - event time)", [target(
            "max by (instance) (loadshape_last_processed_timestamp_seconds"
            " - loadshape_last_event_timestamp_seconds)", "{{instance}}")],
            kind="stat", w=6, h=5, unit="s"),
        panel("Spans processed per second", [target(
            f"sum by (instance) (rate(loadshape_spans_processed_total[{RI}]))", "{{instance}}")],
            unit="ops"),
        panel("Dead letters per second by reason", [target(
            f"sum by (reason) (rate(loadshape_dead_letters_total[{RI}]))", "{{reason}}")],
            unit="ops"),
        panel("Consumer lag", [target(
            "sum by (topic, partition) (loadshape_consumer_lag_messages)",
            "{{topic}}/{{partition}}")], unit="short"),
        panel("Sessions closed per second", [target(
            f"sum by (closed_by) (rate(loadshape_sessions_closed_total[{RI}]))",
            "{{closed_by}}")], unit="ops"),
        panel("Late spans, OTLP spans skipped, emitter drops, sessions spilled, late or copies per second", [
            target(f"sum(rate(loadshape_late_spans_total[{RI}]))", "late spans", "A"),
            target(f"sum(rate(loadshape_otlp_spans_skipped_total[{RI}]))", "OTLP non-GenAI", "B"),
            target(f"sum by (reason) (rate(loadshape_emitter_dropped_spans_total[{RI}]))",
                   "emitter drop {{reason}}", "C"),
            target(f"sum by (segment) (rate(loadshape_sessions_spilled_total[{RI}]))",
                   "spilled {{segment}}", "D"),
            target(f"sum by (segment) (rate(loadshape_sessions_late_total[{RI}]))",
                   "late sessions {{segment}}", "E"),
            target(f"sum by (segment) (rate(loadshape_sessions_copies_dropped_total[{RI}]))",
                   "copies dropped {{segment}}", "F"),
        ], unit="ops"),
        panel("Alerts published / forwarded per second", [
            target(f"sum by (kind) (rate(loadshape_alerts_published_total[{RI}]))",
                   "published {{kind}}", "A"),
            target(f"sum by (kind, outcome) (rate(loadshape_alerts_forwarded_total[{RI}]))",
                   "forwarded {{kind}} {{outcome}}", "B"),
        ], unit="ops"),
    ], variables=False)


DASHBOARDS = {"overview.json": overview, "drift.json": drift, "routing.json": routing,
              "pipeline.json": pipeline}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: list[str]) -> int:
    stale = []
    for name, text in render().items():
        path = OUT / name
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            OUT.mkdir(exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"out of date (run grafana/generate.py): {', '.join(stale)}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
