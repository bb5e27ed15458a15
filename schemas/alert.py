"""Alert contract (topic ``loadshape.alerts``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict

from schemas.common import Contract, DistributionSummary, Id, Label, Segment, Text, UnixNano

AlertKind = Literal["drift", "assumption_broken", "resolved"]
Severity = Literal["info", "warning", "page"]


class Alert(Contract):
    model_config = ConfigDict(strict=False, allow_inf_nan=False, extra="allow", frozen=True)

    schema_version: Literal[1] = 1
    alert_id: Id
    kind: AlertKind
    metric: Label
    segment: Segment
    detector: Label
    severity: Severity
    detected_at: UnixNano
    baseline: DistributionSummary | None = None
    current: DistributionSummary | None = None
    assumption: dict[str, Any] | None = None
    message: Text
    resolves: Id | None = None
    resolved_kind: Literal["drift", "assumption_broken"] | None = None
