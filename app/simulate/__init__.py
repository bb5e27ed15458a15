"""Seedable synthetic agent workloads (SpanEvent v1) with ground truth.

Entry points: ``iter_spans`` / ``iter_records`` (spans), ``iter_sessions`` (spans plus
per-session truth), ``sidecar`` (ground truth), ``build`` (a named scenario) and
``policy_router(default_policy())`` (the pluggable router's default).
"""

from app.simulate.agents import SessionTruth, SimSession, generate_session
from app.simulate.generator import (
    arrivals,
    iter_records,
    iter_sessions,
    iter_spans,
    ordered,
    write_jsonl,
)
from app.simulate.routing import Router, default_policy, policy_router
from app.simulate.scenarios import SCENARIOS, Scenario, build
from app.simulate.truth import TruthTally, ground_truth, sidecar

__all__ = [
    "SCENARIOS", "Router", "Scenario", "SessionTruth", "SimSession", "TruthTally", "arrivals",
    "build", "default_policy", "generate_session", "ground_truth", "iter_records",
    "iter_sessions", "iter_spans", "ordered", "policy_router", "sidecar", "write_jsonl",
]
