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
