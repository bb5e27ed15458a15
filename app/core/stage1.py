"""Stage 1 step: the session fold as bytes-in, bytes-out, shared by the worker and replay.

Stored values are either an open session's state or a tombstone (a closed session's tiny
marker that makes its late spans recognisable). ``state=None`` in a result means "delete".

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
from schemas.session import SessionShape
from schemas.span import SpanEvent

Outcome = Literal["folded", "duplicate", "closed", "late", "expired", "idle_closed", "flushed"]


@dataclass(frozen=True, slots=True)
class StepResult:
    state: bytes | None
    closed: SessionShape | None
    outcome: Outcome
    last_event_ns: int = 0


class SessionStep:
    """Owns no state; ``apply``/``expire``/``flush`` map stored bytes to new stored bytes."""

    def __init__(self, *, idle_timeout_ns: int) -> None:
        self.idle_timeout_ns = idle_timeout_ns

    @classmethod
    def from_settings(cls, settings) -> SessionStep:
        return cls(idle_timeout_ns=int(settings.session_idle_timeout_s * 1e9))

    def apply(self, stored: bytes | None, span: SpanEvent) -> StepResult:
        entry = core.load(stored) if stored is not None else None
        if isinstance(entry, core.Tombstone):
            return StepResult(stored, None, "late", entry.last_event_ns)
        before = len(entry.parents) if entry is not None else 0
        state = core.fold(entry, span)
        if len(state.parents) == before:
            return StepResult(stored, None, "duplicate", state.last_event_ns)
        if state.closed:
            return self._close(state, "session_end", "closed", state.end_ns)
        return StepResult(state.to_bytes(), None, "folded", state.last_event_ns)

    def expire(self, stored: bytes | None, watermark_ns: int = 0) -> StepResult:
        """The idle clock ran out: close an open session, or drop a tombstone."""
        if stored is None:
            return StepResult(None, None, "expired")
        entry = core.load(stored)
        if isinstance(entry, core.Tombstone):
            return StepResult(None, None, "expired")
        return self._close(entry, "idle", "idle_closed", watermark_ns)

    def flush(self, stored: bytes) -> StepResult:
        """End of input: close what is open, drop tombstones."""
        entry = core.load(stored)
        if isinstance(entry, core.Tombstone):
            return StepResult(None, None, "expired")
        shape = core.close(entry, "flush")
        return StepResult(None, shape, "flushed")

    def last_event_ns(self, stored: bytes) -> int:
        return core.load(stored).last_event_ns

    def _close(self, state, closed_by, outcome, watermark_ns) -> StepResult:
        shape = core.close(state, closed_by)
        tomb = core.tombstone(state, closed_by, watermark_ns)
        return StepResult(tomb.to_bytes(), shape, outcome, tomb.last_event_ns)
