"""Span emitter for agents (async ``SpanEmitter``, threaded ``SyncSpanEmitter``).

README usage (``from app.emitter import SyncSpanEmitter``; ``from app.settings import Settings``)::

    emitter = SyncSpanEmitter(Settings())  # LOADSHAPE_* env: broker, security, topic
    emitter.emit({"trace_id": "t1", "span_id": "s1", "session_id": "chat-42", "agent": "support",
                  "operation": "chat", "start_time_unix_nano": t0, "end_time_unix_nano": t1})

Records go to ``settings.topic_spans`` keyed by ``session_id`` as compact JSON
(``SpanEvent`` v1, unknown extra fields kept). ``emit()`` validates (a malformed span
raises ``InvalidSpanError`` naming the field), then only appends to a bounded buffer: it
never blocks on Kafka and never raises because of Kafka. A full buffer drops the oldest
span; every span ends up counted in ``emitter.stats``. ``close()`` (or leaving the
``with`` block) flushes within a timeout. Asyncio agents: ``emitter = SpanEmitter(settings)``,
``await emitter.start()``, ``emitter.emit(span)``, ``await emitter.close()``.
"""

from app.emitter.async_emitter import SpanEmitter
from app.emitter.buffer import EmitterStats
from app.emitter.encode import InvalidSpanError, encode_span, validate_span
from app.emitter.sync_emitter import SyncSpanEmitter

__all__ = [
    "EmitterStats",
    "InvalidSpanError",
    "SpanEmitter",
    "SyncSpanEmitter",
    "encode_span",
    "validate_span",
]
