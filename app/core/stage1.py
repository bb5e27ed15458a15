"""Stage 1 step: the session fold as bytes-in, bytes-out, shared by the worker and replay.

Stored values are either an open session's state or a tombstone (a closed session's tiny
marker that makes its late spans recognisable). ``state=None`` in a result means "delete".
Every step takes the stored bytes (the worker's table) or the live entry itself (replay keeps
objects and never encodes): ``result.entry`` is the new entry, ``result.state`` its bytes.

>>> from schemas.span import SpanEvent
>>> step = SessionStep(idle_timeout_ns=100)
>>> sp = SpanEvent(trace_id="t", span_id="r", session_id="s", agent="a", operation="chat",
...                input_tokens=5, start_time_unix_nano=1, end_time_unix_nano=9, session_end=True)
>>> r = step.apply(None, sp)
>>> r.outcome, r.closed.spans, r.closed.closed_by
('closed', 1, 'session_end')
>>> step.apply(r.state, sp).outcome          # the same span again, after close: late
'late'
>>> step.expire(r.state).state is None       # the tombstone expires
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from app.core import session as core
from app.core.limits import SESSION_MAX_OPEN, SESSION_MAX_STATE_BYTES
from schemas.session import SessionShape
from schemas.span import SpanEvent

Outcome = Literal["folded", "duplicate", "closed", "late", "too_large", "expired", "idle_closed",
                  "evicted", "flushed"]


Entry = core.SessionState | core.Tombstone


@dataclass(slots=True)  # not frozen: built once per span, and frozen init is 3x slower
class StepResult:
    entry: Entry | None
    closed: SessionShape | core.SessionValues | None  # values: only from a step with validate=False
    outcome: Outcome
    last_event_ns: int = 0
    unchanged: bytes | None = None  # the stored bytes, when the step changed nothing
    closing: core.SessionState | None = None  # on a session_end close: the state that closed
    rejected: object = None  # "too_large": the span its session's state had no room for

    @property
    def state(self) -> bytes | None:
        """The new entry as stored bytes (None: delete)."""
        if self.entry is None:
            return None
        return self.unchanged if self.unchanged is not None else self.entry.to_bytes()


def _load(stored: bytes | Entry) -> Entry:
    return core.load(stored) if isinstance(stored, bytes) else stored


class SessionStep:
    """Owns no state; ``apply``/``expire``/``flush`` map stored bytes to new stored bytes."""

    def __init__(self, *, idle_timeout_ns: int, validate: bool = True,
                 max_state_bytes: int = SESSION_MAX_STATE_BYTES,
                 max_open: int = SESSION_MAX_OPEN) -> None:
        self.idle_timeout_ns = idle_timeout_ns
        # False: a closed session comes out as ``core.SessionValues`` (unvalidated), for a
        # caller that hands it to stage 2 in-process and validates what it passes on
        self.validate = validate
        # An open session's state is one record of stage 1's state topic (a Kafka record is
        # at most 1 MB): a new span that might not fit is refused ("too_large")
        self.max_state_bytes = max_state_bytes
        self.first_check = max(1, max_state_bytes // core.MAX_SPAN_BYTES)
        # entries (open sessions and tombstones) one LiveSessions keeps at most: beyond it the
        # least recently active is closed early (``evict``), so memory has a bound even when a
        # producer starts a new session with every span
        self.max_open = max_open

    def unvalidated(self) -> SessionStep:
        """This step with ``validate=False``."""
        return SessionStep(idle_timeout_ns=self.idle_timeout_ns, validate=False,
                           max_state_bytes=self.max_state_bytes, max_open=self.max_open)

    @classmethod
    def from_settings(cls, settings) -> SessionStep:
        return cls(idle_timeout_ns=int(settings.session_idle_timeout_s * 1e9),
                   max_state_bytes=settings.session_max_state_bytes,
                   max_open=settings.session_max_open)

    def apply(self, stored: bytes | Entry | None, span: SpanEvent) -> StepResult:
        """Fold ``span``. A live entry passed in is updated in place (its caller owns it)."""
        # runs once per span, kept lean: a live open session (replay) is the common case
        if stored.__class__ is core.SessionState:
            raw, entry, before = None, stored, len(stored.parents)
        elif stored is None:
            raw, entry, before = None, None, 0
        else:
            raw, entry = (stored, core.load(stored)) if isinstance(stored, bytes) else (None, stored)
            if isinstance(entry, core.Tombstone):
                return StepResult(entry, None, "late", entry.last_event_ns, raw)
            before = len(entry.parents)
        # (a session_end span always fits: the session closes, and a tombstone is stored)
        if (entry is not None and before >= entry.check_at and not entry.closed
                and not span.session_end and span.span_id not in entry.parents
                and not core.has_room(entry, self.max_state_bytes)):
            return StepResult(entry, None, "too_large", entry.end_ns, rejected=span)  # now FULL
        state = core.fold(entry, span)
        if entry is None:
            state.check_at = self.first_check
        if state.closed:
            # also for a replayed span: a stored closed state means a worker stopped before
            # Kafka had the session, so the session is published again (stage 2 drops the
            # duplicate); the batch stage 1 (app.stream.stage1_batch) checkpoints tombstones
            # only after the session is acked, and keeps this path for states stored before
            return self._close(state, "session_end", "closed", state.end_ns)
        # state.end_ns is its last_event_ns (without the property call)
        if len(state.parents) == before:
            return StepResult(state, None, "duplicate", state.end_ns, raw)
        return StepResult(state, None, "folded", state.end_ns)

    def expire(self, stored: bytes | Entry | None, watermark_ns: int = 0) -> StepResult:
        """The idle clock ran out: close an open session, or drop a tombstone."""
        if stored is None:
            return StepResult(None, None, "expired")
        entry = _load(stored)
        if isinstance(entry, core.Tombstone):
            return StepResult(None, None, "expired")
        if entry.closed:  # closed, and published before its offset was committed: just retire it
            tomb = core.tombstone(entry, "session_end", watermark_ns)
            return StepResult(tomb, None, "expired", tomb.last_event_ns)
        return self._close(entry, "idle", "idle_closed", watermark_ns)

    def evict(self, stored: bytes | Entry) -> StepResult:
        """Too many entries: close an open session now, as if idle, and keep no tombstone (a
        later span of it starts a new session); drop a tombstone."""
        entry = _load(stored)
        if isinstance(entry, core.Tombstone) or entry.closed:
            return StepResult(None, None, "expired")
        return StepResult(None, self._shape(entry, "idle"), "evicted")

    def flush(self, stored: bytes | Entry) -> StepResult:
        """End of input: close what is open, drop tombstones."""
        entry = _load(stored)
        if isinstance(entry, core.Tombstone):
            return StepResult(None, None, "expired")
        return StepResult(None, self._shape(entry, "flush"), "flushed")

    def last_event_ns(self, stored: bytes | Entry) -> int:
        return _load(stored).last_event_ns

    def _close(self, state, closed_by, outcome, watermark_ns) -> StepResult:
        shape = self._shape(state, closed_by)
        tomb = core.tombstone(state, closed_by, watermark_ns)
        return StepResult(tomb, shape, outcome, tomb.last_event_ns,
                          closing=state if closed_by == "session_end" else None)

    def _shape(self, state: core.SessionState, closed_by: core.ClosedBy):
        if self.validate:
            return core.close(state, closed_by)
        return core.SessionValues(core.shape_fields(state, closed_by))
