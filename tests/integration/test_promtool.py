"""Rules, rule unit tests, Prometheus config and a real /metrics scrape through promtool."""

from __future__ import annotations

import re
import urllib.request

import yaml
from prometheus_client import CollectorRegistry
from servers import DEPLOY, ROOT, free_port, promtool, synthetic_load

from app.metrics import LoadshapeMetrics, serve

RULES = DEPLOY / "prometheus" / "rules" / "loadshape.rules.yml"
RULE_TESTS = sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))
RUNBOOK = ROOT / "docs" / "RUNBOOK.md"


def _ok(result) -> str:
    text = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, text
    return text


def test_rules_pass_promtool_check():
    assert "SUCCESS" in _ok(promtool("check", "rules", str(RULES)))


def test_rule_unit_tests_pass():
    assert RULE_TESTS, "no promtool rule tests in deploy/prometheus/tests/"
    _ok(promtool("test", "rules", *map(str, RULE_TESTS)))


def test_compose_prometheus_config_is_valid():
    _ok(promtool("check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")))


def test_every_alert_is_unit_tested_and_links_a_runbook_section():
    alerts = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
              if "alert" in r]
    tested = {t["alertname"] for f in RULE_TESTS
              for case in yaml.safe_load(f.read_text())["tests"]
              for t in case.get("alert_rule_test", [])}
    anchors = {_slug(h) for h in re.findall(r"^#+\s+(.+)$", RUNBOOK.read_text(), re.M)}
    for rule in alerts:
        assert rule["alert"] in tested, f"{rule['alert']} has no promtool unit test"
        assert rule["labels"]["severity"] in ("warning", "page"), rule["alert"]
        path, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert (ROOT / path).exists(), rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in docs/RUNBOOK.md"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_a_real_scrape_passes_promtool_check_metrics():
    registry = CollectorRegistry()
    synthetic_load(LoadshapeMetrics.create(registry, max_segments=5), sessions=3)
    port = free_port()
    server, _thread = serve(registry, port, addr="127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            body = resp.read()
    finally:
        server.shutdown()
        server.server_close()
    assert b"loadshape_session_fanout_bucket" in body
    result = promtool("check", "metrics", stdin=body)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
