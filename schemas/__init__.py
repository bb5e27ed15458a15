"""Event contracts of loadshape (DESIGN.md): SpanEvent v1, SessionShape, Alert,
RoutingPolicy, RoutingRecalibration and DeadLetter, as pydantic v2 models; and Heartbeat,
stage 1's event-time progress between the sessions on ``loadshape.sessions``."""

from schemas.alert import Alert
from schemas.common import DistributionSummary, Segment
from schemas.deadletter import DeadLetter
from schemas.heartbeat import WATERMARK_KEY, Heartbeat
from schemas.policy import ModelSpec, RouteRule, RoutingPolicy, SegmentPolicy
from schemas.recalibration import PolicyChange, RoutingRecalibration
from schemas.session import METRIC_UNITS, METRICS, SessionShape
from schemas.span import SpanEvent
from schemas.validation import Decoded, decode, decode_span

CONTRACTS = {
    "span_event": SpanEvent,
    "session_shape": SessionShape,
    "alert": Alert,
    "routing_policy": RoutingPolicy,
    "routing_recalibration": RoutingRecalibration,
    "dead_letter": DeadLetter,
    "heartbeat": Heartbeat,
}

__all__ = [
    "Alert", "CONTRACTS", "DeadLetter", "Decoded", "DistributionSummary", "Heartbeat", "METRICS",
    "METRIC_UNITS", "ModelSpec", "PolicyChange", "RouteRule", "RoutingPolicy",
    "RoutingRecalibration", "Segment", "SegmentPolicy", "SessionShape", "SpanEvent",
    "WATERMARK_KEY", "decode", "decode_span",
]
