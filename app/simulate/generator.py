"""Drive a scenario: Poisson session arrivals, sessions in order, spans as records or models.

Sessions arrive as a Poisson process from the scenario's fixed epoch (no wall clock), so
segments interleave in time. Spans come out either session by session (``order="session"``)
or merged across sessions by end time (``order="time"``: what a live collector would see,
since a span is emitted when it ends).

>>> from app.simulate.scenarios import build
>>> recs = list(iter_records(build("steady", sessions=20), seed=1))
>>> ends = [r["end_time_unix_nano"] for r in recs]
>>> ends == sorted(ends), sum(r["session_end"] for r in recs)
(True, 20)
>>> first = next(iter_spans("steady", seed=1, sessions=20))
>>> first.model_dump(mode="json") == recs[0]
True
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Iterator
from typing import IO, Literal

import orjson

from app.simulate.agents import SimSession, generate_session
from app.simulate.routing import Router, default_policy, policy_router
from app.simulate.scenarios import Scenario, build
from schemas.span import SpanEvent

Order = Literal["time", "session"]


def arrivals(sc: Scenario, seed: int) -> Iterator[int]:
    """Start time (unix nanos) of each session: Poisson arrivals at ``sc.rate`` per second."""
    rng = random.Random(f"{seed}:arrivals")
    t = sc.epoch_ns
    for _ in range(sc.sessions):
        t += int(rng.expovariate(sc.rate) * 1e9)  # integer nanos: a float sum would drift
        yield t


def arrival_ns(sc: Scenario, seed: int, index: int) -> int:
    """Start time of session ``index`` (for ground truth; O(index))."""
    for i, t in enumerate(arrivals(sc, seed)):
        if i == index:
            return t
    raise IndexError(f"session {index} is beyond the scenario's {sc.sessions} sessions")


def iter_sessions(sc: Scenario, seed: int, router: Router | None = None) -> Iterator[SimSession]:
    """Every session of ``sc`` in arrival order; ``router`` defaults to the static policy."""
    router = router or policy_router(default_policy())
    for index, start in enumerate(arrivals(sc, seed)):
        yield generate_session(sc, seed, index, start, router)


def ordered(sessions: Iterable[SimSession], order: Order = "time") -> Iterator[dict]:
    """The sessions' span records, session by session or merged by (end time, session, seq).

    Sessions start in order and no span ends before its session starts, so a span can be
    released once the next session starts after it ends: the heap holds only open sessions.
    """
    if order == "session":
        for s in sessions:
            yield from s.spans
        return
    heap: list[tuple[int, int, int, dict]] = []
    for s in sessions:
        while heap and heap[0][0] < s.start_ns:
            yield heapq.heappop(heap)[3]
        for seq, rec in enumerate(s.spans):
            heapq.heappush(heap, (rec["end_time_unix_nano"], s.index, seq, rec))
    while heap:
        yield heapq.heappop(heap)[3]


def _scenario(scenario: str | Scenario, sessions: int | None) -> Scenario:
    if isinstance(scenario, Scenario):
        return scenario
    return build(scenario) if sessions is None else build(scenario, sessions=sessions)


def iter_records(scenario: str | Scenario, seed: int = 0, sessions: int | None = None,
                 router: Router | None = None, *, order: Order = "time") -> Iterator[dict]:
    """SpanEvent v1 records as plain dicts (exactly ``model_dump(mode="json")``'s fields)."""
    yield from ordered(iter_sessions(_scenario(scenario, sessions), seed, router), order)


def iter_spans(scenario: str | Scenario, seed: int = 0, sessions: int | None = None,
               router: Router | None = None, *, order: Order = "time") -> Iterator[SpanEvent]:
    """SpanEvent objects. Built without re-validation: the records are valid by construction
    (tests validate them), and validating would cost more than generating."""
    construct = SpanEvent.model_construct
    for rec in iter_records(scenario, seed, sessions, router, order=order):
        yield construct(**rec)


def write_jsonl(records: Iterable[dict], out: IO[bytes]) -> int:
    """Write records as JSON lines (orjson); return how many were written."""
    n, batch = 0, []
    for rec in records:
        batch.append(orjson.dumps(rec))
        n += 1
        if len(batch) >= 4096:
            out.write(b"\n".join(batch) + b"\n")
            batch.clear()
    if batch:
        out.write(b"\n".join(batch) + b"\n")
    return n
