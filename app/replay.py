"""Offline replay: the same pure core as the Faust worker, driven from a file.

Spans are folded per session (stage 1), closed sessions go through the per-segment step
(stage 2), alerts come out. One global event-time watermark drives idle closing. At the end
open sessions are flushed and reorder buffers drained, unless ``flush=False`` (then the result
equals what a streaming worker has emitted after consuming the same records).

Lines are decoded by the compiled fast path (``schemas.fastspan``); a line it does not accept
is decided, and if bad explained, by pydantic (``decode_span``), the schema of record. Both
accept exactly the same records with the same values (``tests/unit/test_fastspan.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice

import msgspec

from app.broker.partitioner import partition_of
from app.core.live_sessions import LiveSessions
from app.core.session import SessionValues
from app.core.stage1 import SessionStep
from app.core.stage2 import SegmentStep
from app.stream.deadletter import dead_letter, segment_limit, too_large
from schemas.alert import Alert
from schemas.deadletter import DeadLetter
from schemas.fastspan import SpanRecord, decode_span_fast, fast_records
from schemas.session import SessionShape
from schemas.span import SpanEvent

READ_BUFFER = 1 << 20  # bytes read at a time: the default 8 KiB is a system call per ~15 lines
# index of a span in a feed_many call -> its original bytes, source and line (for a dead letter)
Where = Callable[[int], tuple[bytes, str, int | None]]
PROGRESS_EVERY = 4096  # lines between progress reports
BLOCK_LINES = 128  # lines decoded at once (a divisor of PROGRESS_EVERY; their records stay in cache)


@dataclass
class ReplayResult:
    spans: int = 0
    dead_letters: int = 0
    late_spans: int = 0
    sessions: int = 0
    alerts: list[Alert] = field(default_factory=list)


@dataclass
class ReplaySinks:
    """Where results go as they are produced (files, lists, metrics)."""

    alert: Callable[[Alert], None] = lambda a: None
    session: Callable[[SessionShape], None] | None = None  # None: sessions are not kept
    dead_letter: Callable[[DeadLetter], None] = lambda d: None


class Replayer:
    """Holds the run's state (live objects instead of Kafka state); the steps stay pure."""

    def __init__(self, session_step: SessionStep, segment_step: SegmentStep, *,
                 sinks: ReplaySinks | None = None,
                 segment_limit: tuple[int, int] | None = None) -> None:
        # results are alerts only: the step's per-fold gauges (quantiles etc.) are not computed
        self.s2 = segment_step.without_gauges()
        # closed sessions come out unvalidated (stage 2 reads their values in-process);
        # only those passed to a session sink are validated (see _segment)
        self.live = LiveSessions(session_step.unvalidated())  # idle after its idle_timeout_ns
        self.sinks = sinks or ReplaySinks()
        self.segments: dict[str, object] = {}  # segment key -> SegmentEntry (live objects)
        self._tick = 0
        self.result = ReplayResult()
        # (sessions partitions, segments each may track): stage 2's limit, as the worker has it
        self.segment_limit = segment_limit
        self._segments_in: dict[int, int] = {}  # sessions partition -> segments tracked

    def feed_raw(self, raw: bytes, *, source: str, line: int) -> None:
        decoded = decode_span_fast(raw)  # compiled path; pydantic decides (and explains) the rest
        if not decoded.ok:
            self.reject(raw, decoded, source=source, line=line)
            return
        self.feed_many((decoded.value,), lambda i: (raw, source, line))

    def reject(self, raw: bytes, decoded, *, source: str, line: int) -> None:
        self.result.dead_letters += 1
        self.sinks.dead_letter(dead_letter(raw, decoded, source=source, line=line))

    def feed(self, span: SpanEvent | SpanRecord) -> None:
        self.feed_many((span,))

    def feed_many(self, spans: Iterable[SpanEvent | SpanRecord], where: Where | None = None) -> None:
        """``feed`` each of ``spans`` in turn (one call per decoded block, not per span).
        ``where(i)``: the original bytes, source and line of ``spans[i]``, for a dead letter."""
        live, result = self.live, self.result
        spans = spans if spans.__class__ is list or spans.__class__ is tuple else list(spans)
        try:
            for res in live.fold_each(spans):  # closed sessions, late spans, expiries
                if res.closed is not None:
                    self._segment(res.closed)
                elif res.outcome == "late":
                    result.late_spans += 1
                elif res.outcome == "too_large":
                    self._too_large(res.rejected, spans, where)
        finally:  # counted once per call (an attribute update per span costs)
            result.spans += len(spans)

    def _too_large(self, span, spans, where: Where | None) -> None:
        """Dead-letter ``span``: its session's state had no room for it (as stage 1 does)."""
        if where is None:
            raw, source, line = _encoded(span), "replay", None
        else:
            raw, source, line = where(next(i for i, s in enumerate(spans) if s is span))
        self.result.dead_letters += 1
        self.sinks.dead_letter(too_large(raw, span, self.live.step.max_state_bytes, source=source,
                                         line=line))

    def _segment(self, shape: SessionValues) -> None:
        self.result.sessions += 1
        if self.sinks.session is not None:  # the session leaves the replay: validated
            shape = shape.shape()
            self.sinks.session(shape)
        key = shape.segment.key
        entry = self.segments.get(key)
        if entry is None and self.segment_limit is not None and not self._admits(shape):
            return
        res = self.s2.apply(entry, shape, self.live.watermark)
        self.segments[key] = res.entry
        self._alerts(res.alerts)
        self._advance_others(key)

    def _admits(self, shape: SessionShape) -> bool:
        """Whether stage 2 takes ``shape``'s new segment (first come, first served, per
        sessions partition); else its session is dead-lettered (``segment_limit``)."""
        partitions, limit = self.segment_limit
        key = shape.segment.key
        part = partition_of(key.encode(), partitions)
        tracked = self._segments_in.get(part, 0)
        if tracked < limit:
            self._segments_in[part] = tracked + 1
            return True
        raw = (shape if shape.__class__ is SessionShape else shape.shape()).model_dump_json().encode()
        self.result.dead_letters += 1
        self.sinks.dead_letter(segment_limit(raw, key, part, limit, source="replay"))
        return False

    def _advance_others(self, except_key: str) -> None:
        # Event time moved on for every segment, as a worker's heartbeats would tell them.
        self._tick += 1
        if self._tick % 64:
            return
        for key, entry in self.segments.items():
            if key != except_key and self.s2.pending(entry):
                self._alerts(self.s2.advance(entry, self.live.watermark).alerts)

    def _alerts(self, alerts: Iterable[Alert]) -> None:
        for alert in alerts:
            self.result.alerts.append(alert)
            self.sinks.alert(alert)

    def finish(self, *, flush: bool = True) -> ReplayResult:
        if flush:
            for _, res in self.live.flush():
                if res.closed is not None:
                    self._segment(res.closed)
            for key in sorted(self.segments):
                self._alerts(self.s2.drain(self.segments[key]).alerts)
        return self.result


def _encoded(span: SpanEvent | SpanRecord) -> bytes:
    return span.model_dump_json().encode() if isinstance(span, SpanEvent) else msgspec.json.encode(span)


def iter_blocks(path) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the first line, the lines with their line ends) of a JSON-lines file, in
    blocks of ``BLOCK_LINES`` lines."""
    with open(path, "rb", buffering=READ_BUFFER) as fh:
        first = 1
        while block := list(islice(fh, BLOCK_LINES)):
            yield first, block
            first += len(block)


def build_replayer(settings, *, alerts_fh=None, dlq_fh=None, sessions_fh=None) -> Replayer:
    """A Replayer wired to write JSON lines to the given binary file handles."""
    def line(fh):
        return (lambda model: fh.write(model.model_dump_json().encode() + b"\n")) if fh else (lambda m: None)

    sinks = ReplaySinks(alert=line(alerts_fh), session=line(sessions_fh) if sessions_fh else None,
                        dead_letter=line(dlq_fh))
    return Replayer(SessionStep.from_settings(settings), SegmentStep.from_settings(settings),
                    sinks=sinks, segment_limit=(settings.sessions_partitions,
                                                settings.max_segments_per_partition))


def feed_file(replayer: Replayer, path, *, fmt: str = "spans",
              progress: Callable[[int], None] = lambda n: None) -> None:
    """Feed every line of ``path`` (SpanEvent JSON lines, or OTLP/JSON lines) to ``replayer``."""
    source = str(path)[-128:]
    if fmt == "otlp-json":
        _feed_otlp(replayer, path, source, progress)
        return
    for first, block in iter_blocks(path):
        records = fast_records(block)
        if records is not None:  # the usual block: flat records only, decoded in one go
            replayer.feed_many(records, lambda i, block=block, first=first: (
                block[i].rstrip(b"\r\n"), source, first + i))
            if (last := first + len(block) - 1) % PROGRESS_EVERY == 0:
                progress(last)
            continue
        for no, raw in enumerate(block, start=first):
            raw = raw.rstrip(b"\r\n")
            if raw and not raw.isspace():  # blank lines are skipped (raw.strip(), without the copy)
                replayer.feed_raw(raw, source=source, line=no)
                if no % PROGRESS_EVERY == 0:
                    progress(no)


def _feed_otlp(replayer: Replayer, path, source: str, progress) -> None:
    from app.otlp import OtlpDecodeError, iter_otlp_json_lines
    from schemas.validation import Decoded

    for no, batch in iter_otlp_json_lines(path):
        if isinstance(batch, OtlpDecodeError):
            rej = Decoded(reason=batch.reason, field=batch.field, code=batch.code)
            replayer.reject(batch.original or b"", rej, source=source, line=no)
            continue
        for r in batch.rejected:
            replayer.reject(r.span_json or b"", Decoded(reason=r.reason, field=r.field, code=r.code),
                            source=source, line=no)
        replayer.feed_many(batch.spans, lambda i, spans=batch.spans, no=no: (
            _encoded(spans[i]), source, no))
        progress(no)
