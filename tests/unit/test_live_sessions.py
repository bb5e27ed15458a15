"""LiveSessions closes exactly the sessions idle as of the watermark, oldest first, although
its idle index is told only of new sessions (it reads later last events from the entries)."""

from __future__ import annotations

import random

import pytest

from app.core.live_sessions import LiveSessions
from app.core.session import SessionState
from app.core.stage1 import SessionStep
from schemas.span import SpanEvent

TIMEOUT = 100


def _span(rng: random.Random, sid: str, i: int, t: int) -> SpanEvent:
    return SpanEvent(trace_id="t", span_id=f"{sid}-{i}", session_id=sid, agent="a",
                     operation="chat", start_time_unix_nano=t, end_time_unix_nano=t,
                     session_end=rng.random() < 0.05)


@pytest.mark.parametrize("seed", range(6))
def test_expire_closes_what_is_idle_in_last_event_order(seed):
    rng = random.Random(seed)
    live = LiveSessions(SessionStep(idle_timeout_ns=TIMEOUT))
    t = 0
    for i in range(3000):
        t += rng.randint(0, 6)
        sid = f"s{rng.randint(0, 40)}"  # long-lived sessions: many later events each
        live.fold(_span(rng, sid, i, max(0, t - rng.randint(0, 20))))  # a little out of order
        limit = live.watermark - TIMEOUT
        due = sorted((e.last_event_ns, s) for s, e in live.entries.items() if e.last_event_ns < limit)
        got = live.expire()
        assert [s for s, _ in got] == [s for _, s in due]
        for _, res in got:
            assert res.outcome == ("idle_closed" if res.closed is not None else "expired")
        assert len(live.idle) == len(live.entries)
        assert all(e.last_event_ns >= limit for e in live.entries.values())
    assert any(isinstance(e, SessionState) for e in live.entries.values())


@pytest.mark.parametrize("seed", range(6))
def test_fold_is_the_step_apply_reference(seed):
    # fold's in-place path for a live open session (fold_new, its own duplicate check) gives
    # the outcomes and state bytes SessionStep.apply gives, replayed span ids included
    rng = random.Random(seed)
    step = SessionStep(idle_timeout_ns=10**9)
    live, ref = LiveSessions(step), {}
    sent: list[SpanEvent] = []
    for _ in range(2000):
        if sent and rng.random() < 0.2:
            span = rng.choice(sent)  # a replay
        else:
            sid = f"s{rng.randint(0, 30)}"
            span = _span(rng, sid, rng.randint(0, 400), rng.randint(0, 10**6))
            sent.append(span)
        got = live.fold(span)
        want = step.apply(ref.get(span.session_id), span)
        if want.entry is not None and want.outcome != "late":
            ref[span.session_id] = want.entry
        assert (got.outcome, got.last_event_ns) == (want.outcome, want.last_event_ns)
        assert live.entries[span.session_id].to_bytes() == ref[span.session_id].to_bytes()


@pytest.mark.parametrize("seed", range(6))
def test_fold_each_is_fold_open_then_expire(seed):
    # fold_each (with its cached idle due time) yields what fold_open and
    # expire give span by span: the same results in the same order, the same entries
    rng = random.Random(seed)
    step = SessionStep(idle_timeout_ns=TIMEOUT)
    a, b = LiveSessions(step), LiveSessions(step)
    spans, t = [], 0
    for i in range(3000):
        t += rng.randint(0, 6)
        if spans and rng.random() < 0.1:
            spans.append(rng.choice(spans))  # a replay: duplicate, or late after its close
            continue
        sid = f"s{rng.randint(0, 40)}"
        spans.append(_span(rng, sid, i, max(0, t - rng.randint(0, 20))))
    got = [(r.outcome, r.last_event_ns) for r in a.fold_each(spans)]
    want = []
    for span in spans:
        res = b.fold_open(span)
        if res is not None:
            want.append((res.outcome, res.last_event_ns))
        want += [(r.outcome, r.last_event_ns) for _, r in b.expire()]
    assert got == want and {o for o, _ in got} >= {"duplicate", "late", "closed", "expired"}
    assert a.watermark == b.watermark
    assert {s: e.to_bytes() for s, e in a.entries.items()} == \
        {s: e.to_bytes() for s, e in b.entries.items()}


@pytest.mark.parametrize("seed", range(6))
def test_beyond_max_open_the_least_recently_active_is_evicted(seed):
    """A producer that starts a new session with every span must not grow memory without
    bound: past ``max_open`` entries the one with the earliest last event closes early (as
    idle, no tombstone). ``fold_each`` (replay) and ``fold`` + ``expire`` (the worker) agree."""
    rng = random.Random(seed)
    step = SessionStep(idle_timeout_ns=TIMEOUT * 50, max_open=8)
    spans, t = [], 0
    for i in range(2000):
        t += rng.randint(0, 3)
        spans.append(_span(rng, f"s{rng.randint(0, 30)}", i, max(0, t - rng.randint(0, 20))))
    each, pairs = LiveSessions(step), LiveSessions(step)
    got_each = [(r.outcome, r.closed and r.closed.session_id) for r in each.fold_each(spans)]
    got_pairs, evicted = [], 0
    for sp in spans:
        res = pairs.fold(sp)
        if res.outcome not in ("folded", "duplicate"):
            got_pairs.append((res.outcome, res.closed and res.closed.session_id))
        held = {s: e.last_event_ns for s, e in pairs.entries.items()}
        for sid, r in pairs.expire():
            got_pairs.append((r.outcome, r.closed and r.closed.session_id))
            assert (held[sid], sid) == min((v, s) for s, v in held.items())  # oldest first
            del held[sid]
            if r.outcome == "evicted":
                evicted += 1
                assert r.closed.closed_by == "idle" and sid not in pairs.entries
        assert len(pairs.entries) <= 8 and len(pairs.idle) == len(pairs.entries)
    assert evicted > 50 and got_each == got_pairs
    assert [s for s in pairs.entries] == [s for s in each.entries]
