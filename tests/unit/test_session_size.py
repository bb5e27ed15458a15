"""An open session's state is bounded: one record of stage 1's state topic (<= 1 MB).

A span its session's state might not hold is refused ("too_large") and dead-lettered with
the reason (``session_too_large``), the same in replay and in the worker; the session goes
on with the spans it has, and its ``session_end`` span still closes it.
"""

from __future__ import annotations

import orjson
import pytest
from prometheus_client import CollectorRegistry

from app.core import session as core
from app.core.live_sessions import LiveSessions
from app.core.stage1 import SessionStep
from app.core.stage2 import SegmentStep
from app.metrics import LoadshapeMetrics
from app.replay import Replayer, ReplaySinks, build_replayer, feed_file
from app.settings import Settings
from app.stream.stage1_partition import PartitionFold
from schemas.deadletter import DeadLetter
from schemas.fastspan import fast_records

LIMIT = 16 * 1024
SPANS = 400


def span(i: int, *, sid: str | None = None, end: bool = False, long: bool = True) -> dict:
    return {"trace_id": "t", "span_id": sid or (f"{i:05d}" + "y" * 100 if long else f"s{i}"),
            "session_id": "big", "agent": "a", "operation": "execute_tool", "tool_name": "grep",
            "parent_span_id": "root", "session_end": end,
            "start_time_unix_nano": 10 + i, "end_time_unix_nano": 11 + i}


def lines(n: int = SPANS) -> list[bytes]:
    return [orjson.dumps(span(i)) for i in range(n)] + [orjson.dumps(span(n, sid="the-end", end=True))]


def step() -> SessionStep:
    return SessionStep(idle_timeout_ns=10**12, max_state_bytes=LIMIT)


def test_a_full_state_refuses_new_spans_and_stays_under_the_limit():
    live = LiveSessions(step())
    outcomes = [(res.outcome if (res := live.fold_open(r)) is not None else "folded")
                for r in fast_records(lines()[:-1])]
    state = live.entries["big"]
    kept = outcomes.count("folded")
    assert 0 < kept < SPANS and outcomes == ["folded"] * kept + ["too_large"] * (SPANS - kept)
    assert len(state.to_bytes()) <= LIMIT < len(state.to_bytes()) + 2 * core.MAX_SPAN_BYTES
    assert state.check_at == core.FULL and state.spans == kept
    again = live.fold_open(fast_records(lines()[:1])[0])
    assert again.outcome == "duplicate"  # a span it holds is still recognised
    closed = live.fold_open(fast_records(lines()[-1:])[0])
    assert (closed.outcome, closed.closed.spans, closed.closed.closed_by) == (
        "closed", kept + 1, "session_end")


def test_the_guard_decides_the_same_from_stored_bytes_and_for_small_sessions_never_looks():
    live, spans = LiveSessions(step()), fast_records(lines()[:-1])
    stored, direct = None, []
    for r in spans:  # the worker's old path: bytes in, bytes out
        res = step().apply(stored, r)
        direct.append(res.outcome)
        stored = res.state
    for r in spans:
        live.fold_open(r)
    assert direct.count("folded") == live.entries["big"].spans
    assert core.load(stored).to_bytes() == live.entries["big"].to_bytes()
    small = LiveSessions(SessionStep(idle_timeout_ns=10**12))
    for i in range(50):
        small.fold_open(fast_records([orjson.dumps(span(i, long=False))])[0])
    assert small.entries["big"].check_at == SessionStep(idle_timeout_ns=1).first_check == 110


@pytest.mark.parametrize("fast", [True, False])
def test_replay_dead_letters_each_refused_span_with_its_line(tmp_path, fast):
    path = tmp_path / "big.jsonl"
    body = lines()
    if not fast:  # a line the block decoder does not take: lines go one by one
        body = [b"  " + body[0]] + body[1:]
    path.write_bytes(b"\n".join(body) + b"\n")
    letters, shapes = [], []
    r = Replayer(step(), SegmentStep.from_settings(Settings()),
                 sinks=ReplaySinks(dead_letter=letters.append, session=shapes.append))
    feed_file(r, path)
    r.finish()
    [shape] = shapes
    assert shape.spans + len(letters) == SPANS + 1 and letters
    assert {d.reason_code for d in letters} == {"session_too_large"}
    first = letters[0]
    assert first.line == SPANS + 1 - len(letters) and first.field == "session_id"
    assert orjson.loads(first.original)["span_id"] == span(first.line - 1)["span_id"]
    assert "session_max_state_bytes=16384" in first.reason and str(path)[-20:] in first.source


def test_the_worker_dead_letters_what_replay_does():
    settings = Settings(session_max_state_bytes=LIMIT, spans_partitions=1)
    fold = PartitionFold(0, settings, SessionStep.from_settings(settings),
                         LoadshapeMetrics.create(CollectorRegistry(), max_segments=5))
    out = []
    for offset, raw in enumerate(lines()):
        fold.handle(b"big", raw, offset, out)
    letters = [DeadLetter.model_validate_json(v) for t, _, v, _, _ in out if t == settings.topic_dlq]
    replayed = []
    r = build_replayer(settings)
    r.sinks.dead_letter = replayed.append
    for no, raw in enumerate(lines(), start=1):
        r.feed_raw(raw, source="f", line=no)
    assert [(d.offset, d.original, d.reason) for d in letters] == [
        (d.line - 1, d.original, d.reason) for d in replayed]
    assert letters and {d.partition for d in letters} == {0}
