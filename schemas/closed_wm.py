"""Where stage 1 closed a session, in event time: a Kafka header on its SessionShape records.

``loadshape-closed-wm: <span partition>:<watermark>``: that partition's watermark when its fold
closed the session. Stage 1 folds deterministically from a checkpoint, so a session it
publishes again after a crash or a rebalance carries the same header. Stage 2 remembers the
sessions of each span partition until that partition's heartbeat says a durable checkpoint has
passed their watermark (``Heartbeat.ck``; nothing before it is published again) and drops a
session it remembers (``app.core.stage2``). The SessionShape value is unchanged; a record
without the header (another producer) is checked only against the latest sessions released.

>>> encode(3, 1207)
b'3:1207'
>>> decode([("loadshape-closed-wm", b"3:1207")], spans_partitions=4)
(3, 1207)
>>> decode({"loadshape-closed-wm": b"9:1"}, spans_partitions=4) is None  # no such partition
True
>>> decode(None, spans_partitions=4) is None
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

HEADER = "loadshape-closed-wm"


def encode(span_partition: int, watermark_ns: int) -> bytes:
    return b"%d:%d" % (span_partition, watermark_ns)


def decode(headers: Mapping[str, bytes] | Sequence[tuple[str, bytes]] | None, *,
           spans_partitions: int) -> tuple[int, int] | None:
    """``(span partition, watermark)``, or None if the header is absent or malformed (then the
    session is checked as a record without it: a header is no reason to lose a session)."""
    if not headers:
        return None
    raw = headers.get(HEADER) if isinstance(headers, Mapping) else next(
        (v for k, v in headers if k == HEADER), None)
    if not isinstance(raw, bytes | bytearray):
        return None
    parts = bytes(raw).split(b":")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    source, watermark = int(parts[0]), int(parts[1])
    return (source, watermark) if source < spans_partitions else None
