"""The thin shell: consume ``settings.topic_alerts`` and post each alert to Alertmanager.

At-least-once: offsets are committed only after Alertmanager accepted the batch (a re-post
is harmless, Alertmanager deduplicates by labels). Undecodable records are logged, counted
and skipped, never retried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import aiohttp
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from app.alerting.index import PostedIndex
from app.alerting.payload import (
    DEFAULT_FIRING_TTL_S,
    DEFAULT_RUNBOOK_BASE,
    PayloadError,
    Postable,
    to_postable,
)
from app.alerting.sender import AlertmanagerClient, post_with_retry
from app.broker.client_config import aiokafka_kwargs
from app.metrics import LoadshapeMetrics
from schemas import Alert
from schemas.validation import decode

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ForwardOptions:
    alertmanager_url: str
    from_beginning: bool = False
    once: bool = False
    max_messages: int | None = None
    firing_ttl_s: float = DEFAULT_FIRING_TTL_S
    runbook_base: str = DEFAULT_RUNBOOK_BASE
    group_id: str | None = None
    max_attempts: int | None = None
    batch_size: int = 100


def build_batch(
    raw_values: Iterable[bytes], index: PostedIndex, *, now_unix_nano: int,
    opts: ForwardOptions, metrics: LoadshapeMetrics,
) -> tuple[list[Postable], list[str]]:
    """Decode and map a batch of records; returns (payloads, kinds of the payloads)."""
    payloads, kinds = [], []
    for raw in raw_values:
        decoded = decode(Alert, raw or b"")
        if not decoded.ok:
            log.warning("skipping undecodable alert record: %s", decoded.reason)
            metrics.count_alert_forwarded("invalid", "skipped")
            continue
        alert = decoded.value
        try:
            payload = to_postable(
                alert, now_unix_nano=now_unix_nano, opened=index.get(alert.resolves),
                firing_ttl_s=opts.firing_ttl_s, runbook_base=opts.runbook_base,
            )
        except PayloadError as exc:
            log.warning("skipping alert: %s", exc)
            metrics.count_alert_forwarded(alert.kind, "skipped")
            continue
        index.remember(alert.alert_id, payload)
        payloads.append(payload)
        kinds.append(alert.kind)
    return payloads, kinds


class _SeekToBeginning(ConsumerRebalanceListener):
    """``--from-beginning``: rewind the partitions of the first assignment only."""

    def __init__(self) -> None:
        self.consumer: AIOKafkaConsumer | None = None
        self.done = False

    async def on_partitions_revoked(self, revoked) -> None:
        return None

    async def on_partitions_assigned(self, assigned) -> None:
        if not self.done and assigned and self.consumer is not None:
            await self.consumer.seek_to_beginning(*assigned)
            self.done = True


def make_consumer(settings, opts: ForwardOptions) -> AIOKafkaConsumer:
    listener = _SeekToBeginning() if opts.from_beginning else None
    consumer = AIOKafkaConsumer(
        group_id=opts.group_id or f"{settings.app_id}-alerts-forwarder",
        enable_auto_commit=False,
        auto_offset_reset="earliest" if opts.from_beginning else "latest",
        **aiokafka_kwargs(settings),
    )
    if listener is not None:
        listener.consumer = consumer
        consumer.subscribe([settings.topic_alerts], listener=listener)
    else:
        consumer.subscribe([settings.topic_alerts])
    return consumer


async def caught_up(consumer: AIOKafkaConsumer) -> bool:
    parts: set[TopicPartition] = consumer.assignment()
    if not parts:
        return False
    ends = await consumer.end_offsets(list(parts))
    for tp in parts:
        if await consumer.position(tp) < ends[tp]:
            return False
    return True


async def forward(
    settings, opts: ForwardOptions, *, metrics: LoadshapeMetrics,
    clock_ns: Callable[[], int] = time.time_ns, consumer: AIOKafkaConsumer | None = None,
) -> int:
    """Run the consume -> post -> commit loop; returns how many records were consumed."""
    consumer = consumer or make_consumer(settings, opts)
    index, consumed = PostedIndex(), 0
    await consumer.start()
    try:
        async with aiohttp.ClientSession() as session:
            client = AlertmanagerClient(session, opts.alertmanager_url)
            while opts.max_messages is None or consumed < opts.max_messages:
                consumed += await _one_batch(consumer, client, index, opts, metrics, clock_ns,
                                             consumed)
                if opts.once and await caught_up(consumer):
                    break
    finally:
        await consumer.stop()
    return consumed


async def _one_batch(consumer, client, index, opts, metrics, clock_ns, consumed) -> int:
    limit = opts.batch_size
    if opts.max_messages is not None:
        limit = max(1, min(limit, opts.max_messages - consumed))
    batches = await consumer.getmany(timeout_ms=500, max_records=limit)
    values = [r.value for recs in batches.values() for r in recs]
    if not values:
        return 0
    payloads, kinds = build_batch(values, index, now_unix_nano=clock_ns(), opts=opts,
                                  metrics=metrics)
    if payloads:
        def on_error(_exc) -> None:
            for kind in kinds:
                metrics.count_alert_forwarded(kind, "error")

        await post_with_retry(client.post, payloads, max_attempts=opts.max_attempts,
                              on_error=on_error)
        for kind in kinds:
            metrics.count_alert_forwarded(kind, "ok")
    await consumer.commit()
    return len(values)


def run(settings, opts: ForwardOptions, metrics: LoadshapeMetrics) -> int:
    """Blocking entry point for the CLI; SIGINT/SIGTERM stop it cleanly."""
    return asyncio.run(_run_until_signal(settings, opts, metrics))


async def _run_until_signal(settings, opts, metrics) -> int:
    import signal

    task = asyncio.ensure_future(forward(settings, opts, metrics=metrics))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        return 0
