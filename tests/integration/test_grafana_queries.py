"""Every Grafana panel's query returns data from a real Prometheus scraping loadshape targets.

1. Synthetic: a prometheus_client server in this process fed by the metrics bundle with a
   synthetic workload (every metric family, fast).
2. Real: a real ``loadshape worker`` (its own ``--metrics-port``) processes a live simulated
   run (dev-to-support behind the gateway client: drift, broken assumptions and a signed
   recalibration happen) while a real Prometheus scrapes it every second. Metrics the worker
   does not produce come from the processes that do, scraped by the same Prometheus:
   emitter drops from the agents' process (the live loop's real ``SpanEmitter`` counters) and
   alert forwarding from a real ``loadshape alerts forward`` posting to a real Alertmanager.
   Every other dashboard metric must come from the worker itself (three malformed spans in
   the run give the dead-letter panel the worker's own counts). Panels are checked over the
   run's time range, as a dashboard shows them: each needs at least one finite point.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from servers import (
    DEPLOY,
    ROOT,
    Server,
    alertmanager,
    free_port,
    prometheus,
    synthetic_load,
    wait_until,
)

from app import live_loop
from app.emitter import EmitterStats, SpanEmitter
from app.emitter.metrics import DROP_REASONS, register_emitter_metrics
from app.metrics import LoadshapeMetrics, serve
from app.settings import PROJECT_ROOT
from app.testing import WorkerProcess, isolated_settings, produce, settings_env

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


def prometheus_config(target: str, job: str = "loadshape-worker",
                      extra_jobs: dict[str, tuple[str, str]] | None = None) -> dict:
    """Scrape ``target`` as ``job`` every second with the repository's rules.

    ``extra_jobs``: job name -> (target, regex of the metric names kept from it). A process
    other than the worker serves the whole bundle (its unlabelled metrics read 0), so only
    the metrics it really produces are kept; nothing else can stand in for the worker's.
    """
    scrape = [{"job_name": job, "static_configs": [{"targets": [target]}]}]
    for name, (extra_target, keep) in (extra_jobs or {}).items():
        scrape.append({
            "job_name": name, "static_configs": [{"targets": [extra_target]}],
            "metric_relabel_configs": [
                {"source_labels": ["__name__"], "regex": keep, "action": "keep"}],
        })
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": scrape,
    }


def query(prom: Server, expr: str) -> list:
    doc = prom.get_json("/api/v1/query", query=expr)
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def query_range(prom: Server, expr: str, start: float, end: float) -> list:
    doc = prom.get_json("/api/v1/query_range", query=expr, start=f"{start:.3f}",
                        end=f"{end:.3f}", step="1s")
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def has_finite_point(result: list) -> bool:
    """A range result Grafana would draw: at least one point that is not NaN or +-Inf."""
    return any(math.isfinite(float(v)) for series in result for _, v in series["values"])


def wait_for_scrapes(prom: Server, job: str = "loadshape-worker", n: int = 4) -> None:
    wait_until(lambda: query(prom, f'count_over_time(up{{job="{job}"}}[1m]) >= {n}'
                                   f' and up{{job="{job}"}} == 1'),
               timeout=30, what=f"{n} successful scrapes of {job}")


def assert_panels_have_data(prom: Server, window: tuple[float, float] | None = None) -> None:
    """Every panel query and every template variable returns something.

    Without ``window``: an instant query now returns at least one series. With
    ``window=(start, end)`` (unix s): over that range, as a dashboard showing it would run
    the query, at least one finite point (a histogram quantile over an idle window is NaN,
    which Grafana does not draw).
    """
    if window is None:
        empty = [f"{dash} / {title}: {expr}" for dash, title, expr in dashboard_queries()
                 if not query(prom, expr)]
    else:
        empty = [f"{dash} / {title}: {expr}" for dash, title, expr in dashboard_queries()
                 if not has_finite_point(query_range(prom, expr, *window))]
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
    emitted = [EmitterStats()]  # the agents' emitter, in the same endpoint for brevity
    register_emitter_metrics(registry, lambda: emitted[-1:])
    stop = threading.Event()

    def feed() -> None:
        while not stop.is_set():
            synthetic_load(metrics, sessions=5)
            e = emitted[-1]
            emitted.append(EmitterStats(queued=e.queued + 10, sent=e.sent + 9,
                                        dropped_buffer_full=e.dropped_buffer_full + 1))
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


# --- a real worker during a live simulated run -------------------------------------------

WORKER_JOB, AGENTS_JOB, FORWARDER_JOB = "loadshape-worker", "loadshape-agents", "loadshape-alerts-forwarder"
# Dashboard metrics a worker does not produce, with the process that does (scraped here too).
NOT_FROM_WORKER = {
    "loadshape_emitter_dropped_spans_total":
        "the span emitter runs inside the agents' process, not the worker",
    "loadshape_alerts_forwarded_total":
        "counted by `loadshape alerts forward`, which posts the alerts topic to Alertmanager",
}
KEY = "grafana-test-key"
MALFORMED_SPANS = [b'{"trace_id": "t", "span_id": "s"', b"\xff\xfe not utf-8",
                   b'{"trace_id":"t","span_id":"s","session_id":"x","agent":"a","operation":"chat",'
                   b'"input_tokens":-4,"start_time_unix_nano":1,"end_time_unix_nano":2}']


def panel_metrics() -> set[str]:
    """Every loadshape series name a panel query reads (histograms as _bucket/_count/_sum)."""
    return {m for _d, _t, expr in dashboard_queries() for m in re.findall(r"\bloadshape_\w+", expr)}


@contextlib.contextmanager
def served(registry: CollectorRegistry) -> Iterator[str]:
    port = free_port()
    server, _ = serve(registry, port, addr="127.0.0.1")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def alerts_forwarder(settings, am_url: str, log_path: Path) -> Iterator[str]:
    """A real `loadshape alerts forward` subprocess; yields host:port of its /metrics."""
    port = free_port()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "alerts", "forward", "--alertmanager-url", am_url,
             "--from-beginning", "--metrics-port", str(port), "--loglevel", "info"],
            env={**os.environ, **settings_env(settings)}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        try:
            yield f"127.0.0.1:{port}"
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_every_panel_query_returns_data_from_a_real_worker(kafka_settings, tmp_path: Path,
                                                            monkeypatch):
    settings = isolated_settings(
        kafka_settings, "loadshape-grafana", state_dir=tmp_path / "state",
        policy_file=PROJECT_ROOT / "examples" / "policy.yaml",
        assumptions_file=PROJECT_ROOT / "examples" / "assumptions.yaml",
        recalibration_key=SecretStr(KEY), baseline_sessions=500)

    # the agents' process: the live loop's real SpanEmitter, its drops in a bundle of its own
    emitters: list[SpanEmitter] = []

    class RecordedEmitter(SpanEmitter):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            emitters.append(self)

    monkeypatch.setattr(live_loop, "SpanEmitter", RecordedEmitter)
    agents_registry = CollectorRegistry()
    register_emitter_metrics(agents_registry, lambda: [e.stats for e in emitters])

    worker_port = free_port()
    worker = WorkerProcess(settings, tmp_path / "worker.log", metrics_port=worker_port).start()
    am_config = {"route": {"receiver": "null", "group_wait": "1s"}, "receivers": [{"name": "null"}]}
    try:
        with contextlib.ExitStack() as stack:
            am = stack.enter_context(alertmanager(am_config, tmp_path / "am"))
            forwarder = stack.enter_context(alerts_forwarder(settings, am.url, tmp_path / "fwd.log"))
            agents = stack.enter_context(served(agents_registry))
            config = prometheus_config(f"127.0.0.1:{worker_port}", WORKER_JOB, {
                AGENTS_JOB: (agents, "loadshape_emitter_.*"),
                FORWARDER_JOB: (forwarder, "loadshape_alerts_forwarded_.*"),
            })
            prom = stack.enter_context(prometheus(config, tmp_path / "prom"))
            worker.wait_ready()
            for job in (WORKER_JOB, AGENTS_JOB, FORWARDER_JOB):
                wait_for_scrapes(prom, job, n=2)
            start = time.time()

            # a live run: malformed records are dead-lettered, the rest drifts and recalibrates
            produce(settings, settings.topic_spans, [(b"bad", raw) for raw in MALFORMED_SPANS])
            # 4000 sessions at 150/s (~27 s, ~45k spans): the support segment changes at session
            # 2000, drifts, breaks the 16K-cap assumption and is recalibrated while the run goes
            # on (with half as many sessions stage 2 has often released too few changed ones
            # by the end for the recalibrator to act)
            report = asyncio.run(live_loop.run_live_loop(
                settings, say=lambda line: None, sessions=4000, seed=7, rate=150.0))

            # a worker on a busy machine lags the agents: wait until it has caught up (alerts,
            # recalibration) and the forwarder has posted, then let two more scrapes land
            def missing() -> list[str]:
                own = [m for m in sorted(panel_metrics()) if m not in NOT_FROM_WORKER
                       and not query(prom, f'count_over_time({m}{{job="{WORKER_JOB}"}}[5m])')]
                other = [f"{m} ({why})" for m, why in NOT_FROM_WORKER.items()
                         if not query(prom, f"count_over_time({m}[5m])")]
                return own + other

            with contextlib.suppress(TimeoutError):
                wait_until(lambda: not missing(), timeout=30, interval=1.0, what="every metric")
            time.sleep(2.0)  # two more scrapes into the rate windows
            absent = missing()
            assert not absent, (
                f"dashboard metrics without samples (worker metrics from job {WORKER_JOB!r}):\n  "
                + "\n  ".join(absent) + f"\nlive run: {report.to_dict()}")
            assert_panels_have_data(prom, window=(start, time.time()))

            # the non-worker series are real: drops equal the emitter's own count, alerts ok
            dropped = sum(report.emitter[f] for f in DROP_REASONS.values())
            exported = query(prom, f'sum(loadshape_emitter_dropped_spans_total{{job="{AGENTS_JOB}"}})')
            assert float(exported[0]["value"][1]) == dropped
            assert query(prom, f'loadshape_alerts_forwarded_total{{job="{FORWARDER_JOB}",outcome="ok"}} > 0')
    finally:
        worker.stop(timeout=5)  # not a shutdown test: a worker that hangs on SIGTERM is killed


def test_substitution_leaves_no_grafana_variable():
    for _dash, title, expr in dashboard_queries():
        assert "$" not in expr, f"{title}: unsubstituted variable in {expr}"
        urllib.parse.quote(expr)
