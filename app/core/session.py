"""Stage 1: fold one session's spans into compact state, then close it into a ``SessionShape``.

The state keeps aggregates (counts and maxima, which commute) plus, per span, only its id
and parent id: enough to drop replays and to measure the span tree at close. So the shape a
session closes with does not depend on the order its spans arrived in.

The segment is taken from the session's *earliest* span by ``(start_time, span_id)`` --
normally the root ``invoke_agent`` span -- not from whichever span happened to arrive first.
A span id is folded once per session (a replay is identical; were two differing spans to
share an id, the first to arrive would win). Parentless tool calls count as siblings.

>>> from schemas.span import SpanEvent
>>> def span(sid, parent=None, **kw):
...     base = dict(trace_id="t", span_id=sid, parent_span_id=parent, session_id="s1",
...                 agent="support", operation="execute_tool", tool_name="kb",
...                 start_time_unix_nano=10, end_time_unix_nano=20)
...     return SpanEvent(**{**base, **kw})
>>> st = fold(None, span("b", "root", attempt=2))          # a child may come first
>>> st = fold(st, span("a", "root"))
>>> st = fold(st, span("b", "root", attempt=2))            # replayed: ignored
>>> st = fold(st, span("root", operation="invoke_agent", tool_name=None, session_end=True,
...                    start_time_unix_nano=5, end_time_unix_nano=30))
>>> st.closed
True
>>> shape = close(st, "session_end")
>>> shape.spans, shape.fanout, shape.max_parallel_fanout, shape.retries, shape.depth
(3, 2, 2, 1, 2)
>>> tomb = tombstone(st)
>>> is_expired(tomb, watermark_unix_nano=31, idle_timeout_ns=100)
False
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import orjson

from app.core.complexity import derive_complexity
from app.core.span_tree import tree_depth
from schemas.common import Segment
from schemas.session import SessionShape
from schemas.span import LLM_OPERATIONS, TOOL_OPERATIONS, SpanEvent

ClosedBy = Literal["session_end", "idle", "flush"]

# Stands for "no parent" in the compact parent map; span ids are never empty (min_length=1).
NO_PARENT = ""

# The most one span can add to a state's stored bytes: six strings of at most 128 characters
# (its id and parent id in ``parents``, the parent again in ``tool_parents``, a tool, model and
# route name), each up to 6 bytes a character in JSON (a control character is escaped as
# \u00XX), with quotes, separators and a count.
MAX_SPAN_BYTES = 6 * (6 * 128 + 24)
FULL = -1  # ``SessionState.check_at`` of a state that takes no new span

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
    # span count from which the next new span needs a look at the stored size (``has_room``);
    # FULL: none fits. Derived, kept so a restored state decides as the uninterrupted one did.
    check_at: int = 0

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
    span would cost more than the fold itself. ``span`` is a ``SpanEvent`` or anything with
    its fields (``schemas.fastspan.SpanRecord``). Runs once per span: kept flat on purpose.
    """
    sid = span.span_id
    if state is None:  # empty; the span itself is added below
        start = span.start_time_unix_nano
        state = SessionState(span.session_id, span.agent, span.task_type, start, sid, start,
                             span.end_time_unix_nano)
    elif span.session_id != state.session_id:
        raise ValueError(f"span of session {span.session_id!r} folded into {state.session_id!r}")
    elif sid in state.parents:
        return state
    return fold_new(state, span)


def fold_new(state: SessionState, span: SpanEvent) -> SessionState:
    """``fold`` of a span its caller knows to be of ``state``'s session and new to it (an
    open session's next span, once per span: the caller has made both checks already)."""
    start = span.start_time_unix_nano
    end = span.end_time_unix_nano
    sid = span.span_id
    parent = span.parent_span_id or NO_PARENT
    state.parents[sid] = parent
    # times, and the segment from the earliest span by (start, span id)
    if start < state.start_ns:
        state.start_ns = start
    if end > state.end_ns:
        state.end_ns = end
    # (start, sid) < (seg start, seg id), with one int comparison when start is later (usual)
    if start <= state.seg_start_ns and (start < state.seg_start_ns or sid < state.seg_span_id):
        state.agent, state.task_type = span.agent, span.task_type
        state.seg_start_ns, state.seg_span_id = start, sid
    if span.attempt > 1:
        state.retries += 1
    if span.reflection:
        state.reflections += 1
    if span.status == "error":
        state.errors += 1
    if span.session_end:
        state.closed = True
    complexity = span.complexity
    if complexity is not None and (
        state.declared_complexity is None or complexity > state.declared_complexity
    ):
        state.declared_complexity = complexity
    op = span.operation
    limit = span.context_limit
    if op in LLM_OPERATIONS:
        state.llm_calls += 1
        tokens = span.input_tokens
        if tokens > state.context_tokens:
            state.context_tokens = tokens
        if limit is not None:
            util = tokens / limit
            if state.context_utilization is None or util > state.context_utilization:
                state.context_utilization = util
            if tokens >= limit:
                state.truncations += 1
    elif op in TOOL_OPERATIONS:
        state.tool_calls += 1
        tool_parents = state.tool_parents
        tool_parents[parent] = tool_parents.get(parent, 0) + 1
        tool = span.tool_name
        if tool is not None:
            state.tools[tool] = state.tools.get(tool, 0) + 1
    # cache and routing facts
    if span.cache_hit:
        state.cache_hits += 1
        age = span.cache_age_s
        if age is not None and (state.cache_age_s is None or age > state.cache_age_s):
            state.cache_age_s = age
    model = span.model
    if model is not None:
        state.models[model] = state.models.get(model, 0) + 1
    route = span.route
    if route is not None:
        state.routes[route] = state.routes.get(route, 0) + 1
    if limit is not None and (state.context_limit is None or limit > state.context_limit):
        state.context_limit = limit
    return state


def has_room(state: SessionState, max_bytes: int) -> bool:
    """Whether ``state`` may take one more new span and still be stored in ``max_bytes``.

    Its stored bytes are measured only every so many spans: after a measurement, the next is
    due once as many new spans came as surely fit in the room left (``MAX_SPAN_BYTES`` each).
    A state that is full stays full (an open session only grows).

    >>> st = SessionState("s", "a", None, 0, "r", 0, 1, parents={"r": NO_PARENT})
    >>> has_room(st, 10 * MAX_SPAN_BYTES), st.check_at   # measured: 9 more surely fit
    (True, 10)
    >>> has_room(st, MAX_SPAN_BYTES), st.check_at
    (False, -1)
    """
    if state.check_at == FULL:
        return False
    spare = (max_bytes - len(state.to_bytes())) // MAX_SPAN_BYTES
    state.check_at = len(state.parents) + spare if spare > 0 else FULL
    return spare > 0


@lru_cache(maxsize=4096)  # bounded: segment names come from the spans
def _segment(agent: str, task_type: str | None) -> Segment:
    """The (frozen) ``Segment``, validated once per segment rather than once per session."""
    return Segment(agent=agent, task_type=task_type)


def close(state: SessionState, closed_by: ClosedBy) -> SessionShape:
    """The session's load shape. The result depends only on the set of spans folded."""
    # model_validate of a dict: the same validation as SessionShape(**fields), minus the
    # keyword plumbing of BaseModel.__init__ (~15% of the call, once per session)
    return SessionShape.model_validate(shape_fields(state, closed_by))


class SessionValues:
    """A closed session's ``SessionShape`` fields as ``shape_fields`` computed them, not
    validated: for stage 2 in the same process (replay), which reads only attributes.

    Validating costs as much per session as any stage-2 metric does, and proves nothing
    there: the values come from validated spans (ids and labels copied, counts, a ratio of
    counts, maxima of bounded inputs). ``shape()`` is the validated ``SessionShape``, which
    anything that leaves the process (a published or written session) must take instead.
    """

    def __init__(self, fields: dict) -> None:
        self.__dict__ = fields

    def shape(self) -> SessionShape:
        return SessionShape.model_validate(self.__dict__)


def shape_fields(state: SessionState, closed_by: ClosedBy) -> dict:
    """The fields ``close`` validates into the session's ``SessionShape``."""
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
    return {
        "session_id": state.session_id,
        "segment": _segment(state.agent, state.task_type),
        "start_time_unix_nano": state.start_ns, "end_time_unix_nano": state.end_ns,
        "closed_by": closed_by, "spans": spans,
        "context_utilization": state.context_utilization, "context_tokens": state.context_tokens,
        "fanout": state.tool_calls,
        "max_parallel_fanout": max(state.tool_parents.values()) if state.tool_parents else 0,
        "retry_rate": state.retries / spans if spans else 0.0, "reflections": state.reflections,
        "llm_calls": state.llm_calls, "depth": depth, "distinct_tools": distinct_tools,
        "complexity": complexity, "complexity_declared": declared is not None,
        "truncations": state.truncations, "cache_age_s": state.cache_age_s,
        "cache_hits": state.cache_hits, "retries": state.retries, "errors": state.errors,
        "models": sorted(state.models), "routes": sorted(state.routes),
        "context_limit": state.context_limit,
    }


def is_idle(state: SessionState, watermark_unix_nano: int, idle_timeout_ns: int) -> bool:
    """True once the event-time watermark is past the session's last end time + timeout."""
    return state.end_ns + idle_timeout_ns < watermark_unix_nano


def tombstone(state: SessionState, closed_by: ClosedBy = "session_end",
              watermark_unix_nano: int = 0) -> Tombstone:
    """A tiny marker that replaces a closed session's state (which can then be freed).

    It lives from the later of the session's last event and the watermark at close (an
    idle close happens long after the last event) for one idle timeout.
    """
    end = state.end_ns  # the later of the two, as max() (without its call) picks it
    return Tombstone(state.session_id, watermark_unix_nano if watermark_unix_nano > end else end,
                     closed_by)


def is_expired(tomb: Tombstone, watermark_unix_nano: int, idle_timeout_ns: int) -> bool:
    """True when the tombstone may be dropped: the watermark is one idle timeout past it."""
    return tomb.closed_at_ns + idle_timeout_ns < watermark_unix_nano
