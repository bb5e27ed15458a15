"""POST alerts to Alertmanager's API v2 (``/api/v2/alerts``), retrying with backoff."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp

from app.alerting.payload import Postable

log = logging.getLogger(__name__)


class AlertmanagerError(RuntimeError):
    """Alertmanager answered with a non-2xx status or could not be reached."""


def alerts_endpoint(base_url: str) -> str:
    """
    >>> alerts_endpoint("http://127.0.0.1:9093/")
    'http://127.0.0.1:9093/api/v2/alerts'
    """
    return base_url.rstrip("/") + "/api/v2/alerts"


@dataclass(frozen=True, slots=True)
class AlertmanagerClient:
    session: aiohttp.ClientSession
    base_url: str
    timeout_s: float = 10.0

    async def post(self, alerts: Sequence[Postable]) -> None:
        """One POST of ``alerts``; raises ``AlertmanagerError`` unless Alertmanager accepted."""
        try:
            async with self.session.post(
                alerts_endpoint(self.base_url), json=list(alerts),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            ) as resp:
                if resp.status // 100 != 2:
                    body = (await resp.text())[:500]
                    raise AlertmanagerError(f"Alertmanager answered {resp.status}: {body}")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise AlertmanagerError(f"cannot post to {self.base_url}: {exc!r}") from exc


async def post_with_retry(
    post: Callable[[Sequence[Postable]], Awaitable[None]], alerts: Sequence[Postable], *,
    max_attempts: int | None = None, backoff_s: float = 0.5, max_backoff_s: float = 30.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_error: Callable[[AlertmanagerError], None] = lambda _exc: None,
) -> None:
    """Post until accepted (at-least-once); ``max_attempts=None`` retries forever.

    >>> calls = []
    >>> async def flaky(alerts):
    ...     calls.append(len(alerts))
    ...     if len(calls) < 3:
    ...         raise AlertmanagerError("503")
    >>> async def no_sleep(_s): pass
    >>> asyncio.run(post_with_retry(flaky, [{}], sleep=no_sleep)); calls
    [1, 1, 1]
    """
    attempt, delay = 0, backoff_s
    while True:
        attempt += 1
        try:
            await post(alerts)
            return
        except AlertmanagerError as exc:
            on_error(exc)
            if max_attempts is not None and attempt >= max_attempts:
                raise
            log.warning("alert post failed (attempt %d), retrying in %.1fs: %s", attempt, delay, exc)
            await sleep(delay)
            delay = min(delay * 2, max_backoff_s)
