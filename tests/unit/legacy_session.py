"""Frozen copy of app/core/session.py before the stage-1 fold was flattened: the reference that
tests/unit/test_stage1_equivalence.py holds the live fold to."""
# ruff: noqa
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import orjson

from schemas.common import Segment
from schemas.session import SessionShape
from schemas.span import LLM_OPERATIONS, TOOL_OPERATIONS, SpanEvent

ClosedBy = Literal["session_end", "idle", "flush"]

# Stands for "no parent" in the compact parent map; span ids are never empty (min_length=1).
NO_PARENT = ""

# Derived complexity: weight, metric, half-saturation point. Each term x / (x + k) rises
# monotonically from 0 towards 1 and the weights sum to 1, so the score is in [0, 1).
COMPLEXITY_TERMS: tuple[tuple[float, str, float], ...] = (
    (0.30, "fanout", 8.0),
    (0.20, "llm_calls", 6.0),
    (0.15, "extra_depth", 2.0),
    (0.15, "distinct_tools", 4.0),
    (0.20, "context_tokens", 32_000.0),
)


@dataclass(slots=True)
class SessionState:
    """Everything stage 1 keeps for one open session (plain data; see module doc)."""

    session_id: str
    agent: str
    task_type: str | None
    seg_start_ns: int  # (start, span id) of the span the segment came from
    seg_span_id: str
    start_ns: int
    end_ns: int
    closed: bool = False
    parents: dict[str, str] = field(default_factory=dict)  # span id -> parent id: dedupe, depth
    tool_parents: dict[str, int] = field(default_factory=dict)  # parent id -> tool calls under it
    llm_calls: int = 0
    tool_calls: int = 0
    retries: int = 0
    reflections: int = 0
    errors: int = 0
    truncations: int = 0
    cache_hits: int = 0
    context_tokens: int = 0
    context_utilization: float | None = None
    context_limit: int | None = None
    cache_age_s: float | None = None
    declared_complexity: float | None = None
    tools: dict[str, int] = field(default_factory=dict)  # name -> calls (dict: JSON-able set)
    models: dict[str, int] = field(default_factory=dict)
    routes: dict[str, int] = field(default_factory=dict)

    @property
    def spans(self) -> int:
        return len(self.parents)

    @property
    def last_event_ns(self) -> int:
        """Event time the idle clock runs from."""
        return self.end_ns

    def to_bytes(self) -> bytes:
        # Sorted keys: equal states serialise to equal bytes whatever the arrival order.
        return orjson.dumps(self, option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_bytes(cls, raw: bytes) -> SessionState:
        return cls(**orjson.loads(raw))


@dataclass(frozen=True, slots=True)
class Tombstone:
    """What is left of a closed session: enough to recognise (and drop) its late spans."""

    session_id: str
    closed_at_ns: int
    closed_by: str

    @property
    def last_event_ns(self) -> int:
        return self.closed_at_ns

    def to_bytes(self) -> bytes:
        return orjson.dumps(self)


def load(raw: bytes) -> SessionState | Tombstone:
    """Decode a stored entry, which is either an open session's state or a tombstone.

    >>> load(Tombstone("s", 5, "idle").to_bytes())
    Tombstone(session_id='s', closed_at_ns=5, closed_by='idle')
    """
    data = orjson.loads(raw)
    return Tombstone(**data) if "closed_at_ns" in data else SessionState(**data)


def fold(state: SessionState | None, span: SpanEvent) -> SessionState:
    """Add ``span`` to its session's state; a span id seen before changes nothing.

    Updates ``state`` in place and returns it: the caller owns the state, and copying it per
    span would cost more than the fold itself.
    """
    if state is None:  # empty; the span itself is added below
        state = SessionState(span.session_id, span.agent, span.task_type,
                             span.start_time_unix_nano, span.span_id,
                             span.start_time_unix_nano, span.end_time_unix_nano)
    elif span.session_id != state.session_id:
        raise ValueError(f"span of session {span.session_id!r} folded into {state.session_id!r}")
    sid = span.span_id
    parents = state.parents
    if sid in parents:
        return state
    parent = span.parent_span_id or NO_PARENT
    parents[sid] = parent
    _fold_times(state, span, sid)
    if span.attempt > 1:
        state.retries += 1
    if span.reflection:
        state.reflections += 1
    if span.status == "error":
        state.errors += 1
    if span.session_end:
        state.closed = True
    if span.complexity is not None and (
        state.declared_complexity is None or span.complexity > state.declared_complexity
    ):
        state.declared_complexity = span.complexity
    op = span.operation
    if op in LLM_OPERATIONS:
        _fold_llm(state, span)
    elif op in TOOL_OPERATIONS:
        state.tool_calls += 1
        state.tool_parents[parent] = state.tool_parents.get(parent, 0) + 1
        if span.tool_name is not None:
            state.tools[span.tool_name] = state.tools.get(span.tool_name, 0) + 1
    _fold_cache_routing(state, span)
    return state


def _fold_times(state: SessionState, span: SpanEvent, sid: str) -> None:
    start = span.start_time_unix_nano
    if start < state.start_ns:
        state.start_ns = start
    if span.end_time_unix_nano > state.end_ns:
        state.end_ns = span.end_time_unix_nano
    if (start, sid) < (state.seg_start_ns, state.seg_span_id):
        state.agent, state.task_type = span.agent, span.task_type
        state.seg_start_ns, state.seg_span_id = start, sid


def _fold_llm(state: SessionState, span: SpanEvent) -> None:
    state.llm_calls += 1
    tokens, limit = span.input_tokens, span.context_limit
    if tokens > state.context_tokens:
        state.context_tokens = tokens
    if limit is not None:
        util = tokens / limit
        if state.context_utilization is None or util > state.context_utilization:
            state.context_utilization = util
        if tokens >= limit:
            state.truncations += 1


def _fold_cache_routing(state: SessionState, span: SpanEvent) -> None:
    if span.cache_hit:
        state.cache_hits += 1
        age = span.cache_age_s
        if age is not None and (state.cache_age_s is None or age > state.cache_age_s):
            state.cache_age_s = age
    if span.model is not None:
        state.models[span.model] = state.models.get(span.model, 0) + 1
    if span.route is not None:
        state.routes[span.route] = state.routes.get(span.route, 0) + 1
    limit = span.context_limit
    if limit is not None and (state.context_limit is None or limit > state.context_limit):
        state.context_limit = limit


def tree_depth(parents: dict[str, str]) -> int:
    """Levels in the span forest; a span whose parent was never seen counts as a root.

    Walks are memoised, so this is linear in the spans. A parent cycle (only hostile input
    can make one) is cut where the walk meets it; visiting ids in sorted order keeps even
    that independent of arrival order.

    >>> tree_depth({"r": "", "a": "r", "b": "a", "c": "missing"})
    3
    >>> tree_depth({"x": "y", "y": "x"}), tree_depth({})
    (2, 0)
    """
    depth: dict[str, int] = {}
    for sid in sorted(parents):
        path: list[str] = []
        on_path: set[str] = set()
        cur = sid
        while cur in parents and cur not in depth and cur not in on_path:
            path.append(cur)
            on_path.add(cur)
            cur = parents[cur]
        base = depth.get(cur, 0)  # 0 above a root, an unknown parent or a cycle
        for i, node in enumerate(reversed(path), start=1):
            depth[node] = base + i
    return max(depth.values(), default=0)


def derive_complexity(*, fanout: int, llm_calls: int, depth: int, distinct_tools: int,
                      context_tokens: int) -> float:
    """Complexity in [0, 1) from the other metrics, non-decreasing in each of them.

    ``extra_depth`` is depth beyond 2 (a root and its direct children is the flat baseline).

    >>> derive_complexity(fanout=0, llm_calls=0, depth=1, distinct_tools=0, context_tokens=0)
    0.0
    >>> derive_complexity(fanout=8, llm_calls=6, depth=4, distinct_tools=4, context_tokens=32000)
    0.5
    """
    values = {"fanout": fanout, "llm_calls": llm_calls, "extra_depth": max(depth - 2, 0),
              "distinct_tools": distinct_tools, "context_tokens": context_tokens}
    score = sum(w * values[name] / (values[name] + k) for w, name, k in COMPLEXITY_TERMS)
    return round(min(score, 1.0), 6)


def close(state: SessionState, closed_by: ClosedBy) -> SessionShape:
    """The session's load shape. The result depends only on the set of spans folded."""
    spans = state.spans
    depth = tree_depth(state.parents)
    distinct_tools = len(state.tools)
    declared = state.declared_complexity
    if declared is None:
        complexity = derive_complexity(
            fanout=state.tool_calls, llm_calls=state.llm_calls, depth=depth,
            distinct_tools=distinct_tools, context_tokens=state.context_tokens)
    else:
        complexity = declared
    return SessionShape(
        session_id=state.session_id,
        segment=Segment(agent=state.agent, task_type=state.task_type),
        start_time_unix_nano=state.start_ns, end_time_unix_nano=state.end_ns,
        closed_by=closed_by, spans=spans,
        context_utilization=state.context_utilization, context_tokens=state.context_tokens,
        fanout=state.tool_calls, max_parallel_fanout=max(state.tool_parents.values(), default=0),
        retry_rate=state.retries / spans if spans else 0.0, reflections=state.reflections,
        llm_calls=state.llm_calls, depth=depth, distinct_tools=distinct_tools,
        complexity=complexity, complexity_declared=declared is not None,
        truncations=state.truncations, cache_age_s=state.cache_age_s,
        cache_hits=state.cache_hits, retries=state.retries, errors=state.errors,
        models=sorted(state.models), routes=sorted(state.routes),
        context_limit=state.context_limit,
    )


def is_idle(state: SessionState, watermark_unix_nano: int, idle_timeout_ns: int) -> bool:
    """True once the event-time watermark is past the session's last end time + timeout."""
    return state.end_ns + idle_timeout_ns < watermark_unix_nano


def tombstone(state: SessionState, closed_by: ClosedBy = "session_end",
              watermark_unix_nano: int = 0) -> Tombstone:
    """A tiny marker that replaces a closed session's state (which can then be freed).

    It lives from the later of the session's last event and the watermark at close (an
    idle close happens long after the last event) for one idle timeout.
    """
    return Tombstone(state.session_id, max(state.end_ns, watermark_unix_nano), closed_by)


def is_expired(tomb: Tombstone, watermark_unix_nano: int, idle_timeout_ns: int) -> bool:
    """True when the tombstone may be dropped: the watermark is one idle timeout past it."""
    return tomb.closed_at_ns + idle_timeout_ns < watermark_unix_nano
