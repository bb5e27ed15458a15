"""A recording: span lines folded into sessions by the stage-1 core, plus the little the
envelope needs beyond a ``SessionShape``: each LLM call's (input tokens, context limit), the
session's token totals and each segment's tool catalog.

Offline, a session is all of its spans in the file (no idle timeout), as in
``loadshape assumptions check``. Bad lines are skipped and remembered with their line
number, as a worker would dead-letter them.

>>> from schemas.span import SpanEvent
>>> def span(sid, op, **kw):
...     return SpanEvent(trace_id="t", span_id=sid, session_id="s1", agent="dev", operation=op,
...                      start_time_unix_nano=10**9, end_time_unix_nano=3 * 10**9, **kw)
>>> rec = record([span("r", "invoke_agent"), span("c", "chat", input_tokens=900,
...               output_tokens=100, context_limit=1000), span("k", "execute_tool",
...               tool_name="grep"), span("c", "chat", input_tokens=900, context_limit=1000)])
>>> rec.spans, rec.duration_s, dict(rec.tool_catalog)
(3, 2.0, {'dev': 1})
>>> s = rec.sessions[0]
>>> s.calls, s.tokens, s.shape.fanout
(((900, 1000),), 1000, 1)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from app.core.session import SessionState, close, fold
from app.otlp import OtlpDecodeError, map_json_lines
from schemas.session import SessionShape
from schemas.span import SpanEvent
from schemas.validation import decode_span

FORMATS = ("spans", "otlp-json")


@dataclass(frozen=True, slots=True)
class RecordedSession:
    shape: SessionShape
    calls: tuple[tuple[int, int | None], ...]  # (input_tokens, context_limit) per LLM call
    llm_output_tokens: int
    other_tokens: int  # input + output tokens of spans that are not LLM calls (embeddings...)

    @property
    def tokens(self) -> int:
        return sum(t for t, _ in self.calls) + self.llm_output_tokens + self.other_tokens

    @property
    def censored(self) -> bool:
        """A call reached its limit: the true context demand is unknown (at least the limit)."""
        return any(lim is not None and t >= lim for t, lim in self.calls)


@dataclass(frozen=True, slots=True)
class Recording:
    sessions: tuple[RecordedSession, ...]  # by session id
    tool_catalog: Mapping[str, int]  # segment key -> distinct tool names seen in it
    spans: int  # distinct spans folded
    start_ns: int
    end_ns: int

    @property
    def duration_s(self) -> float:
        """Event-time span of the recording; load figures are per second of it."""
        return (self.end_ns - self.start_ns) / 1e9

    def segment_sizes(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for s in self.sessions:
            sizes[s.shape.segment.key] = sizes.get(s.shape.segment.key, 0) + 1
        return dict(sorted(sizes.items()))


@dataclass(slots=True)
class _Extra:
    calls: list[tuple[int, int | None]] = field(default_factory=list)
    llm_out: int = 0
    other: int = 0


def record(spans: Iterable[SpanEvent]) -> Recording:
    """Fold spans into closed sessions (stage-1 core) and keep the per-call context."""
    states: dict[str, SessionState] = {}
    extras: dict[str, _Extra] = {}
    for span in spans:
        sid = span.session_id
        before = states[sid].spans if sid in states else 0
        states[sid] = st = fold(states.get(sid), span)
        if st.spans > before:  # a new span, not a replay: count its tokens once
            _add(extras.setdefault(sid, _Extra()), span)
    return _recording(states, extras)


def _add(extra: _Extra, span: SpanEvent) -> None:
    if span.is_llm_call:
        extra.calls.append((span.input_tokens, span.context_limit))
        extra.llm_out += span.output_tokens
    else:
        extra.other += span.input_tokens + span.output_tokens


def _recording(states: dict[str, SessionState], extras: dict[str, _Extra]) -> Recording:
    sessions, tools = [], {}
    for sid in sorted(states):
        st, ex = states[sid], extras[sid]
        shape = close(st, "session_end" if st.closed else "flush")
        tools.setdefault(shape.segment.key, set()).update(st.tools)
        # sorted calls: the per-call view must not depend on arrival order, like the fold
        sessions.append(RecordedSession(shape, tuple(sorted(ex.calls, key=_call_key)),
                                        ex.llm_out, ex.other))
    return Recording(
        sessions=tuple(sessions),
        tool_catalog=MappingProxyType({k: len(v) for k, v in sorted(tools.items())}),
        spans=sum(st.spans for st in states.values()),
        start_ns=min((st.start_ns for st in states.values()), default=0),
        end_ns=max((st.end_ns for st in states.values()), default=0),
    )


def _call_key(call: tuple[int, int | None]) -> tuple[int, int]:
    return call[0], -1 if call[1] is None else call[1]


@dataclass(frozen=True, slots=True)
class Rejected:
    line: int
    reason: str


@dataclass(slots=True)
class Intake:
    """Turns span-file lines into SpanEvents, remembering what it had to turn away.

    Mutable on purpose: it is filled while the spans stream into ``record``.

    >>> intake = Intake()
    >>> spans = list(intake.spans([b'{"oops": 1}\\n', b'\\n'], "spans"))
    >>> spans, intake.rejected[0].line, intake.rejected[0].reason[:24]
    ([], 1, 'trace_id: Field required')
    """

    rejected: list[Rejected] = field(default_factory=list)
    skipped_non_genai: int = 0

    def spans(self, lines: Iterable[bytes], fmt: str,
              context_windows: Mapping[str, int] = MappingProxyType({})) -> Iterator[SpanEvent]:
        if fmt == "otlp-json":
            yield from self._otlp(lines, context_windows)
            return
        for no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            decoded = decode_span(line.rstrip(b"\r\n"))
            if decoded.ok:
                yield decoded.value
            else:
                self.rejected.append(Rejected(no, decoded.reason))

    def _otlp(self, lines: Iterable[bytes], windows: Mapping[str, int]) -> Iterator[SpanEvent]:
        for no, batch in map_json_lines(lines, windows):
            if isinstance(batch, OtlpDecodeError):
                where = f" at {batch.field}" if batch.field else ""
                self.rejected.append(Rejected(no, f"{batch.code}{where}: {batch.reason}"))
                continue
            self.skipped_non_genai += batch.skipped_non_genai
            self.rejected.extend(Rejected(no, f"span rejected: {r.reason}") for r in batch.rejected)
            yield from batch.spans
