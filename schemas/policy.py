"""RoutingPolicy: versioned routing data the gateway serves.

A model catalog plus, per segment, complexity thresholds -> model, a context cap and a retry
budget. The first rule whose ``max_complexity`` is >= the task's complexity wins.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field, model_validator

from schemas.common import Contract, Id, Label, Segment


class ModelSpec(Contract):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid", frozen=True)

    name: Label
    tier: int = Field(ge=0, le=100, description="capability rank; higher is more capable")
    capability: float = Field(ge=0.0, le=1.0, description="highest task complexity it handles")
    context_window: int = Field(gt=0)


class RouteRule(Contract):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid", frozen=True)

    max_complexity: float = Field(ge=0.0, le=1.0)
    model: Label


class SegmentPolicy(Contract):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid", frozen=True)

    segment: Segment
    routes: list[RouteRule] = Field(min_length=1)
    context_cap: int = Field(gt=0)
    retry_budget: int = Field(ge=0, le=100)

    @model_validator(mode="after")
    def _routes_cover_all(self) -> SegmentPolicy:
        bounds = [r.max_complexity for r in self.routes]
        if bounds != sorted(bounds):
            raise ValueError("routes: max_complexity must be ascending")
        if bounds[-1] < 1.0:
            raise ValueError("routes: the last rule must have max_complexity 1.0")
        return self


class RoutingPolicy(Contract):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid", frozen=True)

    policy_id: Id
    version: int = Field(ge=0)
    models: list[ModelSpec] = Field(min_length=1)
    segments: list[SegmentPolicy] = Field(min_length=1)

    @model_validator(mode="after")
    def _models_in_catalog(self) -> RoutingPolicy:
        names = {m.name for m in self.models}
        for i, seg in enumerate(self.segments):
            for rule in seg.routes:
                if rule.model not in names:
                    raise ValueError(f"segments[{i}].routes: model {rule.model!r} is not in models")
        return self

    def model(self, name: str) -> ModelSpec:
        return next(m for m in self.models if m.name == name)

    def for_segment(self, segment: Segment) -> SegmentPolicy | None:
        """Most specific segment policy matching ``segment`` (task_type match beats agent-only)."""
        exact = [s for s in self.segments if s.segment == segment]
        if exact:
            return exact[0]
        broad = [s for s in self.segments if s.segment.task_type is None and s.segment.agent == segment.agent]
        if broad:
            return broad[0]
        return next((s for s in self.segments if s.segment.agent == "*"), None)
