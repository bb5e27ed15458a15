"""``SyncSpanEmitter``: the ``SpanEmitter`` for threaded / non-async agents.

It runs a ``SpanEmitter`` on a private event loop in a daemon thread. ``emit()`` is
thread-safe and does its work (validate, encode, append) in the calling thread, so it
never waits on Kafka or on the emitter's thread.

>>> from app.settings import Settings
>>> with SyncSpanEmitter(Settings(kafka_port=1), close_timeout=0.5) as emitter:
...     emitter.emit({"trace_id": "t", "span_id": "s", "session_id": "x", "agent": "dev",
...                   "operation": "chat", "start_time_unix_nano": 1, "end_time_unix_nano": 2})
True
>>> emitter.stats.dropped_send_failed
1
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from collections.abc import Mapping
from typing import Any

from app.emitter.async_emitter import SpanEmitter
from app.emitter.buffer import EmitterStats
from app.settings import Settings
from schemas.span import SpanEvent

log = logging.getLogger(__name__)

_MARGIN_S = 1.0  # extra wait for the emitter thread beyond the emitter's own timeouts


class SyncSpanEmitter:
    """Blocking-API facade; takes the same keyword options as ``SpanEmitter``."""

    def __init__(self, settings: Settings, *, close_timeout: float = 10.0, **options: Any) -> None:
        self._emitter = SpanEmitter(settings, **options)
        self._close_timeout = close_timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="span-emitter", daemon=True)
        self._closed = False
        self._close_lock = threading.Lock()
        self._thread.start()
        self._call(self._emitter.start(), timeout=5.0)
        atexit.register(self.close)  # an agent that forgets close() still gets its flush

    def emit(self, span: SpanEvent | Mapping[str, Any]) -> bool:
        """Queue ``span``; True if queued. Raises ``InvalidSpanError`` for a malformed span."""
        return self._emitter.emit(span)

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything queued is acknowledged or failed; False on timeout."""
        if self._closed:
            return self._emitter.stats.buffered == 0 and self._emitter.stats.in_flight == 0
        wait = None if timeout is None else timeout + _MARGIN_S
        return bool(self._call(self._emitter.flush(timeout), timeout=wait))

    def close(self, timeout: float | None = None) -> None:
        """Flush within ``timeout`` s (default ``close_timeout``), stop the thread; never raises."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.close)
        timeout = self._close_timeout if timeout is None else timeout
        self._call(self._emitter.close(timeout), timeout=timeout + _MARGIN_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_MARGIN_S)
        self._emitter.discard_unsent()  # only non-zero if the emitter's loop was wedged

    @property
    def stats(self) -> EmitterStats:
        return self._emitter.stats

    def __enter__(self) -> SyncSpanEmitter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, coro: Any, timeout: float | None) -> Any:
        """Run ``coro`` on the emitter's loop and wait for it; None if it fails or times out."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except Exception as exc:  # includes the result() timeout
            future.cancel()
            log.warning("span emitter: %r", exc)
            return None

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            if pending:
                self._loop.run_until_complete(asyncio.wait(pending, timeout=_MARGIN_S))
            self._loop.close()
