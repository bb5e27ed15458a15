"""Shared pieces of the reliability tests: isolated settings, the reference (an offline
replay), waiting for a condition, and the comparison of what a worker published.

"Equal" for a Kafka run (at-least-once output):
* sessions: the *set* of distinct session records on loadshape.sessions (watermark heartbeats
  left out) equals the sessions an offline replay closes; two records for one session id
  must be byte-for-byte the same record (a duplicate, counted and reported);
* alerts: the set of distinct alert records equals the replay's; an alert id never maps to
  two different contents.
"""

from __future__ import annotations

import io
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import orjson

from app.replay import Replayer, ReplaySinks
from app.settings import Settings
from app.testing import isolated_settings
from schemas.heartbeat import WATERMARK_KEY

# Assumptions that break (and some resolve) all along a dev-to-support run, so alerts are
# raised both before and after a worker is killed. Kept here, not in examples/, so the
# tests do not move when the example file is edited.
ASSUMPTIONS_YAML = """\
assumptions:
  - {id: support-context-cap, segment: {agent: support}, metric: context_tokens, stat: p95,
     op: "<=", bound: 16000, why: "support context is capped at 16K"}
  - {id: support-fanout, segment: {agent: support}, metric: fanout, stat: p50, op: "<=",
     bound: 3, why: "about 3 tool calls per support session"}
  - {id: support-complexity, segment: {agent: support}, metric: complexity, stat: p50,
     op: "<=", bound: 0.4, why: "the typical support task is simple"}
  - {id: dev-fanout-tight, segment: {agent: dev-assistant}, metric: fanout, stat: p50,
     op: "<=", bound: 2, why: "a deliberately tight bound: breaks early"}
  - {id: dev-llm-calls, segment: {agent: dev-assistant}, metric: llm_calls, stat: p90,
     op: "<=", bound: 3, why: "a deliberately tight bound"}
  - {id: search-depth, segment: {agent: search}, metric: depth, stat: p95, op: "<=",
     bound: 2, why: "a deliberately tight bound"}
"""


def isolated(base: Settings, tmp: Path, **over) -> Settings:
    """``base`` with topics, app id and state dir unique to one test (topics created)."""
    assumptions = tmp / "assumptions.yaml"
    assumptions.write_text(ASSUMPTIONS_YAML)
    return isolated_settings(base, "loadshape-rel", state_dir=tmp / "state",
                             assumptions_file=assumptions, **over)


@dataclass
class Reference:
    alerts: list[dict]
    sessions: list[dict]


def reference(settings: Settings, path: Path) -> Reference:
    """What an uninterrupted run must publish: the offline replay of ``path`` (no flush)."""
    from app.core.stage1 import SessionStep
    from app.core.stage2 import SegmentStep
    from app.replay import feed_file

    alerts, sessions = io.BytesIO(), io.BytesIO()
    sinks = ReplaySinks(alert=lambda a: alerts.write(a.model_dump_json().encode() + b"\n"),
                        session=lambda s: sessions.write(s.model_dump_json().encode() + b"\n"))
    replayer = Replayer(SessionStep.from_settings(settings), SegmentStep.from_settings(settings),
                        sinks=sinks)
    feed_file(replayer, path)
    replayer.finish(flush=False)
    return Reference([orjson.loads(x) for x in alerts.getvalue().splitlines()],
                     [orjson.loads(x) for x in sessions.getvalue().splitlines()])


def wait_for(predicate, timeout: float, what: str, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def canonical(record: dict) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


@dataclass
class Comparison:
    missing: list[dict]  # in the reference, never published
    unexpected: list[dict]  # published, not in the reference
    duplicates: int  # identical records published more than once
    conflicting_ids: list[str]  # one id, two different contents

    @property
    def equal(self) -> bool:
        return not (self.missing or self.unexpected or self.conflicting_ids)


def compare(published: list[dict], expected: list[dict], id_field: str) -> Comparison:
    got = Counter(canonical(r) for r in published)
    want = {canonical(r) for r in expected}
    by_id: dict[str, set[bytes]] = {}
    for blob in got:
        by_id.setdefault(orjson.loads(blob)[id_field], set()).add(blob)
    return Comparison(
        missing=[orjson.loads(b) for b in want - set(got)],
        unexpected=[orjson.loads(b) for b in set(got) - want],
        duplicates=sum(n - 1 for n in got.values()),
        conflicting_ids=sorted(i for i, blobs in by_id.items() if len(blobs) > 1),
    )


def session_records(records: list[dict]) -> list[dict]:
    """Session shapes of a loadshape.sessions read (heartbeats left out)."""
    return [r["value"] for r in records if r["key"] != WATERMARK_KEY]


def describe(c: Comparison, what: str) -> str:
    def short(r):
        return {k: r.get(k) for k in ("session_id", "alert_id", "kind", "metric", "spans",
                                      "fanout", "closed_by") if k in r}

    return (f"{what}: {len(c.missing)} missing {[short(r) for r in c.missing[:5]]}, "
            f"{len(c.unexpected)} unexpected {[short(r) for r in c.unexpected[:5]]}, "
            f"{c.duplicates} duplicates, conflicting ids {c.conflicting_ids[:5]}")
