"""The pager path against a real Alertmanager (Debian package) and, separately, a real Kafka.

1. Our forwarder core posts a drift page to a real Alertmanager running the repository's
   routing tree (receivers pointed at local recorders, timings shortened): the webhook gets
   the page exactly once although it is re-sent, PagerDuty gets it too, a warning reaches
   only the webhook, and the resolution reaches both.
2. ``forward()`` consumes the alerts topic of a live broker, posts to an API recorder and
   commits, so a second run posts nothing.
"""

from __future__ import annotations

import asyncio
import copy
import time

import aiohttp
import yaml
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry
from servers import DEPLOY, alertmanager, binary, recorder, wait_until

from app.alerting.forwarder import ForwardOptions, forward
from app.alerting.payload import to_postable
from app.alerting.sender import AlertmanagerClient
from app.broker.client_config import aiokafka_kwargs
from app.metrics import LoadshapeMetrics
from schemas import Alert, DistributionSummary, Segment

AM_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
S = 1_000_000_000


def test_repository_config_is_valid():
    import subprocess

    out = subprocess.run([binary("amtool"), "check-config", str(AM_CONFIG)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr


def test_config(webhook_url: str, pagerduty_url: str) -> dict:
    """The repository's config with receivers on loopback and second-scale timings."""
    cfg = copy.deepcopy(yaml.safe_load(AM_CONFIG.read_text()))
    cfg["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    for rcv in cfg["receivers"]:
        for hook in rcv.get("webhook_configs", []):
            hook["url"] = f"{webhook_url}/alertmanager"
        for pd in rcv.get("pagerduty_configs", []):
            pd.pop("routing_key_file", None)
            pd.update(routing_key="test-routing-key", url=f"{pagerduty_url}/v2/enqueue")
    return cfg


test_config.__test__ = False  # a helper, not a test


def alert(kind="drift", severity="page", agent="support", **kw) -> Alert:
    base = dict(
        alert_id=f"{kind}-{agent}-{severity}", kind=kind, metric="fanout",
        segment=Segment(agent=agent), detector="adwin", severity=severity,
        detected_at=time.time_ns() - 60 * S,
        baseline=DistributionSummary(n=800, mean=3.0, p50=3, p95=5, p99=6),
        current=DistributionSummary(n=200, mean=11.0, p50=11, p95=15, p99=19),
        message=f"fan-out of {agent} drifted",
    )
    return Alert(**{**base, **kw})


async def post(url: str, alerts: list[Alert], opened: dict | None = None) -> list[dict]:
    payloads = [to_postable(a, now_unix_nano=time.time_ns(), opened=opened) for a in alerts]
    async with aiohttp.ClientSession() as session:
        await AlertmanagerClient(session, url).post(payloads)
    return payloads


def notified(rec, status: str, alertname: str, segment: str) -> list[dict]:
    return [
        body for body in rec.bodies("/alertmanager")
        if body["status"] == status
        and any(a["labels"].get("alertname") == alertname
                and a["labels"].get("segment") == segment for a in body["alerts"])
    ]


def pd_events(rec, action: str) -> list[dict]:
    return [b for b in rec.bodies("/v2/enqueue") if b.get("event_action") == action]


def test_drift_page_once_then_resolution(tmp_path):
    with recorder() as webhook, recorder(status=202) as pd:
        with alertmanager(test_config(webhook.url, pd.url), tmp_path / "am") as am:
            page = alert()
            opened = asyncio.run(post(am.url, [page, alert(severity="warning", agent="dev")]))[0]
            wait_until(lambda: notified(webhook, "firing", "LoadShapeDrift", "support"), 15,
                       what="the page at the webhook")
            wait_until(lambda: pd_events(pd, "trigger"), 15, what="the page at PagerDuty")
            wait_until(lambda: notified(webhook, "firing", "LoadShapeDrift", "dev"), 15,
                       what="the warning at the webhook")

            for _ in range(3):  # re-sent: Alertmanager deduplicates
                asyncio.run(post(am.url, [page]))
                time.sleep(1.0)
            assert len(notified(webhook, "firing", "LoadShapeDrift", "support")) == 1
            assert len(pd_events(pd, "trigger")) == 1, "warnings must not reach PagerDuty"
            firing = notified(webhook, "firing", "LoadShapeDrift", "support")[0]["alerts"][0]
            assert firing["labels"] == {**page_labels(), "severity": "page"}
            assert firing["annotations"]["runbook"] == "docs/RUNBOOK.md#load-shape-drift"
            assert "p95 5 -> 15" in firing["annotations"]["evidence"]

            done = alert(kind="resolved", alert_id="r1", resolves=page.alert_id,
                         resolved_kind="drift", severity="info", detected_at=time.time_ns())
            asyncio.run(post(am.url, [done], opened=opened))
            wait_until(lambda: notified(webhook, "resolved", "LoadShapeDrift", "support"), 15,
                       what="the resolution at the webhook")
            wait_until(lambda: pd_events(pd, "resolve"), 15, what="the resolution at PagerDuty")
            assert len(notified(webhook, "firing", "LoadShapeDrift", "support")) == 1
            trigger = pd_events(pd, "trigger")[0]
            assert trigger["routing_key"] == "test-routing-key"
            assert pd_events(pd, "resolve")[0]["dedup_key"] == trigger["dedup_key"]


def page_labels() -> dict[str, str]:
    return {"alertname": "LoadShapeDrift", "segment": "support", "metric": "fanout",
            "kind": "drift"}


async def _produce(settings, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(**aiokafka_kwargs(settings))
    await producer.start()
    try:
        for v in values:
            await producer.send_and_wait(settings.topic_alerts, v, key=b"support")
    finally:
        await producer.stop()


def test_forward_consumes_kafka_posts_and_commits(fresh_topics):
    settings = fresh_topics
    page = alert()
    done = alert(kind="resolved", alert_id="r1", resolves=page.alert_id, resolved_kind="drift",
                 severity="info", detected_at=time.time_ns())
    asyncio.run(_produce(settings, [
        page.model_dump_json().encode(), b"not an alert", done.model_dump_json().encode(),
    ]))
    registry = CollectorRegistry()
    metrics = LoadshapeMetrics.create(registry, max_segments=5)
    with recorder() as api:
        opts = ForwardOptions(api.url, from_beginning=True, once=True, max_attempts=3)
        consumed = asyncio.run(asyncio.wait_for(forward(settings, opts, metrics=metrics), 60))
        assert consumed == 3
        posted = [a for body in api.bodies("/api/v2/alerts") for a in body]
        assert [a["labels"]["alertname"] for a in posted] == ["LoadShapeDrift"] * 2
        assert posted[0]["labels"] == posted[1]["labels"]
        assert posted[1]["endsAt"] < posted[0]["endsAt"]
        requests = len(api.bodies("/api/v2/alerts"))
        again = ForwardOptions(api.url, once=True, max_attempts=3)  # same group: committed
        assert asyncio.run(asyncio.wait_for(forward(settings, again, metrics=metrics), 60)) == 0
        assert len(api.bodies("/api/v2/alerts")) == requests
    get = registry.get_sample_value
    assert get("loadshape_alerts_forwarded_total", {"kind": "drift", "outcome": "ok"}) == 1
    assert get("loadshape_alerts_forwarded_total", {"kind": "invalid", "outcome": "skipped"}) == 1

