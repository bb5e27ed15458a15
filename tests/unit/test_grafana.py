"""Grafana provisioning and dashboards: parse, datasource, and every query names real metrics."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry
from test_metrics import record_one_of_each

from app.emitter.buffer import EmitterStats
from app.emitter.metrics import register_emitter_metrics
from app.metrics import LoadshapeMetrics

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
PROMETHEUS_OWN = {"up", "ALERTS", "ALERTS_FOR_STATE"}
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and",
    "or", "unless", "inf", "nan",
}


def metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (template variables allowed)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                                 # strings
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\{[^}]*\}", " ", e)                                             # matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)                                            # ranges
    e = re.sub(r"\$\w+", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)\s*(\()?", e):
        if not m.group(2) and m.group(1).lower() not in PROMQL_WORDS:
            names.add(m.group(1))
    return names


def test_metric_name_parser():
    expr = ('histogram_quantile(0.95, sum by (segment, le) (rate(loadshape_session_fanout_bucket'
            '{segment=~"$segment"}[$__rate_interval]))) / on (instance) up{job="x"} > bool 1e-9')
    assert metric_names(expr) == {"loadshape_session_fanout_bucket", "up"}
    assert metric_names("time() - max(a_seconds) and on () b") == {"a_seconds", "b"}


@pytest.fixture(scope="module")
def bundle_names() -> set[str]:
    registry = CollectorRegistry()
    record_one_of_each(LoadshapeMetrics.create(registry, max_segments=5))
    register_emitter_metrics(registry, lambda: [EmitterStats()])  # the agents' process
    return {s.name for fam in registry.collect() for s in fam.samples}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        out.extend(p.get("panels", []) if p["type"] == "row" else [p])
    return out


def datasource_uid() -> str:
    doc = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (ds,) = [d for d in doc["datasources"] if d["type"] == "prometheus"]
    return ds["uid"]


def test_the_four_dashboards_exist_and_parse():
    uids = {load(p)["uid"] for p in DASHBOARDS}
    assert uids == {"loadshape-overview", "loadshape-drift", "loadshape-routing",
                    "loadshape-pipeline"}
    for path in DASHBOARDS:
        dash = load(path)
        assert 36 <= dash["schemaVersion"] <= 41, path.name
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_queries_known_metrics_on_the_provisioned_datasource(path, bundle_names):
    uid = datasource_uid()
    dash = load(path)
    for p in panels(dash):
        assert p["targets"], f"{path.name}: panel {p['title']!r} has no query"
        assert p["datasource"]["uid"] == uid, p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == uid, p["title"]
            names = metric_names(t["expr"])
            assert names, f"{p['title']!r}: no metric in {t['expr']!r}"
            unknown = names - bundle_names - PROMETHEUS_OWN
            assert not unknown, f"{path.name} / {p['title']!r}: unknown metrics {unknown}"
    for var in dash["templating"]["list"]:
        (metric,) = re.findall(r"label_values\((\w+)", var["definition"])
        assert metric in bundle_names
    for ann in dash["annotations"]["list"]:
        assert ann["datasource"]["uid"] == uid
        assert metric_names(ann["expr"]) <= PROMETHEUS_OWN


def test_overview_covers_context_fanout_retries_complexity_per_segment():
    dash = load(GRAFANA / "dashboards" / "overview.json")
    exprs = " ".join(t["expr"] for p in panels(dash) for t in p["targets"])
    for hist in ("context_utilization_ratio", "fanout", "retry_rate_ratio", "complexity_ratio"):
        assert f"loadshape_session_{hist}_bucket" in exprs
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}," in exprs
    assert any(p["type"] == "heatmap" for p in panels(dash))
    assert [v["name"] for v in dash["templating"]["list"]] == ["segment"]


def test_dashboard_provider_and_generated_files_are_current():
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/loadshape.yml").read_text())
    assert provider["providers"][0]["type"] == "file"
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    rendered = gen.render()
    assert sorted(rendered) == sorted(p.name for p in DASHBOARDS)
    for name, text in rendered.items():
        assert (GRAFANA / "dashboards" / name).read_text() == text, (
            f"{name} is stale: run .venv/bin/python grafana/generate.py")
