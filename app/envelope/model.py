"""The envelope transform (pure): recorded sessions -> projected sessions.

``--complexity X`` scales each session's *work*, keeping each distribution's shape:

* counts (tool calls, LLM calls, parallel width, reflections, retries, errors, cache hits,
  structural spans, depth beyond 2) become ``X * count`` with stochastic rounding, so they
  stay integers and are right on average (``sround``);
* distinct tools scale too but not beyond the tools the segment was seen using;
* each LLM call's context demand becomes ``X * input_tokens``; under a cap (the routed
  policy cap, else the call's recorded ``context_limit``) the sent context saturates at the
  cap and a call that reaches it is a truncation;
* ``context_utilization``, ``context_tokens``, ``truncations`` and a derived ``complexity``
  are recomputed from the above as the stage-1 fold would; a declared complexity is scaled
  by X and clipped to 1.

``--usage X`` leaves every session as it is: it scales arrival rate only (``evaluate``).

One random stream per session, seeded by ``(seed, session_id)`` and drawn in a fixed order
whatever X is, so a projection is deterministic and each session's counts never decrease
as X grows. At X = 1 (no policy) a session is reproduced exactly.

>>> from app.envelope.recording import record
>>> from schemas.span import SpanEvent
>>> def span(sid, op, **kw):
...     return SpanEvent(trace_id="t", span_id=sid, session_id="s", agent="dev", operation=op,
...                      start_time_unix_nano=0, end_time_unix_nano=1, **kw)
>>> rec = record([span("c1", "chat", input_tokens=8000, context_limit=16384),
...               span("c2", "chat", input_tokens=12000, context_limit=16384)]
...              + [span(f"t{i}", "execute_tool", tool_name=f"k{i % 2}") for i in range(10)])
>>> p = project_session(rec.sessions[0], 1.5, seed=0, tool_catalog=2)
>>> p.shape.fanout, p.shape.distinct_tools, p.demand, p.shape.context_tokens
(15, 2, 18000, 16384)
>>> p.shape.truncations, p.shape.context_utilization
(1, 1.0)
>>> project_session(rec.sessions[0], 1.0, seed=0, tool_catalog=2).shape == rec.sessions[0].shape
True
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from app.core.complexity import derive_complexity
from app.envelope.capability import Capability, with_capabilities
from app.envelope.recording import RecordedSession, Recording
from schemas.common import Segment
from schemas.session import SessionShape

MAX_FACTOR = 1000


@dataclass(frozen=True, slots=True)
class Routed:
    """What the routing policy decides for one session."""

    model: str
    capability: float  # highest complexity the model handles
    cap: int  # effective context cap (segment cap, never above the model's window)
    window: int  # the model's context window


# (segment, complexity, context demand) -> decision; None = no policy: recorded limits
Router = Callable[[Segment, float, int], Routed]


@dataclass(frozen=True, slots=True)
class Envelope:
    """The what-if: usage and complexity factors, added capabilities, rounding seed."""

    usage: float = 1.0
    complexity: float = 1.0
    add: tuple[Capability, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("usage", "complexity"):
            value = getattr(self, name)
            # beyond x1000 it is another workload, and token sums would overflow floats
            if not (math.isfinite(value) and 0 < value <= MAX_FACTOR):
                raise ValueError(f"--{name} must be a number > 0 and <= {MAX_FACTOR}, got {value!r}")


@dataclass(frozen=True, slots=True)
class Projected:
    shape: SessionShape  # what the monitor would observe
    demand: int  # peak context demand, uncapped (a lower bound when censored)
    tokens: float  # input + output tokens of the session
    censored: bool  # the recorded demand hit its limit, so the true demand is unknown
    routed: Routed | None = None


def sround(value: float, rng: random.Random) -> int:
    """Round ``value`` up with probability equal to its fraction (always one draw).

    >>> sround(3.0, random.Random(0)), sround(2.5, random.Random(0)), sround(2.5, random.Random(1))
    (3, 2, 3)
    >>> rng = random.Random(7)
    >>> sum(sround(0.25, rng) for _ in range(10_000))   # right on average
    2513
    """
    low = math.floor(value)
    return low + (rng.random() < value - low)


def project(recording: Recording, envelope: Envelope,
            router: Router | None = None) -> tuple[Projected, ...]:
    """Every session (added capabilities' copies included) under the envelope's complexity."""
    sessions = with_capabilities(recording.sessions, envelope.add)
    catalog = dict(recording.tool_catalog)
    for cap in envelope.add:
        catalog[cap.name] = catalog.get(cap.like, 0)
    return tuple(
        project_session(s, envelope.complexity, seed=envelope.seed,
                        tool_catalog=catalog.get(s.shape.segment.key, 0), router=router)
        for s in sessions
    )


def project_session(rec: RecordedSession, x: float, *, seed: int, tool_catalog: int,
                    router: Router | None = None) -> Projected:
    s = rec.shape
    rng = random.Random(f"{seed}:{s.session_id}")
    counts = _counts(s, x, rng, tool_catalog)
    demand = round(max((t for t, _ in rec.calls), default=0) * x)
    routed = None
    if router is not None:
        # the gateway routes on the task as the recording shows it; caps apply after
        pre = _context(rec.calls, x, None)
        routed = router(s.segment, _complexity(s, x, counts, pre.tokens), demand)
    ctx = _context(rec.calls, x, None if routed is None else routed.cap)
    llm_ratio = counts["llm_calls"] / s.llm_calls if s.llm_calls else 1.0
    truncations = _truncations(ctx.truncated, llm_ratio, counts["llm_calls"], rng)
    shape = s.model_copy(update={
        **counts,
        "context_tokens": ctx.tokens, "context_utilization": ctx.utilization,
        "truncations": truncations,
        "retry_rate": counts["retries"] / counts["spans"] if counts["spans"] else 0.0,
        "complexity": _complexity(s, x, counts, ctx.tokens),
        "context_limit": s.context_limit if routed is None else routed.cap,
    })
    tokens = (ctx.sent + rec.llm_output_tokens) * llm_ratio + rec.other_tokens * x
    return Projected(shape, demand, tokens, rec.censored, routed)


def _counts(s: SessionShape, x: float, rng: random.Random, tool_catalog: int) -> dict[str, int]:
    """Scaled counts, drawn in a fixed order; each stays consistent with the ones it bounds."""
    llm = sround(s.llm_calls * x, rng)
    llm = max(llm, 1) if s.llm_calls else 0  # a session that answered still answers
    fanout = sround(s.fanout * x, rng)
    other = s.spans - s.fanout - s.llm_calls  # root, plan and agent spans: the root stays
    spans = fanout + llm + (other if other <= 1 else 1 + sround((other - 1) * x, rng))
    tools_seen = min(fanout, max(tool_catalog, s.distinct_tools))  # new tasks, known tools
    return {
        "llm_calls": llm,
        "fanout": fanout,
        "spans": spans,
        "max_parallel_fanout": _within(sround(s.max_parallel_fanout * x, rng), fanout,
                                       s.max_parallel_fanout),
        "distinct_tools": _within(sround(s.distinct_tools * x, rng), tools_seen, s.distinct_tools),
        "reflections": min(sround(s.reflections * x, rng), llm),
        "retries": min(sround(s.retries * x, rng), spans),
        "errors": min(sround(s.errors * x, rng), spans),
        "cache_hits": min(sround(s.cache_hits * x, rng), fanout),
        # depth beyond a root and its children is nesting, which grows with the work
        "depth": s.depth if s.depth <= 2 else 2 + sround((s.depth - 2) * x, rng),
    }


def _within(value: int, upper: int, original: int) -> int:
    """``value`` clipped to ``upper``, but at least 1 where there was some and still can be."""
    return min(max(value, 1 if original else 0), upper)


@dataclass(frozen=True, slots=True)
class _Context:
    tokens: int  # peak context sent
    utilization: float | None
    truncated: int  # recorded calls whose scaled demand reaches the cap
    sent: int  # context tokens sent over the recorded calls


def _context(calls: Sequence[tuple[int, int | None]], x: float, cap: int | None) -> _Context:
    peak, util, truncated, sent = 0, None, 0, 0
    for tokens, limit in calls:
        demand, lim = round(tokens * x), cap if cap is not None else limit
        out = demand if lim is None else min(demand, lim)  # the cap clips what is sent
        peak, sent = max(peak, out), sent + out
        if lim is not None:
            util = max(util or 0.0, out / lim)
            truncated += demand >= lim
    return _Context(peak, util, truncated, sent)


def _truncations(truncated: int, llm_ratio: float, llm: int, rng: random.Random) -> int:
    if not truncated:
        rng.random()  # keep the stream aligned whatever X is
        return 0
    return min(max(sround(truncated * llm_ratio, rng), 1), llm)


def _complexity(s: SessionShape, x: float, counts: Mapping[str, int], context_tokens: int) -> float:
    if s.complexity_declared:
        return min(s.complexity * x, 1.0)
    return derive_complexity(fanout=counts["fanout"], llm_calls=counts["llm_calls"],
                             depth=counts["depth"], distinct_tools=counts["distinct_tools"],
                             context_tokens=context_tokens)
