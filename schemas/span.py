"""SpanEvent v1: one record per agent span on topic ``agent.spans`` (see DESIGN.md).

>>> ev = SpanEvent.model_validate_json(
...     b'{"schema_version":1,"trace_id":"t","span_id":"s","session_id":"x","agent":"dev",'
...     b'"operation":"chat","input_tokens":10,"output_tokens":2,'
...     b'"start_time_unix_nano":1,"end_time_unix_nano":2,"custom":"kept"}')
>>> ev.attempt, ev.status, ev.model_extra
(1, 'ok', {'custom': 'kept'})
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from schemas.common import Contract, Id, Label, NonNegInt, Segment, Text, UnixNano

LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content"})
TOOL_OPERATIONS = frozenset({"execute_tool"})


class SpanEvent(Contract):
    schema_version: Literal[1] = 1
    trace_id: Id
    span_id: Id
    parent_span_id: Id | None = None
    session_id: Id
    agent: Label
    task_type: Label | None = None
    operation: Label
    model: Label | None = None
    route: Label | None = None
    input_tokens: NonNegInt = 0
    output_tokens: NonNegInt = 0
    context_limit: int | None = Field(None, gt=0, le=2**31)
    tool_name: Label | None = None
    attempt: int = Field(1, ge=1, le=1_000_000)
    reflection: bool = False
    status: Literal["ok", "error"] = "ok"
    error_type: Text | None = None
    cache_hit: bool | None = None
    cache_age_s: float | None = Field(None, ge=0.0)
    complexity: float | None = Field(None, ge=0.0, le=1.0)
    session_end: bool = False
    start_time_unix_nano: UnixNano
    end_time_unix_nano: UnixNano

    @model_validator(mode="after")
    def _end_not_before_start(self) -> SpanEvent:
        if self.end_time_unix_nano < self.start_time_unix_nano:
            raise ValueError(
                "end_time_unix_nano: end time is before start_time_unix_nano "
                f"({self.end_time_unix_nano} < {self.start_time_unix_nano})"
            )
        return self

    @property
    def segment(self) -> Segment:
        return Segment(agent=self.agent, task_type=self.task_type)

    @property
    def is_llm_call(self) -> bool:
        return self.operation in LLM_OPERATIONS

    @property
    def is_tool_call(self) -> bool:
        return self.operation in TOOL_OPERATIONS
