"""Every Grafana panel's query returns data from a real Prometheus scraping a loadshape target.

``dashboard_queries()`` and ``assert_panels_have_data()`` take any scrape target: today a
prometheus_client server in this process fed by the metrics bundle with a synthetic
workload; point ``TARGET`` at a real worker's /metrics (job ``loadshape-worker``) to run the
same check against a simulated run.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from servers import DEPLOY, ROOT, Server, free_port, prometheus, synthetic_load, wait_until

from app.metrics import LoadshapeMetrics, serve

DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
RULES = DEPLOY / "prometheus" / "rules" / "loadshape.rules.yml"
# Grafana template variables -> values Prometheus accepts (all segments, short windows).
SUBSTITUTIONS = {
    "$__rate_interval": "10s", "$__interval": "1s", "$__range": "1m", "$segment": ".*",
}


def substitute(expr: str) -> str:
    """Replace Grafana variables (longest name first, so $__range is not cut short).

    >>> substitute('rate(x{segment=~"$segment"}[$__rate_interval])')
    'rate(x{segment=~".*"}[10s])'
    """
    for var in sorted(SUBSTITUTIONS, key=len, reverse=True):
        expr = expr.replace(var, SUBSTITUTIONS[var])
    return expr


def dashboard_queries() -> Iterator[tuple[str, str, str]]:
    """(dashboard file, panel title, PromQL ready to run) for every panel target."""
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        for panel in dash["panels"]:
            for sub in panel.get("panels", []) if panel["type"] == "row" else [panel]:
                for t in sub.get("targets", []):
                    yield path.name, sub["title"], substitute(t["expr"])


def variable_metrics() -> set[str]:
    out = set()
    for path in DASHBOARDS:
        for var in json.loads(path.read_text())["templating"]["list"]:
            out.update(re.findall(r"label_values\((\w+)", var["definition"]))
    return out


def prometheus_config(target: str, job: str = "loadshape-worker") -> dict:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}],
    }


def query(prom: Server, expr: str) -> list:
    doc = prom.get_json("/api/v1/query", query=expr)
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def wait_for_scrapes(prom: Server, job: str = "loadshape-worker", n: int = 4) -> None:
    wait_until(lambda: query(prom, f'count_over_time(up{{job="{job}"}}[1m]) >= {n}'
                                   f' and up{{job="{job}"}} == 1'),
               timeout=30, what=f"{n} successful scrapes of {job}")


def assert_panels_have_data(prom: Server) -> None:
    """Every panel query and every template variable returns something."""
    empty = [f"{dash} / {title}: {expr}" for dash, title, expr in dashboard_queries()
             if not query(prom, expr)]
    for metric in variable_metrics():
        values = prom.get_json("/api/v1/label/segment/values", **{"match[]": metric})["data"]
        if not values:
            empty.append(f"variable segment: label_values({metric}, segment)")
    assert not empty, "queries without data:\n  " + "\n  ".join(empty)


@pytest.fixture
def synthetic_target() -> Iterator[str]:
    """host:port of a /metrics endpoint fed continuously by a synthetic workload."""
    registry = CollectorRegistry()
    metrics = LoadshapeMetrics.create(registry, max_segments=10)
    stop = threading.Event()

    def feed() -> None:
        while not stop.is_set():
            synthetic_load(metrics, sessions=5)
            stop.wait(0.25)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    port = free_port()
    server, _ = serve(registry, port, addr="127.0.0.1")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        feeder.join(5)


def test_every_panel_query_returns_data(synthetic_target: str, tmp_path: Path):
    assert DASHBOARDS and len(list(dashboard_queries())) > 30
    with prometheus(prometheus_config(synthetic_target), tmp_path / "prom") as prom:
        wait_for_scrapes(prom)
        # rules evaluate every second: ALERTS holds the pending drift / assumption alerts
        wait_until(lambda: query(prom, 'ALERTS{alertname=~"Loadshape.*"}'), timeout=15,
                   what="rule evaluation")
        time.sleep(1.0)
        assert_panels_have_data(prom)


def test_substitution_leaves_no_grafana_variable():
    for _dash, title, expr in dashboard_queries():
        assert "$" not in expr, f"{title}: unsubstituted variable in {expr}"
        urllib.parse.quote(expr)
