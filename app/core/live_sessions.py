"""The open sessions of one stream of spans, folded span by span and closed when idle.

One object for what ``app.replay`` (a file) and ``app.stream.stage1_partition`` (a Kafka
partition) both do per span: fold it into its session's entry (``SessionStep.apply``), move
the stream's event-time watermark, then close the sessions that went idle as of that
watermark (``step.idle_timeout_ns`` behind it). Entries are live objects (an open
``SessionState`` or a ``Tombstone``); a result's ``entry is None`` means the session is gone.
No Kafka, no clock: time is the spans' own.

>>> from app.core.stage1 import SessionStep
>>> from schemas.span import SpanEvent
>>> def span(sid, t, end=False):
...     return SpanEvent(trace_id="t", span_id=f"{sid}-{t}", session_id=sid, agent="a",
...                      operation="chat", start_time_unix_nano=t, end_time_unix_nano=t,
...                      session_end=end)
>>> live = LiveSessions(SessionStep(idle_timeout_ns=100))
>>> live.fold(span("s1", 10)).outcome, live.fold(span("s2", 50)).outcome
('folded', 'folded')
>>> [(sid, r.outcome) for sid, r in live.expire()]     # watermark 50: nothing idle yet
[]
>>> live.fold(span("s2", 150)).outcome
'folded'
>>> [(sid, r.outcome, r.closed.spans) for sid, r in live.expire()]
[('s1', 'idle_closed', 1)]
>>> [(sid, r.outcome) for sid, r in live.flush()]     # s1's tombstone goes, s2 closes
[('s1', 'expired'), ('s2', 'flushed')]
>>> len(live)
0
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from app.core.idle import IdleIndex
from app.core.session import SessionState, fold_new
from app.core.stage1 import Entry, SessionStep, StepResult


class LiveSessions:
    __slots__ = ("step", "entries", "idle", "watermark", "max_open")

    def __init__(self, step: SessionStep, *, entries: dict[str, Entry] | None = None,
                 watermark: int = 0) -> None:
        self.step = step
        self.entries: dict[str, Entry] = entries if entries is not None else {}
        self.idle = IdleIndex(self._last_event)
        for sid, entry in self.entries.items():
            self.idle.touch(sid, entry.last_event_ns)
        self.watermark = watermark
        self.max_open = step.max_open

    def fold(self, span) -> StepResult:
        """Fold ``span`` (a ``SpanEvent`` or ``SpanRecord``) and advance the watermark; the
        caller publishes ``result.closed`` and then calls ``expire``."""
        result = self.fold_open(span)
        if result is None:
            state = self.entries[span.session_id]
            return StepResult(state, None, "folded", state.end_ns)
        return result

    def fold_open(self, span) -> StepResult | None:
        """``fold``, but None when ``span`` was added to its session's open entry, which
        stays open (the common case: nothing to publish, so no result is built). A "folded"
        result comes back only for a new session that took the entries past ``max_open``:
        the caller then calls ``expire``, which evicts."""
        sid = span.session_id
        entries = self.entries
        entry = entries.get(sid)
        end = span.end_time_unix_nano
        if end > self.watermark:
            self.watermark = end
        # Once per span, so kept flat: a new span of a live open session is folded right
        # here (``SessionStep.apply`` would fold it the same way); the rest goes through it.
        if entry.__class__ is SessionState and not entry.closed and not span.session_end:
            parents = entry.parents
            if span.span_id in parents:
                return StepResult(entry, None, "duplicate", entry.end_ns)
            if len(parents) < entry.check_at:  # surely room for it (else the step looks)
                fold_new(entry, span)  # in place (found by its session id); it stays open
                return None  # its last event can only have moved later: no idle.touch needed
        result = self.step.apply(entry, span)
        outcome = result.outcome
        if outcome == "folded":
            entries[sid] = result.entry
            self.idle.touch(sid, result.last_event_ns)
            # a new session past max_open: the caller is told, so that it calls expire()
            return result if len(entries) > self.max_open else None
        if outcome != "duplicate" and outcome != "late" and outcome != "too_large":  # no change
            self._store(sid, result)
        return result

    def fold_each(self, spans: Iterable) -> Iterator[StepResult]:
        """``fold_open`` then ``expire`` for each of ``spans`` in turn: yields every result
        that is not None, and every expiry result, as it comes (the caller acts on it before
        the next span is folded)."""
        fold_open, idle = self.fold_open, self.idle
        timeout = self.step.idle_timeout_ns
        # idle.earliest_ns + timeout, recomputed only when the index's earliest time changed
        # (rarely): one int comparison per span instead of a subtraction and a comparison
        earliest = due = None
        for span in spans:
            if (res := fold_open(span)) is not None:
                if res.outcome != "folded":  # "folded": a new session past max_open
                    yield res
                if len(self.entries) > self.max_open:  # (also after a one-span session)
                    for _, evicted in self.expire():
                        yield evicted
            if idle.earliest_ns is not earliest:
                earliest = idle.earliest_ns
                due = earliest + timeout
            if due < self.watermark:  # expire()'s early-out
                for _, res in self.expire():
                    yield res

    def expire(self) -> list[tuple[str, StepResult]]:
        """Close (or retire) every session idle as of the watermark, oldest first; then, while
        there are more than ``max_open`` entries, evict the least recently active."""
        wm = self.watermark
        if self.idle.earliest_ns >= wm - self.step.idle_timeout_ns:
            # the common case (once per span): nothing is due
            return [] if len(self.entries) <= self.max_open else self._evict()
        out = [(sid, self._store(sid, self.step.expire(self.entries.get(sid), wm)))
               for sid in self.idle.expired(wm, self.step.idle_timeout_ns)]
        return out + self._evict() if len(self.entries) > self.max_open else out

    def _evict(self) -> list[tuple[str, StepResult]]:
        out = []
        while len(self.entries) > self.max_open:
            sid = self.idle.pop_oldest()
            out.append((sid, self._store(sid, self.step.evict(self.entries[sid]))))
        return out

    def flush(self) -> list[tuple[str, StepResult]]:
        """End of input: close every open session and drop every tombstone, by session id."""
        return [(sid, self._store(sid, self.step.flush(self.entries[sid])))
                for sid in sorted(self.entries)]

    def _store(self, sid: str, result: StepResult) -> StepResult:
        if result.entry is None:
            self.entries.pop(sid, None)
            self.idle.forget(sid)
        else:
            self.entries[sid] = result.entry
            self.idle.touch(sid, result.last_event_ns)
        return result

    def _last_event(self, sid: str) -> int:
        return self.entries[sid].last_event_ns

    def __len__(self) -> int:
        return len(self.entries)
