"""Is a Kafka broker answering metadata requests? (used by `kafka up` and the tests)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable


async def _metadata_once(bootstrap: str, timeout: float) -> bool:
    from aiokafka import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        return bool(client.cluster.brokers())
    except Exception:  # noqa: BLE001 - any failure means "not yet"
        return False
    finally:
        await client.close()


def wait_for_metadata(bootstrap: str, *, timeout: float, alive: Callable[[], bool],
                      interval: float = 0.25) -> bool:
    """Poll until the broker answers a metadata request, the process dies, or time runs out."""
    deadline = time.monotonic() + timeout
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # connection refusals while it boots are expected
    try:
        while time.monotonic() < deadline:
            if not alive():
                return False
            if asyncio.run(_metadata_once(bootstrap, min(2.0, deadline - time.monotonic()))):
                return True
            time.sleep(interval)
        return False
    finally:
        quiet.setLevel(level)
