"""RoutingRecalibration contract (topic ``routing.recalibrations``, compacted, key policy_id)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from schemas.common import Contract, Id, Label, Segment, UnixNano
from schemas.policy import RoutingPolicy


class PolicyChange(Contract):
    model_config = ConfigDict(strict=False, allow_inf_nan=False, extra="forbid", frozen=True)

    segment: Segment
    field: Label
    old: Any
    new: Any


class RoutingRecalibration(Contract):
    model_config = ConfigDict(strict=False, allow_inf_nan=False, extra="allow", frozen=True)

    schema_version: Literal[1] = 1
    policy_id: Id
    version: int = Field(ge=1)
    created_at: UnixNano
    mode: Literal["propose", "auto"]
    cause: list[Id] = Field(default_factory=list)
    evidence: dict[str, Any] = Field(default_factory=dict)
    changes: list[PolicyChange] = Field(min_length=1)
    policy: RoutingPolicy
    signature: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
