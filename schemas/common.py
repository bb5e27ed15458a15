"""Shared field types and base models for the event contracts."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# Identifiers and labels: bounded, so a hostile producer cannot grow our state with one field.
Id = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Text = Annotated[str, StringConstraints(max_length=4096)]
NonNegInt = Annotated[int, Field(ge=0, le=2**53)]
UnixNano = Annotated[int, Field(ge=0, le=2**63 - 1)]
Quantile = Annotated[float, Field(ge=0.0, le=1.0)]


class Contract(BaseModel):
    """Base for every wire model: strict types, no NaN/inf, unknown fields kept."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="allow", frozen=True)


class Segment(Contract):
    """A workload segment: the agent (capability) and an optional finer task type.

    >>> Segment(agent="support").key
    'support'
    >>> Segment(agent="support", task_type="refund").key
    'support/refund'
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    agent: Label
    task_type: Label | None = None

    @property
    def key(self) -> str:
        return self.agent if self.task_type is None else f"{self.agent}/{self.task_type}"

    @classmethod
    def from_key(cls, key: str) -> Segment:
        agent, _, task_type = key.partition("/")
        return cls(agent=agent, task_type=task_type or None)

    def matches(self, other: Segment) -> bool:
        """True if ``other`` falls in this segment (a segment without task_type matches all)."""
        return self.agent == other.agent and self.task_type in (None, other.task_type)


class DistributionSummary(Contract):
    """n/mean/p50/p95/p99 of a metric over a window."""

    model_config = ConfigDict(strict=False, allow_inf_nan=False, extra="forbid", frozen=True)

    n: NonNegInt
    mean: float
    p50: float
    p95: float
    p99: float
