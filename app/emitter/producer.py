"""The emitter's aiokafka producer: its configuration and a stop that always returns.

>>> from app.settings import Settings
>>> kw = producer_kwargs(Settings(kafka_port=19092), linger_ms=20, max_batch_bytes=65536,
...                      compression="gzip")
>>> kw["acks"], kw["linger_ms"], kw["max_batch_size"], kw["compression_type"]
('all', 20, 65536, 'gzip')
>>> producer_kwargs(Settings(), linger_ms=5, max_batch_bytes=1, compression="zip")
Traceback (most recent call last):
...
ValueError: compression must be one of gzip, lz4, none, snappy, zstd; got 'zip'
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import codec

from app.broker.client_config import aiokafka_kwargs
from app.settings import Settings

log = logging.getLogger(__name__)

_CODECS = {
    "gzip": codec.has_gzip,
    "lz4": codec.has_lz4,
    "snappy": codec.has_snappy,
    "zstd": codec.has_zstd,
    "none": lambda: True,
}
_MIN_REQUEST_BYTES = 1 << 20  # aiokafka's default max_request_size


def compression_type(compression: str | None) -> str | None:
    """aiokafka's ``compression_type`` for ``compression``; fails fast if its codec is missing."""
    name = (compression or "none").lower()
    if name not in _CODECS:
        raise ValueError(f"compression must be one of {', '.join(sorted(_CODECS))}; got {name!r}")
    if not _CODECS[name]():
        # aiokafka would only fail inside the background connect loop; say so now instead
        raise ValueError(f"compression {name!r} needs the 'cramjam' package installed")
    return None if name == "none" else name


def producer_kwargs(
    settings: Settings,
    *,
    linger_ms: int,
    max_batch_bytes: int,
    compression: str | None,
    request_timeout_ms: int = 30_000,
) -> dict[str, Any]:
    """AIOKafkaProducer kwargs: security from settings, batching/compression from the emitter."""
    return {
        **aiokafka_kwargs(settings),
        "client_id": "loadshape-emitter",
        "acks": "all",  # a span counted as sent is on every in-sync replica
        "linger_ms": linger_ms,
        "max_batch_size": max_batch_bytes,
        "max_request_size": max(_MIN_REQUEST_BYTES, max_batch_bytes),
        "compression_type": compression_type(compression),
        "request_timeout_ms": request_timeout_ms,  # also bounds a record's delivery retries
        "retry_backoff_ms": 200,
    }


async def stop_producer(producer: Any, timeout: float) -> None:
    """``producer.stop()`` within ``timeout`` s; past it, cut the sender and connections."""
    graceful = 0.7 * timeout  # the rest is for closing the hard way
    if await _within(producer.stop(), graceful):
        return
    rest = max(timeout - graceful, 0.02) / 2
    sender, client = getattr(producer, "_sender", None), getattr(producer, "client", None)
    if sender is not None:
        await _within(sender.close(), rest)
    if client is not None:
        await _within(client.close(), rest)


async def _within(coro: Any, timeout: float) -> bool:
    """Run ``coro`` for at most ``timeout`` s; True if it finished without error.

    Unlike ``wait_for`` this never raises, and a cancellation of the caller still propagates.
    """
    task = asyncio.ensure_future(coro)
    grace = min(0.05, max(timeout, 0.0) / 4)  # for the task to process its cancellation
    await asyncio.wait({task}, timeout=max(timeout - grace, 0.0))
    if not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=grace)
        return False
    if task.cancelled():
        return False
    exc = task.exception()
    if exc is not None:
        log.debug("producer shutdown step failed: %r", exc)
    return exc is None
