"""Build dead-letter records for the DLQ topic (or a --dlq-out file)."""

from __future__ import annotations

from schemas.deadletter import DeadLetter
from schemas.validation import Decoded


def dead_letter(raw: bytes, rejected: Decoded, *, source: str, partition: int | None = None,
                offset: int | None = None, line: int | None = None) -> DeadLetter:
    """A DeadLetter for a record that ``decode`` refused, with where it came from."""
    return DeadLetter.of(raw, reason=rejected.reason or "rejected", reason_code=rejected.code or "invalid",
                         field=rejected.field, source=source, partition=partition, offset=offset,
                         line=line)


TOO_LARGE = "session_too_large"


def too_large(raw: bytes, span, max_state_bytes: int, *, source: str, partition: int | None = None,
              offset: int | None = None, line: int | None = None) -> DeadLetter:
    """A DeadLetter for a span its session's state had no room for (stage 1's ``too_large``)."""
    reason = (f"session_id: session {span.session_id!r} is full (its state would pass "
              f"session_max_state_bytes={max_state_bytes}); span {span.span_id!r} not folded")
    return DeadLetter.of(raw, reason=reason, reason_code=TOO_LARGE, field="session_id",
                         source=source, partition=partition, offset=offset, line=line)


SEGMENT_LIMIT = "segment_limit"


def segment_limit(raw: bytes, segment_key: str, partition: int, limit: int, *, source: str,
                  offset: int | None = None) -> DeadLetter:
    """A DeadLetter for a session of a segment stage 2 has no room for (one segment's state is
    sketches and detectors: a producer that puts an id in the agent name must not exhaust memory)."""
    reason = (f"segment: {segment_key!r} is a new segment, and sessions partition {partition} "
              f"already tracks max_segments_per_partition={limit}")
    return DeadLetter.of(raw, reason=reason, reason_code=SEGMENT_LIMIT, field="segment",
                         source=source, partition=partition, offset=offset)


async def guarded(handle, event, *, dlq_topic, metrics, source: str, log) -> None:
    """Run ``handle`` on one event; an unexpected error dead-letters the record instead of
    crashing the agent (a crashed Faust agent stops consuming its partitions)."""
    msg = event.message
    try:
        await handle(event.key, event.value, msg.partition, msg.offset)
    except Exception as exc:  # noqa: BLE001 - nothing a producer sends may stop a worker
        log.exception("%s: record at partition %s offset %s dead-lettered", source, msg.partition,
                      msg.offset)
        metrics.count_dead_letter("internal_error")
        raw = event.value if isinstance(event.value, bytes) else repr(event.value).encode()
        dl = DeadLetter.of(raw, reason=f"internal error: {type(exc).__name__}: {exc}"[:4096],
                           reason_code="internal_error", source=source, partition=msg.partition,
                           offset=msg.offset)
        await dlq_topic.send(key=event.key if isinstance(event.key, bytes) else None,
                             value=dl.model_dump_json().encode())
