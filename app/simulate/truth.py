"""Ground truth of a simulated run: what changed, where, when -- and what really happened.

The sidecar names each change (segment, the ``SessionShape`` metrics expected to move, the
index and event time of the first session drawn from the changed profile) and the segments
that stay unchanged, so detectors can be scored. ``TruthTally`` adds per-segment, per-phase
facts the spans do not carry, e.g. how many LLM calls were misrouted (sent to a model whose
capability is below the task's complexity).

>>> from app.simulate.scenarios import build
>>> sc = build("dev-to-support", sessions=100, change_at=40)
>>> gt = ground_truth(sc, seed=3)
>>> [(c["segment"], c["change_session"]) for c in gt["changes"]], gt["unchanged_segments"]
([('support', 40)], ['dev-assistant', 'search'])
>>> gt["changes"][0]["change_time_unix_nano"] > sc.epoch_ns
True
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from app.simulate.agents import SessionTruth, SimSession
from app.simulate.generator import arrival_ns
from app.simulate.routing import capabilities
from app.simulate.scenarios import Scenario


def ground_truth(sc: Scenario, seed: int) -> dict:
    """The sidecar's static part: scenario, seed, changes and unchanged segments."""
    changing = [s for s in sc.segments if s.after is not None and sc.change_at < sc.sessions]
    at = arrival_ns(sc, seed, sc.change_at) if changing else None
    return {
        "scenario": sc.name,
        "description": sc.description,
        "seed": seed,
        "sessions": sc.sessions,
        "rate_per_s": sc.rate,
        "epoch_unix_nano": sc.epoch_ns,
        "changes": [
            {"segment": s.key, "metrics": list(s.metrics),
             "incidental_metrics": list(s.incidental), "change_session": sc.change_at,
             "change_time_unix_nano": at, "kind": s.kind, "description": s.description}
            for s in changing
        ],
        "unchanged_segments": [s.key for s in sc.segments if s not in changing],
        "model_capabilities": capabilities(),
    }


@dataclass(slots=True)
class _Sums:
    sessions: int = 0
    misrouted_sessions: int = 0
    llm_calls: int = 0
    misrouted_calls: int = 0
    truncated_calls: int = 0
    errors: int = 0
    gave_up_sessions: int = 0
    tool_steps: int = 0
    context_demand: int = 0
    complexity: float = 0.0
    calls_by_model: dict[str, int] = field(default_factory=dict)

    def add(self, t: SessionTruth) -> None:
        self.sessions += 1
        self.misrouted_sessions += t.misrouted
        self.llm_calls += t.llm_calls
        self.misrouted_calls += t.misrouted_calls
        self.truncated_calls += t.truncated_calls
        self.errors += t.errors
        self.gave_up_sessions += t.gave_up > 0
        self.tool_steps += t.tool_steps
        self.context_demand += t.context_demand
        self.complexity += t.complexity
        for model, n in t.calls_by_model.items():
            self.calls_by_model[model] = self.calls_by_model.get(model, 0) + n

    def summary(self) -> dict:
        n, calls = max(self.sessions, 1), max(self.llm_calls, 1)
        return {
            "sessions": self.sessions,
            "misrouted_session_rate": self.misrouted_sessions / n,
            "misrouted_call_rate": self.misrouted_calls / calls,
            "truncated_call_rate": self.truncated_calls / calls,
            "gave_up_session_rate": self.gave_up_sessions / n,
            "errors_per_session": self.errors / n,
            "mean_tool_steps": self.tool_steps / n,
            "mean_context_demand": self.context_demand / n,
            "mean_complexity": self.complexity / n,
            "call_share_by_model": {m: c / calls for m, c in sorted(self.calls_by_model.items())},
        }


@dataclass(slots=True)
class TruthTally:
    """Running per-(segment, phase) sums of session truths."""

    sums: dict[tuple[str, str], _Sums] = field(default_factory=dict)

    def add(self, truth: SessionTruth) -> None:
        key = (truth.segment, truth.phase)
        if key not in self.sums:
            self.sums[key] = _Sums()
        self.sums[key].add(truth)

    def tap(self, sessions: Iterable[SimSession]) -> Iterator[SimSession]:
        """Pass sessions through, tallying each one's truth."""
        for s in sessions:
            self.add(s.truth)
            yield s

    def stats(self) -> dict[str, dict[str, dict]]:
        """segment -> phase -> summary."""
        out: dict[str, dict[str, dict]] = {}
        for (segment, phase), sums in sorted(self.sums.items()):
            out.setdefault(segment, {})[phase] = sums.summary()
        return out


def sidecar(sc: Scenario, seed: int, tally: TruthTally | None = None) -> dict:
    """The full sidecar: ``ground_truth`` plus, when a tally is given, its per-segment stats."""
    out = ground_truth(sc, seed)
    if tally is not None:
        out["stats"] = tally.stats()
    return out
