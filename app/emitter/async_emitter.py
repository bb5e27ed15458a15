"""``SpanEmitter``: non-blocking span emission for asyncio agents.

``emit()`` validates, encodes and appends to a bounded buffer; nothing else. A background
task connects (and reconnects) to Kafka and drains the buffer into an aiokafka producer,
which batches (``linger_ms``, ``max_batch_bytes``) and compresses. Kafka trouble shows up
only in ``stats``: never as an exception, never as a blocked ``emit()``.

>>> import asyncio
>>> from app.settings import Settings
>>> async def demo():
...     emitter = SpanEmitter(Settings(kafka_port=1))  # nothing listens on port 1
...     await emitter.start()
...     emitter.emit({"trace_id": "t", "span_id": "s", "session_id": "x", "agent": "dev",
...                   "operation": "chat", "start_time_unix_nano": 1, "end_time_unix_nano": 2})
...     await emitter.close(timeout=0.5)
...     return emitter.stats
>>> s = asyncio.run(demo())
>>> s.queued, s.sent, s.dropped_send_failed
(1, 0, 1)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError, MessageSizeTooLargeError

from app.broker.client_config import describe
from app.emitter.buffer import EmitterStats, Record, SpanBuffer
from app.emitter.encode import InvalidSpanError, encode_span
from app.emitter.producer import producer_kwargs, stop_producer
from app.settings import Settings
from schemas.span import SpanEvent

log = logging.getLogger(__name__)

_CHUNK = 500  # records handed to the producer between yields to the agent's own tasks
_BACKOFF_S = (0.1, 5.0)  # reconnect / resend backoff: first, cap


class SpanEmitter:
    """Emit ``SpanEvent``s to Kafka from an asyncio program without ever blocking it."""

    def __init__(
        self,
        settings: Settings,
        *,
        buffer_size: int = 100_000,
        linger_ms: int = 20,
        max_batch_bytes: int = 64 * 1024,  # gzip-9 of a full batch runs on the loop: ~1 ms
        compression: str | None = "gzip",
        topic: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        request_timeout_ms: int = 30_000,
        producer_factory: Callable[..., Any] = AIOKafkaProducer,
    ) -> None:
        self.topic = topic or settings.topic_spans
        self._kwargs = producer_kwargs(
            settings, linger_ms=linger_ms, max_batch_bytes=max_batch_bytes,
            compression=compression, request_timeout_ms=request_timeout_ms,
        )
        # room for the record batch header and per-record framing within one request
        self._max_record_bytes = self._kwargs["max_request_size"] - 1024
        self._factory = producer_factory
        self._clock = clock
        self._buffer = SpanBuffer(buffer_size)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wakeup = asyncio.Event()  # buffer went from empty to non-empty
        self._progress = asyncio.Event()  # something was sent, failed or drained
        self._task: asyncio.Task[None] | None = None
        self._settling: set[asyncio.Task[None]] = set()
        self._producer: Any = None
        self._healthy = True  # only log transitions, not every failed attempt

    # --- agent-facing API -------------------------------------------------------------

    async def start(self) -> None:
        """Start the background sender; returns at once, even when Kafka is down."""
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._task = asyncio.create_task(self._run(), name="span-emitter")
        log.info("span emitter: topic=%s %s", self.topic, describe(self._kwargs))

    def emit(self, span: SpanEvent | Mapping[str, Any]) -> bool:
        """Queue ``span``; True if queued. Raises ``InvalidSpanError`` for a malformed span."""
        try:
            record = encode_span(span, self._max_record_bytes)
        except InvalidSpanError:
            self._buffer.note_invalid()
            raise
        queued, was_empty = self._buffer.push(record)
        if was_empty:
            self._wake()
        return queued

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is acknowledged or failed; False on timeout."""
        deadline = None if timeout is None else self._clock() + timeout
        while not self._buffer.idle():
            remaining = None if deadline is None else deadline - self._clock()
            if self._task is None or self._task.done() or (remaining is not None and remaining <= 0):
                return False
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), remaining)
            except TimeoutError:
                return False
        return True

    async def close(self, timeout: float = 10.0) -> None:
        """Flush within ``timeout`` s, then stop; whatever is left counts as dropped."""
        deadline = self._clock() + max(timeout, 0.0)
        reserve = min(1.0, 0.2 * max(timeout, 0.0))  # kept back for stopping the producer
        self._buffer.close()
        if self._task is not None:
            await self.flush(max(0.0, deadline - reserve - self._clock()))
            await self._shutdown(deadline)
        self.discard_unsent()

    def discard_unsent(self) -> int:
        """Count whatever is still buffered or in flight as dropped; returns how many."""
        lost = self._buffer.abandon()
        if lost:
            log.warning("span emitter closed with %d span(s) unsent", lost)
        return lost

    @property
    def stats(self) -> EmitterStats:
        return self._buffer.stats()

    # --- background sender ------------------------------------------------------------

    def _wake(self) -> None:
        if self._loop is None:
            return  # not started yet: records wait in the buffer
        if threading.get_ident() == self._loop_thread:
            self._wakeup.set()
            return
        try:
            self._loop.call_soon_threadsafe(self._wakeup.set)
        except RuntimeError:
            pass  # loop already closed; the record stays counted in the buffer

    async def _run(self) -> None:
        backoff = _BACKOFF_S[0]
        while True:
            try:
                await self._pump(await self._connect())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # anything unexpected: rebuild the producer, keep going
                log.warning("span emitter: producer failed, reconnecting: %r", exc)
                producer, self._producer = self._producer, None
                if producer is not None:
                    await stop_producer(producer, 1.0)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_S[1])

    async def _connect(self) -> Any:
        backoff = _BACKOFF_S[0]
        while True:
            producer = self._producer = self._factory(**self._kwargs)  # _shutdown stops it
            try:
                await producer.start()
            except Exception as exc:
                self._producer = None
                await stop_producer(producer, 1.0)
                self._note_trouble("cannot connect to Kafka (will keep retrying)", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_S[1])
                continue
            self._note_ok("connected to Kafka")
            return producer

    async def _pump(self, producer: Any) -> None:
        backoff = _BACKOFF_S[0]
        while True:
            batch = self._buffer.take(_CHUNK)
            if not batch:
                await self._idle_wait()
                continue
            futures, error = await self._hand_over(producer, batch)
            if futures:
                self._track(asyncio.gather(*futures, return_exceptions=True))
            if error is None or _is_poison(error):
                backoff = _BACKOFF_S[0]
                await asyncio.sleep(0)  # let the agent's own tasks run between chunks
                continue
            if not isinstance(error, KafkaTimeoutError):
                raise error  # producer closed or failed fatally: _run builds a new one
            self._note_trouble("cannot hand spans to the producer (will retry)", error)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_S[1])

    async def _hand_over(
        self, producer: Any, batch: list[Record]
    ) -> tuple[list[asyncio.Future[Any]], Exception | None]:
        """Append records to the producer's batches; unsent ones go back to the buffer."""
        futures: list[asyncio.Future[Any]] = []
        done = 0
        try:
            for key, value in batch:
                futures.append(await producer.send(self.topic, value, key=key))
                done += 1
        except Exception as exc:  # metadata/buffer wait timed out, or the producer is gone
            if _is_poison(exc):  # this record can never be sent: count it, keep the rest
                self._buffer.settle(sent=0, failed=1)
                self._note_trouble("dropped a span the producer refuses", exc)
                done += 1
            return futures, exc
        finally:
            self._buffer.give_back(batch[done:])  # also when cancelled by close()
        return futures, None

    def _track(self, delivery: asyncio.Future[list[Any]]) -> None:
        task = asyncio.ensure_future(self._settle(delivery))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, delivery: asyncio.Future[list[Any]]) -> None:
        results = await delivery
        failed = [r for r in results if isinstance(r, BaseException)]
        self._buffer.settle(sent=len(results) - len(failed), failed=len(failed))
        if failed:
            self._note_trouble(f"{len(failed)} span(s) failed after retries", failed[0])
        elif results:
            self._note_ok("delivering spans again")
        self._progress.set()

    async def _idle_wait(self) -> None:
        self._wakeup.clear()
        if len(self._buffer) == 0:
            self._progress.set()  # flush() may be waiting for exactly this
            await self._wakeup.wait()

    async def _shutdown(self, deadline: float) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})  # cancellation returns unsent records to the buffer
        producer, self._producer = self._producer, None
        if producer is not None:  # stop() delivers what the producer already holds
            await stop_producer(producer, deadline - self._clock())
        if self._settling:
            await asyncio.wait(self._settling, timeout=max(0.0, deadline - self._clock()))
        for pending in list(self._settling):
            pending.cancel()  # their records are counted by abandon()
        if self._settling:
            await asyncio.wait(self._settling, timeout=0.1)

    def _note_trouble(self, what: str, exc: BaseException) -> None:
        if self._healthy:
            log.warning("span emitter: %s: %r", what, exc)
        else:
            log.debug("span emitter: %s: %r", what, exc)
        self._healthy = False

    def _note_ok(self, what: str) -> None:
        if not self._healthy:
            log.info("span emitter: %s", what)
        self._healthy = True


def _is_poison(exc: Exception) -> bool:
    """An error about the record itself (retrying cannot help), not about Kafka's state."""
    return isinstance(exc, MessageSizeTooLargeError) or not isinstance(exc, KafkaError)
