"""Declared workload assumptions: load a YAML file, check one against a distribution.

An assumption is a sentence a reviewer can read ("support: context_tokens p95 <= 16000")
plus *why* it was made. ``check`` is pure; episode tracking lives in ``app.loop.tracker``.

>>> a = Assumption(id="cap", segment={"agent": "support"}, metric="context_tokens",
...                stat="p95", op="<=", bound=16000, why="we cap context at 16K")
>>> a.sentence
'support: context_tokens p95 <= 16000'
>>> s = MetricStats(n=50, mean=9e3, p50=8e3, p90=15e3, p95=21e3, p99=30e3, max=31e3)
>>> check(a, s)
AssumptionResult(holds=False, observed=21000.0, n=50)
>>> check(a, None)
AssumptionResult(holds=None, observed=None, n=0)
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.core.stats import MetricStats
from app.loop.fileload import LoadError, read_document
from schemas.common import Id, Segment, Text
from schemas.session import METRICS

Stat = Literal["mean", "p50", "p90", "p95", "p99", "max"]
Op = Literal["<=", "<", ">=", ">"]
Metric = Literal[METRICS]  # type: ignore[valid-type]

OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt,
}


class Assumption(BaseModel):
    """One declared assumption; ``bound`` compares against ``stat`` of ``metric``."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    id: Id
    segment: Segment
    metric: Metric
    stat: Stat
    op: Op
    bound: float
    why: Text = Field(min_length=1)

    @property
    def sentence(self) -> str:
        bound = int(self.bound) if float(self.bound).is_integer() else self.bound
        return f"{self.segment.key}: {self.metric} {self.stat} {self.op} {bound}"

    def holds_for(self, observed: float, margin: float = 0.0) -> bool:
        """True if ``observed`` satisfies the assumption with ``margin`` to spare.

        >>> a = Assumption(id="f", segment={"agent": "x"}, metric="fanout", stat="p50",
        ...                op="<=", bound=3, why="small fan-out")
        >>> a.holds_for(3.0), a.holds_for(2.9, margin=0.15)
        (True, False)
        """
        return OPS[self.op](observed, self.threshold(margin))

    def threshold(self, margin: float = 0.0) -> float:
        """What ``holds_for(observed, margin)`` compares ``observed`` with (``OPS[op]``)."""
        return self.bound - margin if self.op in ("<=", "<") else self.bound + margin


@dataclass(frozen=True, slots=True)
class AssumptionResult:
    holds: bool | None  # None: no data for this segment/metric
    observed: float | None
    n: int


def check(assumption: Assumption, stats: MetricStats | None) -> AssumptionResult:
    """Evaluate one assumption against a metric's distribution summary."""
    if stats is None or stats.n == 0:
        return AssumptionResult(holds=None, observed=None, n=0)
    observed = stats.get(assumption.stat)
    return AssumptionResult(holds=assumption.holds_for(observed), observed=observed, n=stats.n)


def parse_assumptions(data: Any, source: str) -> tuple[Assumption, ...]:
    """Validate a parsed document ``{"assumptions": [...]}``; raise ``LoadError``.

    >>> parse_assumptions({"assumptions": [{"id": "x", "segment": {"agent": "a"},
    ...     "metric": "fanout", "stat": "p50", "op": "=<", "bound": 3, "why": "w"}]}, "f.yaml")
    Traceback (most recent call last):
    ...
    app.loop.fileload.LoadError: f.yaml: assumptions[0] (id=x): field 'op': must be one of ...
    """
    if not isinstance(data, dict) or not isinstance(data.get("assumptions"), list):
        raise LoadError(f"{source}: expected a mapping with a list under 'assumptions'")
    unknown = sorted(set(data) - {"assumptions"})
    if unknown:
        raise LoadError(f"{source}: unknown top-level key(s): {', '.join(unknown)}")
    out, seen = [], set()
    for i, entry in enumerate(data["assumptions"]):
        label = _entry_label(i, entry)
        if not isinstance(entry, dict):
            raise LoadError(f"{source}: {label}: expected a mapping")
        try:
            a = Assumption.model_validate(entry)
        except ValidationError as err:
            raise LoadError(f"{source}: {label}: {_field_errors(err)}") from None
        if a.id in seen:
            raise LoadError(f"{source}: {label}: field 'id': duplicate id {a.id!r}")
        seen.add(a.id)
        out.append(a)
    return tuple(out)


def load_assumptions(path: str | Path) -> tuple[Assumption, ...]:
    """Load and validate an assumptions YAML (or JSON) file."""
    return parse_assumptions(read_document(path), str(path))


def _entry_label(i: int, entry: Any) -> str:
    ident = entry.get("id") if isinstance(entry, dict) else None
    return f"assumptions[{i}]" + (f" (id={ident})" if isinstance(ident, str) else "")


def _field_errors(err: ValidationError) -> str:
    parts = []
    for e in err.errors(include_url=False):
        field = ".".join(str(p) for p in e["loc"])
        if e["type"] == "literal_error":
            msg = f"must be one of {e['ctx']['expected']} (got {e['input']!r})"
        elif e["type"] == "missing":
            msg = "is required"
        elif e["type"] == "extra_forbidden":
            msg = "is not a known field"
        else:
            msg = f"{e['msg'].removeprefix('Value error, ')} (got {e['input']!r})"
        parts.append(f"field '{field}': {msg}")
    return "; ".join(parts)
