"""SessionShape: the load shape of one closed agent session (topic ``loadshape.sessions``).

Stage 1 folds a session's spans into this record; stage 2 keeps distributions of its
metrics per segment.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from schemas.common import Contract, Id, Label, NonNegInt, Segment, UnixNano

# Per-session load-shape metrics (DESIGN.md) that stage 2 keeps distributions of, with units.
METRIC_UNITS: dict[str, str] = {
    "context_utilization": "ratio",
    "context_tokens": "tokens",
    "fanout": "count",
    "max_parallel_fanout": "count",
    "retry_rate": "ratio",
    "reflections": "count",
    "llm_calls": "count",
    "depth": "count",
    "distinct_tools": "count",
    "complexity": "ratio",
    "truncations": "count",
    "cache_age_s": "seconds",
}
METRICS: tuple[str, ...] = tuple(METRIC_UNITS)


class SessionShape(Contract):
    model_config = ConfigDict(strict=False, allow_inf_nan=False, extra="allow", frozen=True)

    schema_version: Literal[1] = 1
    session_id: Id
    segment: Segment
    start_time_unix_nano: UnixNano
    end_time_unix_nano: UnixNano
    closed_by: Literal["session_end", "idle", "flush"]
    spans: NonNegInt
    # load-shape metrics
    context_utilization: float | None = Field(None, ge=0.0)
    context_tokens: NonNegInt = 0
    fanout: NonNegInt = 0
    max_parallel_fanout: NonNegInt = 0
    retry_rate: float = Field(0.0, ge=0.0, le=1.0)
    reflections: NonNegInt = 0
    llm_calls: NonNegInt = 0
    depth: NonNegInt = 0
    distinct_tools: NonNegInt = 0
    complexity: float = Field(0.0, ge=0.0, le=1.0)
    complexity_declared: bool = False
    truncations: NonNegInt = 0
    cache_age_s: float | None = Field(None, ge=0.0, description="max age of cache hits")
    cache_hits: NonNegInt = 0
    # routing facts, for recalibration and misroute accounting
    retries: NonNegInt = 0
    errors: NonNegInt = 0
    models: list[Label] = Field(default_factory=list)
    routes: list[Label] = Field(default_factory=list)
    context_limit: int | None = Field(None, gt=0)

    def metric(self, name: str) -> float | None:
        """Value of a load-shape metric by name (None when the session has no value)."""
        value = getattr(self, name)
        return None if value is None else float(value)
