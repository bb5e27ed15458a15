"""Gateway acceptance and routing state (pure: no I/O, no clock, no logging).

``evaluate`` decides whether a raw recalibration message may replace the served policy.
Checks, in order (the first failure is the reason):

``invalid_schema``   not a JSON object / fails the RoutingRecalibration contract, or its
                     ``policy`` disagrees with its own ``policy_id``/``version``
``missing_signature`` no ``signature``
``bad_signature``    HMAC does not verify (forged or tampered)
``proposal_only``    mode ``propose`` (for a human), unless proposals are accepted
``wrong_policy``     another ``policy_id`` than the served one
``stale_version``    version not newer than the served one
``unknown_model``    a model not in the served catalog (or with a changed spec)
``cap_above_window`` a context cap above every window of the segment's route models
``step_too_large``   outside ``Guardrails`` (see ``app.loop.guardrails``)

The signature is checked before the body is validated: nothing unauthenticated is parsed
beyond JSON. ``Gateway`` swaps one immutable policy reference, so ``route`` always sees a
whole policy. In ``shadow`` mode it records what would change and keeps serving.

>>> from app.loop.policy import load_policy, EXAMPLE_POLICY
>>> gw = Gateway(load_policy(EXAMPLE_POLICY), key=b"k")
>>> gw.offer(b'{"policy_id": "reference"}').reason
'missing_signature'
>>> gw.offer(b"[1, 2]").line()
{'version': None, 'accepted': False, 'reason': 'invalid_schema'}
>>> gw.counters
{'applied': 0, 'shadowed': 0, 'rejected': {'invalid_schema': 1, 'missing_signature': 1}}
>>> gw.route({"agent": "support", "complexity": 0.9}).model
'opus-l'
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from app.loop import guardrails as gr
from app.loop.policy import RouteDecision, policy_diff, route
from app.loop.signing import Key, verify
from schemas.common import Segment
from schemas.policy import RoutingPolicy
from schemas.recalibration import PolicyChange, RoutingRecalibration
from schemas.validation import explain

REASONS = (
    "invalid_schema", "missing_signature", "bad_signature", "proposal_only", "wrong_policy",
    "stale_version", "unknown_model", "cap_above_window", "step_too_large",
)


@dataclass(frozen=True, slots=True)
class Verdict:
    accepted: bool
    reason: str  # "ok" or one of REASONS
    version: int | None = None
    detail: str = ""
    recalibration: RoutingRecalibration | None = None
    changes: tuple[PolicyChange, ...] = ()

    def line(self) -> dict[str, Any]:
        """The ``gateway check`` output record."""
        return {"version": self.version, "accepted": self.accepted, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Features:
    """What the gateway knows about a task when routing it."""

    agent: str
    task_type: str | None = None
    complexity: float = 0.0
    context_demand: int | None = None


def _reject(reason: str, version: Any = None, detail: str = "") -> Verdict:
    return Verdict(False, reason, version if isinstance(version, int) else None, detail)


def evaluate(
    served: RoutingPolicy | None,
    raw: bytes | str,
    key: Key,
    guardrails: gr.Guardrails = gr.Guardrails(),
    accept_proposals: bool = False,
) -> Verdict:
    """Accept or reject one raw message against the served policy (None: first policy)."""
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        return _reject("invalid_schema", detail=f"not JSON: {exc}")
    if not isinstance(msg, dict):
        return _reject("invalid_schema", detail="not a JSON object")
    version = msg.get("version")
    if msg.get("signature") is None:
        return _reject("missing_signature", version)
    if not verify(msg, key):
        return _reject("bad_signature", version)
    try:
        rec = RoutingRecalibration.model_validate(msg)
    except ValidationError as err:
        return _reject("invalid_schema", version, explain(err)[0])
    return _judge(served, rec, guardrails, accept_proposals)


def _judge(served, rec: RoutingRecalibration, g: gr.Guardrails, accept_proposals: bool) -> Verdict:
    new, v = rec.policy, rec.version
    if new.policy_id != rec.policy_id or new.version != v:
        return _reject("invalid_schema", v, "policy.policy_id/version differ from the message's")
    if rec.mode == "propose" and not accept_proposals:
        return _reject("proposal_only", v, "mode 'propose' awaits a human")
    if served is not None:
        why = _against_served(served, new, g)
        if why is not None:
            return _reject(why[0], v, why[1])
    for seg in new.segments:
        if (why := gr.window_violation(new, seg)) is not None:
            return _reject("cap_above_window", v, why)
    changes = tuple(policy_diff(served, new)) if served is not None else ()
    return Verdict(True, "ok", v, "", rec, changes)


def _against_served(served: RoutingPolicy, new: RoutingPolicy, g: gr.Guardrails):
    if new.policy_id != served.policy_id:
        return "wrong_policy", f"serving {served.policy_id!r}, got {new.policy_id!r}"
    if new.version <= served.version:
        return "stale_version", f"serving version {served.version}, got {new.version}"
    unknown = gr.unknown_models(served, new)
    if unknown:
        return "unknown_model", f"not in the served catalog: {', '.join(unknown)}"
    step = gr.step_violation(served, new, g)
    return None if step is None else ("step_too_large", step)


class Gateway:
    """Serves one immutable policy; ``offer`` swaps it for an accepted recalibration."""

    def __init__(
        self,
        policy: RoutingPolicy | None,
        key: Key,
        *,
        guardrails: gr.Guardrails = gr.Guardrails(),
        shadow: bool = False,
        accept_proposals: bool = False,
    ):
        self._policy = policy
        self._shadow_head: RoutingPolicy | None = None  # what shadow mode would be serving
        self._key, self.guardrails = key, guardrails
        self.shadow, self.accept_proposals = shadow, accept_proposals
        self._applied = self._shadowed = 0
        self._rejected: Counter[str] = Counter()

    @property
    def policy(self) -> RoutingPolicy | None:
        return self._policy

    @property
    def counters(self) -> dict[str, Any]:
        return {"applied": self._applied, "shadowed": self._shadowed,
                "rejected": dict(sorted(self._rejected.items()))}

    def offer(self, raw: bytes | str) -> Verdict:
        """Evaluate one message; apply it (or, in shadow mode, only record it) if accepted."""
        base = (self._shadow_head or self._policy) if self.shadow else self._policy
        verdict = evaluate(base, raw, self._key, self.guardrails, self.accept_proposals)
        if not verdict.accepted:
            self._rejected[verdict.reason] += 1
        elif self.shadow:
            self._shadow_head, self._shadowed = verdict.recalibration.policy, self._shadowed + 1
        else:
            self._policy, self._applied = verdict.recalibration.policy, self._applied + 1
        return verdict

    def route(self, features: Features | Mapping[str, Any]) -> RouteDecision:
        """Route one task with the policy served right now."""
        f = features if isinstance(features, Features) else Features(**features)
        policy = self._policy  # read the reference once: a concurrent swap cannot split a decision
        if policy is None:
            raise RuntimeError("gateway has no policy yet")
        return route(policy, Segment(agent=f.agent, task_type=f.task_type), f.complexity, f.context_demand)
