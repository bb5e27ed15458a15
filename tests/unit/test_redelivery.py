"""At-least-once input, exactly-once results: what the steps do with records seen twice.

* stage 2 drops a session stage 1 published twice (same id and end time), also across a
  checkpoint (dump/load), while its first copy waits in the reorder buffer or is among the
  latest ``RECENT_SESSIONS`` released; a reused id with another end time is a new session;
* stage 1: a stored *closed* state (the worker stopped before Kafka had the session) is
  closed and published again when its span is replayed, and retired silently by the idle clock.
"""

from __future__ import annotations

import random
import zlib
from collections import OrderedDict

import orjson

from app.core import session as core
from app.core.stage1 import SessionStep
from app.core.stage2 import RECENT_SESSIONS, SegmentEntry, SegmentStep
from app.settings import Settings
from schemas.common import Segment
from schemas.session import SessionShape
from schemas.span import SpanEvent

WM = 10**15


def shape(i: int, end: int | None = None) -> SessionShape:
    return SessionShape(session_id=f"s{i}", segment=Segment(agent="a"), start_time_unix_nano=i,
                        end_time_unix_nano=end if end is not None else i + 1,
                        closed_by="session_end", spans=1, fanout=i % 3)


def test_a_held_backlog_is_stored_compressed_and_older_plain_entries_still_load():
    """A Kafka message is at most 1 MB, and a span partition read slowly holds sessions back
    by the thousand (here 3,000 small ones, ~0.5 MB of JSON; a simulated backlog held 1 MB)."""
    step = SegmentStep.from_settings(Settings())
    entry = None
    for i in range(3000):  # no watermark yet: every session waits in the reorder buffer
        entry = step.apply(entry, shape(i), None).entry
    stored = step.dump(entry)
    plain = zlib.decompress(stored)
    assert len(plain) > 450_000 and len(stored) * 4 < len(plain)
    assert step.document(stored) == step.document(plain) == orjson.loads(plain)
    for raw in (stored, plain):  # plain: as stored before compression
        assert step.dump(step.load(raw)) == stored
    assert len(step.apply(step.load(plain), shape(3000), WM).released) == 3001


def test_a_full_reorder_buffer_spills_the_earliest_and_loses_nothing():
    """A source partition that never moves (no watermark at all here) cannot grow a segment's
    state without limit: beyond ``reorder_max_held`` the earliest sessions go on, counted."""
    step = SegmentStep.from_settings(Settings(reorder_max_held=100))
    order = list(range(400))
    random.Random(3).shuffle(order)  # arrival order is not event-time order
    entry, released, spilled = None, [], 0
    for i in order:
        res = step.apply(entry, shape(i), None)
        entry, spilled = res.entry, spilled + res.spilled
        released += res.released
    buf = entry.buffer
    assert step.pending(entry) == 100 and spilled == buf.spilled == 300 - buf.late > 0
    assert len(released) == 300
    rest = step.drain(entry).released
    assert sorted(s.session_id for s in released + rest) == sorted(f"s{i}" for i in order)
    assert entry.monitor.sessions == 400
    back = step.load(step.dump(entry))
    assert (back.buffer.spilled, back.buffer.late) == (buf.spilled, buf.late)
    old = orjson.loads(zlib.decompress(step.dump(entry)))
    del old["reorder"]["spilled"]  # an entry stored before the buffer was bounded
    assert step.load(orjson.dumps(old)).buffer.spilled == 0


def test_stage2_folds_a_republished_session_once():
    step = SegmentStep.from_settings(Settings())
    entry = step.apply(None, shape(1), WM).entry
    again = step.apply(entry, shape(1), WM)
    assert again.released == [] and again.copies == 1  # the duplicate
    entry = step.load(step.dump(entry))  # a checkpoint and a restart in between
    assert step.apply(entry, shape(1), WM).released == []
    assert len(step.apply(entry, shape(1, end=99), WM).released) == 1  # same id, new session
    assert entry.monitor.sessions == 2


def test_stage2_remembers_a_bounded_number_of_released_sessions():
    step = SegmentStep.from_settings(Settings())
    entry = None
    for i in range(RECENT_SESSIONS + 10):
        entry = step.apply(entry, shape(i), WM).entry
    assert len(entry.recent) == RECENT_SESSIONS and "s0" not in entry.recent


def test_a_copy_of_a_buffered_session_is_dropped_however_many_came_between():
    """A span partition down (no heartbeats): sessions wait in the buffer by the thousand,
    then stage 1 publishes one again. Remembered by its place in the buffer, not by
    ``recent`` (two copies in the heap made the release raise TypeError, stalling the
    segment), also across a checkpoint."""
    step = SegmentStep.from_settings(Settings())
    entry = step.apply(None, shape(0), None).entry
    for i in range(1, RECENT_SESSIONS + 10):
        entry = step.apply(entry, shape(i), None).entry
    for _ in range(2):
        res = step.apply(entry, shape(0), None)
        assert res.released == [] and step.pending(res.entry) == RECENT_SESSIONS + 10
        entry = step.load(step.dump(entry))
    out = step.drain(entry)
    assert [s.session_id for s in out.released] == [f"s{i}" for i in range(RECENT_SESSIONS + 10)]
    assert out.entry.monitor.sessions == RECENT_SESSIONS + 10


def test_a_copy_of_a_released_session_is_dropped_after_a_stall():
    """Released, then a span partition stops: what the others send meanwhile waits in the
    buffer, and ``recent`` counts releases, so the copy stage 1 sends after its restore is
    still known (counted at arrival, it was forgotten and folded again, as late)."""
    step = SegmentStep.from_settings(Settings())
    entry = step.apply(None, shape(0), WM).entry
    for i in range(1, RECENT_SESSIONS + 10):
        entry = step.apply(entry, shape(i, end=WM + i), WM).entry  # beyond the watermark: held
    res = step.apply(entry, shape(0), WM)
    assert res.released == [] and res.entry.buffer.late == 0
    assert res.entry.monitor.sessions == 1


def test_a_session_behind_what_was_released_is_folded_at_once_and_counted_late():
    step = SegmentStep.from_settings(Settings())
    entry = step.apply(None, shape(5), WM).entry
    res = step.apply(entry, shape(3), WM)  # the segment released s5 (end 6) already
    assert [s.session_id for s in res.released] == ["s3"] and res.late == 1
    assert res.entry.buffer.late == 1 and step.apply(res.entry, shape(7), WM).late == 0


def test_a_copy_with_its_closing_place_is_dropped_however_many_were_released_between():
    """Stage 1 publishes again what it closed after its last durable checkpoint: an idle-closed
    session ends ``session_idle_timeout_s`` behind the watermark, so many sessions of its
    segment may be released between the two copies. With the ``loadshape-closed-wm`` header
    the copy is still known; without it (``recent`` only) it was folded again, as late."""
    step = SegmentStep.from_settings(Settings())
    entry = step.apply(None, shape(0), WM, origin=(0, 100), checkpointed={}).entry
    for i in range(1, RECENT_SESSIONS + 10):  # released at once, from another span partition
        entry = step.apply(entry, shape(i), WM, origin=(1, 100 + i), checkpointed={}).entry
    assert "s0" not in entry.recent
    entry = step.load(step.dump(entry))  # a checkpoint and a restart in between
    copy = step.apply(entry, shape(0), WM, origin=(0, 100), checkpointed={1: 5})
    assert copy.released == [] and copy.entry.monitor.sessions == RECENT_SESSIONS + 10
    blind = step.apply(copy.entry, shape(0), WM)  # no header: no longer known
    assert blind.late == 1 and blind.entry.monitor.sessions == RECENT_SESSIONS + 11


def test_what_a_durable_checkpoint_has_passed_is_forgotten():
    step = SegmentStep.from_settings(Settings())
    entry = step.apply(None, shape(0), WM, origin=(0, 100), checkpointed={}).entry
    entry = step.apply(entry, shape(1), WM, origin=(0, 200), checkpointed={0: 100}).entry
    assert list(entry.may_repeat[0]) == ["s0", "s1"]  # 100 is not below the checkpoint
    entry = step.apply(entry, shape(2), WM, origin=(1, 7), checkpointed={0: 101, 1: 8}).entry
    assert list(entry.may_repeat[0]) == ["s1"] and 1 not in entry.may_repeat
    entry = step.apply(entry, shape(3), WM, origin=(0, 300), checkpointed={0: 301}).entry
    assert entry.may_repeat == {} and "may_repeat" not in SegmentStep.document(step.dump(entry))


def test_recent_sessions_are_those_a_plain_dict_would_keep():
    # ``recent`` is ordered (the oldest goes in O(1)): it holds what the first version, a
    # plain dict losing its first key, held, in the same order, also across dump / load
    rng = random.Random(3)
    step = SegmentStep.from_settings(Settings())
    entry, plain = None, {}
    for n in range(3 * RECENT_SESSIONS):
        i, end = rng.randint(0, 2 * RECENT_SESSIONS), rng.choice([None, 7])
        s = shape(i, end)
        if plain.get(s.session_id) != s.end_time_unix_nano:
            plain.pop(s.session_id, None)
            plain[s.session_id] = s.end_time_unix_nano
            if len(plain) > RECENT_SESSIONS:
                del plain[next(iter(plain))]
        entry = step.apply(entry, s, WM).entry
        if n % 500 == 0:
            entry = step.load(step.dump(entry))
        assert list(entry.recent.items()) == list(plain.items())
    assert SegmentEntry(entry.buffer, entry.monitor, entry.tracker, recent=dict(plain)).recent \
        .__class__ is OrderedDict  # a plain dict passed in is taken as ordered


def span(sid: str, end: bool = False) -> SpanEvent:
    return SpanEvent(trace_id="t", span_id=sid, session_id="x", agent="a", operation="chat",
                     start_time_unix_nano=1, end_time_unix_nano=5, session_end=end)


def test_stage1_recloses_a_stored_closed_state_when_its_span_is_replayed():
    step = SessionStep(idle_timeout_ns=100)
    first = step.apply(None, span("a"))
    closed = step.apply(first.state, span("root", end=True))
    assert closed.outcome == "closed" and closed.closing is not None
    stored = closed.closing.to_bytes()  # what the worker keeps until Kafka has the session
    again = step.apply(stored, span("root", end=True))  # replayed after a restart
    assert again.outcome == "closed" and again.closed == closed.closed
    assert step.apply(closed.state, span("root", end=True)).outcome == "late"  # tombstone


def test_stage1_idle_clock_retires_a_closed_state_without_publishing():
    step = SessionStep(idle_timeout_ns=100)
    closed = step.apply(None, span("root", end=True))
    retired = step.expire(closed.closing.to_bytes(), watermark_ns=1000)
    assert retired.closed is None and isinstance(retired.entry, core.Tombstone)
    open_state = step.apply(None, span("a")).state
    assert step.expire(open_state, watermark_ns=1000).closed.closed_by == "idle"


def test_replay_applies_the_segment_limit_per_sessions_partition():
    from app.broker.partitioner import partition_of
    from app.replay import build_replayer

    settings = Settings(sessions_partitions=2, max_segments_per_partition=2)
    r = build_replayer(settings)
    letters = []
    r.sinks.dead_letter = letters.append
    agents = [f"agent-{i}" for i in range(8)]
    for i, agent in enumerate(agents * 3):
        r._segment(SessionShape(session_id=f"s{i}", segment=Segment(agent=agent),
                                start_time_unix_nano=i, end_time_unix_nano=i + 1,
                                closed_by="session_end", spans=1))
    by_part = {}
    for agent in agents:
        by_part.setdefault(partition_of(agent.encode(), 2), []).append(agent)
    kept = {a for part in by_part.values() for a in part[:2]}
    assert set(r.segments) == kept and len(kept) == 4
    assert sorted(d.reason_code for d in letters) == ["segment_limit"] * (3 * (8 - 4))
    assert {orjson.loads(d.original)["segment"]["agent"] for d in letters} == set(agents) - kept
