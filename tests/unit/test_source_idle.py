"""The idle-source rule: a span partition is ignored only when it is far behind in event time
*and* quiet (no heartbeat for ``source_quiet_s`` of record time).

* A partition that is merely read later (backlog catch-up after a restart or a rebalance:
  minutes of event time behind, heartbeats still coming) is waited for, so its sessions are
  folded in order, as a replay folds them.
* A partition that is really quiet is skipped, so alerts keep flowing.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from stage2_harness import END_NS, SEC, Log, Worker, shape, step

from app.core.watermarks import SourceWatermarks

IDLE, QUIET = 300 * SEC, 30 * SEC


def sources(expected: int = 2) -> SourceWatermarks:
    return SourceWatermarks(expected=expected, idle_ns=IDLE, quiet_ns=QUIET)


# --- the pure rule -----------------------------------------------------------------------------
def beat(wm: SourceWatermarks, src: int, event_s: float, record_s: float) -> None:
    wm.tick(int(record_s * SEC))
    wm.update(src, int(event_s * SEC))


def upto(wm: SourceWatermarks) -> int | None:
    return wm.release_upto(lateness_ns=0)


def test_a_lagging_source_that_still_beats_is_waited_for():
    wm = sources()
    for t in range(200):  # 200 s of record time; source 1 is 600 s of event time behind
        beat(wm, 0, 1000 + t, t)
        beat(wm, 1, 400 + t, t + 0.5)
        assert upto(wm) == (400 + t) * SEC


def test_a_quiet_source_far_behind_is_skipped_once_quiet_long_enough():
    wm = sources()
    beat(wm, 1, 400, 0)
    for t in range(1, 30):
        beat(wm, 0, 1000 + t, t)
        assert upto(wm) == 400 * SEC  # far behind, not quiet yet
    beat(wm, 0, 1030, 30)
    assert upto(wm) == 1030 * SEC  # idle: skipped
    beat(wm, 1, 450, 31)  # it speaks again: waited for again
    assert upto(wm) == 450 * SEC


def test_a_quiet_source_that_is_not_far_behind_is_still_waited_for():
    wm = sources()
    beat(wm, 1, 900, 0)
    for t in range(1, 100):
        beat(wm, 0, 1000, t)
    assert upto(wm) == 900 * SEC


def test_a_pause_of_the_whole_partition_does_not_single_out_the_source_that_resumes_last():
    """Stage 1 was down (or restarting) for ten minutes: every source was silent. The first
    heartbeats after it come from one source; the other is not idle for that."""
    wm = sources()
    for t in range(10):
        beat(wm, 0, 1000 + t, t)
        beat(wm, 1, 400 + t, t)
    for t in range(610, 620):  # only source 0 is back so far
        beat(wm, 0, 2000 + t, t)
        assert upto(wm) == 409 * SEC
    for t in range(620, 650):  # source 1 stays silent while source 0 runs: quiet after all
        beat(wm, 0, 2000 + t, t)
    assert upto(wm) == 2649 * SEC


def test_a_source_that_never_reported_blocks_until_the_others_are_far_on_and_it_stayed_quiet():
    wm = sources()
    for t in range(100):
        beat(wm, 0, 1000, t)
    assert upto(wm) is None  # quiet, but event time has not moved: it may still be behind
    wm = sources()
    for t in range(30):
        beat(wm, 0, 1000 + 20 * t, t)  # far on in event time, but only 29 s of record time
        assert upto(wm) is None
    beat(wm, 0, 1600, 30)
    assert upto(wm) == 1600 * SEC


# --- through the worker's shell ---------------------------------------------------------------
def folded_in_order(shapes) -> dict:
    """The monitor state of every session folded in (end time, session id) order: a replay."""
    s, entry = step(), None
    for sh in sorted(shapes, key=lambda x: (x.end_time_unix_nano, x.session_id)):
        entry = s.apply(entry, sh, None).entry
    s.drain(entry)
    return entry.monitor.to_dict()


def catch_up_log(lag_s: int, n: int = 800) -> tuple[Log, list]:
    """Stage 1 reads span partition 0 ahead of partition 1 by ``lag_s`` of event time (one
    segment, sessions from both partitions), everything within a few seconds of record time."""
    log, shapes = Log(), []
    for k in range(n):
        ts = 1000.0 + k * 0.005
        ahead = shape(2 * k, end_ns=(lag_s + k) * SEC, agent="a")
        behind = shape(2 * k + 1, end_ns=k * SEC + 1, agent="a")
        shapes += [ahead, behind]
        log.session(ahead, ts)
        log.beat(0, (lag_s + k) * SEC, ts)
        log.session(behind, ts)
        log.beat(1, k * SEC + 1, ts)
    for src in (0, 1):
        log.beat(src, END_NS, 1000.0 + n * 0.005)
    return log, shapes


def test_a_partition_read_behind_during_catch_up_is_waited_for():
    log, shapes = catch_up_log(lag_s=400)  # more than source_idle_s (300 s) behind
    w = Worker(source_idle_s=IDLE / SEC, source_quiet_s=QUIET / SEC)
    w.run(log.records)
    entry = w.stage2.entries[b"a"]
    assert entry.buffer.late == 0
    assert entry.monitor.to_dict() == folded_in_order(shapes)
    assert w.alerts()


def test_by_event_time_alone_the_same_partition_would_count_idle():
    """The scenario above does exercise the rule: with no quiet period it misfires."""
    log, shapes = catch_up_log(lag_s=400)
    w = Worker(source_idle_s=IDLE / SEC, source_quiet_s=1e-9)
    w.run(log.records)
    entry = w.stage2.entries[b"a"]
    assert entry.buffer.late > 0
    assert entry.monitor.to_dict() != folded_in_order(shapes)


def test_after_a_pipeline_restart_the_partition_resuming_last_is_waited_for():
    """Catch-up as above, and stage 1 is down for ten minutes half-way: when it is back, span
    partition 0 is read first (50 sessions and heartbeats) before partition 1 resumes."""
    log, shapes = Log(), []
    t = 1000.0
    for k in range(800):
        if k == 400:
            t += 600.0
        behind_first = 400 <= k < 450  # partition 1 not read yet after the restart
        ahead = shape(2 * k, end_ns=(400 + k) * SEC, agent="a")
        shapes.append(ahead)
        log.session(ahead, t)
        log.beat(0, (400 + k) * SEC, t)
        t += 0.005
        if not behind_first:
            for j in ([k] if k != 450 else range(400, 451)):
                behind = shape(2 * j + 1, end_ns=j * SEC + 1, agent="a")
                shapes.append(behind)
                log.session(behind, t)
                log.beat(1, j * SEC + 1, t)
    for src in (0, 1):
        log.beat(src, END_NS, t)
    w = Worker(source_idle_s=IDLE / SEC, source_quiet_s=QUIET / SEC)
    w.run(log.records)
    entry = w.stage2.entries[b"a"]
    assert entry.buffer.late == 0
    assert entry.monitor.to_dict() == folded_in_order(shapes)


@pytest.mark.parametrize("reports_once", [True, False])
def test_a_truly_idle_partition_is_skipped_and_alerts_flow(reports_once):
    """Span partition 1 has no traffic: one heartbeat at the start, or none at all. Partition 0
    carries every session; 0.1 s of record time between them."""
    log, shapes = Log(), []
    if reports_once:
        log.beat(1, 1, 1000.0)
    for i in range(900):
        ts = 1000.0 + i * 0.1
        s = shape(i, agent="a")
        shapes.append(s)
        log.session(s, ts)
        log.beat(0, i * SEC + 1, ts)
    w = Worker(source_idle_s=IDLE / SEC, source_quiet_s=QUIET / SEC)
    w.run(log.records)
    entry = w.stage2.entries[b"a"]
    assert entry.monitor.sessions == 900 and entry.buffer.late == 0
    assert entry.monitor.to_dict() == folded_in_order(shapes)
    assert w.alerts()  # the fan-out shift at session 450 was alerted
    # never quiet long enough (the whole run is 90 s of record time): nothing flows
    stalled = Worker(source_idle_s=IDLE / SEC, source_quiet_s=1000.0)
    stalled.run(log.records)
    assert stalled.stage2.entries[b"a"].monitor.sessions <= 1 and not stalled.alerts()


@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2000), st.integers(0, 60)),
                min_size=1, max_size=60), st.integers(0, 60))
def test_checkpointed_watermarks_go_on_as_the_live_ones(beats, cut):
    """Stage 2 checkpoints what the heartbeats said; restored at any point, the copy decides
    every later release exactly as the live object does."""
    live, restored, record_s = sources(expected=3), None, 0
    for i, (src, event_s, pause_s) in enumerate(beats):
        if i == cut:
            restored = SourceWatermarks.from_dict(orjson.loads(orjson.dumps(live.to_dict())),
                                                  expected=3, idle_ns=IDLE, quiet_ns=QUIET)
        record_s += pause_s
        for wm in (live, restored) if restored is not None else (live,):
            beat(wm, src, event_s, record_s)
        if restored is not None:
            assert upto(restored) == upto(live)
            assert restored.to_dict() == live.to_dict()
