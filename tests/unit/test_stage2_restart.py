"""Stage 2's shell across a kill -9: checkpoint -> crash -> redelivery from the committed offset.

The real ``Stage2`` shell runs over ``stage2_harness`` (Faust's commit rule, a commit after
every record). A "kill -9" keeps only the segment table (its changelog) and the committed
offset; a new shell resumes from them, reading the records again from that offset. The segment
state it ends with, and the alerts published, must equal an uninterrupted run's.
"""

from __future__ import annotations

import orjson
import pytest
from faust.types import TP
from stage2_harness import (
    END_NS,
    SEC,
    TOPIC,
    WATERMARK_KEY,
    Log,
    Table,
    Worker,
    records,
    records_out_of_order,
    shape,
)

from app.core.stage2 import SegmentStep
from app.stream.source_state import SOURCES_PREFIX
from app.stream.stage2 import CHECKPOINT_EVERY


def frozen_clock():
    return lambda: 0.0  # no time-based checkpoints: only every CHECKPOINT_EVERY sessions


def ticking_clock():
    t = [0.0]

    def clock():
        t[0] += 0.05
        return t[0]
    return clock


def uninterrupted(recs, clock) -> Worker:
    w = Worker(Table(), {}, clock)
    w.run(recs)
    return w


def folded(state: dict[bytes, bytes]) -> dict[bytes, int]:
    return {seg: SegmentStep.document(b)["monitor"]["sessions"] for seg, b in state.items()}


@pytest.mark.parametrize("clock", [frozen_clock, ticking_clock])
@pytest.mark.parametrize("crash_at", [7, 260, 301, 555, 917, 1011])
def test_kill9_then_restart_folds_every_session_once(clock, crash_at):
    recs = records()
    ref = uninterrupted(recs, clock())
    assert ref.alerts() and sum(folded(ref.state()).values()) == 900

    first = Worker(Table(), {}, clock())
    first.run(recs, stop_after=crash_at)
    # kill -9: the table (changelog) and the committed offset survive, nothing else
    tp = TP(TOPIC, 0)
    second = Worker(Table(first.app.table), {tp: first.committer.committed(tp)}, clock())
    second.run(recs)
    assert folded(second.state()) == folded(ref.state())
    assert second.state() == ref.state()
    assert first.alerts() | second.alerts() == ref.alerts()  # some published twice: same content


def stepping_clock(step: float):
    t = [0.0]

    def clock():
        t[0] += step
        return t[0]
    return clock


@pytest.mark.parametrize("step,crash_points", [
    (0.02, range(245, 620, 6)),  # the clock steps set where the checkpoints fall; with the live
    (0.05, (300, 563, 566, 773, 983, 1193)),  # watermarks checkpointed, most of these differed
])
def test_sessions_read_again_after_a_kill9_are_released_in_the_same_order(step, crash_points):
    """Sessions arrive out of event-time order (two span partitions, one read late). After a
    kill -9 the sessions after a segment's checkpoint are read again; they must meet the
    watermarks the uninterrupted run had at them, not the later ones a checkpoint of the live
    watermarks would restore (they then passed at once as late: another sequence, other
    alerts). Crash points every few records, so the checkpoints of the two segments and of the
    watermarks fall on every side of them; the malformed record is dead-lettered, once or
    again, and never lost."""
    recs = records_out_of_order()
    ref = uninterrupted(recs, stepping_clock(step))
    assert ref.alerts() and not any(e.buffer.late for e in ref.stage2.entries.values())
    tp = TP(TOPIC, 0)
    differing = []
    for crash_at in crash_points:
        first = Worker(Table(), {}, stepping_clock(step))
        first.run(recs, stop_after=crash_at)
        second = Worker(Table(first.app.table), {tp: first.committer.committed(tp)},
                        stepping_clock(step))
        second.run(recs)
        dead = {v for _, v in first.topics.dlq.delivered + second.topics.dlq.delivered}
        if (second.state() != ref.state() or first.alerts() | second.alerts() != ref.alerts()
                or dead != {v for _, v in ref.topics.dlq.delivered}):
            differing.append(crash_at)
    assert differing == []


def test_committed_offset_never_passes_a_record_no_checkpoint_holds():
    """Kafka may resume a partition only after records that are in the table already: a record
    between a segment's checkpoint and the crash must be read again. A heartbeat the
    checkpointed source watermarks do not hold yet lies after the offset they were acked up to,
    where the next owner reads again from."""
    recs = records()
    w = Worker(Table(), {}, frozen_clock())
    tp = TP(TOPIC, 0)

    def check():
        committed = w.committer.committed(tp)
        stored = {seg: SegmentStep.document(b)["applied"].get("0", -1) for seg, b in w.app.table.items()
                  if not seg.startswith(SOURCES_PREFIX)}
        doc = orjson.loads(w.app.table.get(SOURCES_PREFIX + b"0", b'{"at": 0, "state": {"wm": []}}'))
        at, sources = doc["at"], doc["state"]["wm"]
        for ev in recs[:committed]:
            if ev.key == WATERMARK_KEY:
                if ev.message.offset >= at:
                    continue  # the next owner reads again from ``at``
                beat = orjson.loads(ev.value)
                assert any(s == beat["src"] and wm >= beat["wm"] for s, wm in sources), (
                    f"offset {committed} committed over a heartbeat no checkpoint holds")
            else:
                assert ev.message.offset <= stored.get(ev.key, -1), (
                    f"offset {committed} committed, but the record at {ev.message.offset} "
                    f"(segment {ev.key!r}) is in no checkpoint")

    w.run(recs, on_commit=check)
    assert w.committer.committed(tp) > CHECKPOINT_EVERY  # commits did happen


@pytest.mark.parametrize("crash_at", [260, 555, 917, 1011])
def test_an_alert_reaches_kafka_before_the_checkpoint_that_holds_it(crash_at):
    """Sends are delivered in the background (the loop's next turn), so a kill -9 loses what is
    still buffered. No alert may be lost: a checkpoint (after which the alert is never raised
    again) is written only once the alerts of the sessions it holds are delivered."""
    recs = records()
    ref = uninterrupted(recs, ticking_clock())
    first = Worker(Table(), {}, ticking_clock(), lagging=True)
    first.run(recs, stop_after=crash_at)
    tp = TP(TOPIC, 0)
    second = Worker(Table(first.app.table), {tp: first.committer.committed(tp)}, ticking_clock())
    second.run(recs)
    assert first.alerts() | second.alerts() == ref.alerts()


def records_with_a_finished_source(n_sessions: int = 903, last_beat_of_1: int = 500) -> list:
    """Like ``records``, but span partition 1 was read ahead (its heartbeats say 1,000 s
    further) and finished: its last heartbeat comes at session ``last_beat_of_1``. Partition 0
    goes on, so its heartbeats alone release what follows; nothing passes partition 0's end
    (a finite input: stage 1 sends no final heartbeat), so the last sessions stay held."""
    log = Log()
    for i in range(n_sessions):
        ts = 1000.0 + i * 0.01
        log.session(shape(i), ts)
        if i % 5 == 4:
            log.beat(0, i * SEC + 1, ts)
            if i <= last_beat_of_1:
                log.beat(1, (i + 1000) * SEC, ts)
    return log.records


@pytest.mark.parametrize("crash_at", [900, 1011, 1100, 1200])
def test_a_restart_keeps_what_the_heartbeats_before_the_committed_offset_said(crash_at):
    """The sources' watermarks are state too: a new owner restores them from their checkpoint and
    reads the heartbeats after it again, even before the committed offset, so it still knows a
    source whose last heartbeat lies before that offset, and holds back and releases exactly
    the same sessions."""
    clock = ticking_clock  # checkpoints on heartbeats: the committed offset passes them
    recs = records_with_a_finished_source()
    ref = uninterrupted(recs, clock())
    held = sum(SegmentStep.pending(e) for e in ref.stage2.entries.values())
    assert held > 0  # after partition 0's last heartbeat
    first = Worker(Table(), {}, clock())
    first.run(recs, stop_after=crash_at)
    tp = TP(TOPIC, 0)
    committed = first.committer.committed(tp)
    last_beat_of_1 = max(i for i, ev in enumerate(recs)
                         if ev.key == WATERMARK_KEY and orjson.loads(ev.value)["src"] == 1)
    assert committed > last_beat_of_1, "the crash must come after source 1's last heartbeat is committed"
    second = Worker(Table(first.app.table), {tp: committed}, clock())
    second.run(recs)
    assert second.state() == ref.state()
    assert first.alerts() | second.alerts() == ref.alerts()


@pytest.mark.parametrize("bad,code,field", [
    (b'{"src": 7, "wm": 5}', "invalid_heartbeat", "src"),
    (b'{"src": 0}', "invalid_heartbeat", "wm"),
    (b'{"src": 0, "wm": "5"}', "invalid_heartbeat", "wm"),
    (b"[0, 5]", "invalid_heartbeat", None),
    (b"{not json", "invalid_json", None),
])
def test_a_record_that_only_looks_like_a_heartbeat_is_dead_lettered(bad, code, field):
    """``loadshape.sessions`` is open to any producer: a record under the heartbeat key that is
    no heartbeat goes to the DLQ with the reason, and changes nothing else."""
    recs = records()
    mixed = recs[:400] + [type(recs[0])(WATERMARK_KEY, bad, None)] + recs[400:]
    for offset, ev in enumerate(mixed):
        ev.message = type(recs[0].message)(0, offset, ev.message.timestamp if ev.message else 1000.0)
    ref = uninterrupted(records(), ticking_clock())
    w = uninterrupted(mixed, ticking_clock())
    assert _without_offsets(w.state()) == _without_offsets(ref.state())  # offsets moved by one
    assert w.alerts() == ref.alerts()
    [(_, letter)] = w.topics.dlq.delivered
    letter = orjson.loads(letter)
    assert (letter["reason_code"], letter["field"]) == (code, field), letter
    assert w.committer.committed(TP(TOPIC, 0)) > 401  # acked: the partition moves past it


def test_an_agent_called_like_the_heartbeat_key_is_a_segment():
    """Its sessions carry the heartbeat key (a segment's key is its agent): folded, not
    dead-lettered as a broken heartbeat."""
    recs = records(n_sessions=200)
    odd = [ev for i in range(40) for ev in [_session_event(shape(i, agent="__watermark__"))]]
    mixed = recs[:100] + odd + recs[100:]
    for offset, ev in enumerate(mixed):
        ev.message = type(recs[0].message)(0, offset, 1000.0)
    w = uninterrupted(mixed, ticking_clock())
    assert w.topics.dlq.delivered == []
    assert WATERMARK_KEY in w.stage2.entries
    assert w.stage2.entries[WATERMARK_KEY].monitor.sessions == 40


def _session_event(s):
    log = Log()
    log.session(s, 1000.0)
    return log.records[0]


def _without_offsets(state: dict[bytes, bytes]) -> dict[bytes, dict]:
    return {seg: {k: v for k, v in SegmentStep.document(b).items() if k != "applied"}
            for seg, b in state.items()}


def test_a_source_that_never_moves_spills_counted_and_logged(caplog):
    """Span partition 1 sends no heartbeat at all: nothing would ever be released, and the
    segment's state (one Kafka message) would grow with every session. The full buffer lets
    the earliest go on instead; the metric and a (logarithmic) warning say so."""
    log = Log()
    for i in range(300):
        log.session(shape(i), 1000.0 + i * 0.01)
        if i % 5 == 4:
            log.beat(0, END_NS, 1000.0 + i * 0.01)
    worker = Worker()
    worker.stage2.step.max_held = 40
    with caplog.at_level("WARNING", logger="app.stream.stage2_outputs"):
        worker.run(log.records)
    entries = worker.stage2.entries
    assert {SegmentStep.pending(e) for e in entries.values()} == {40}
    spilled = {k.decode(): e.buffer.spilled for k, e in entries.items()}
    assert spilled == {"a": 225 - 40, "b": 75 - 40}
    reg = worker.stage2.metrics.sessions_spilled
    assert {s.labels["segment"]: s.value for s in reg.collect()[0].samples
            if s.name.endswith("_total")} == {"a": 185.0, "b": 35.0}
    warned = [r.getMessage() for r in caplog.records if "reorder buffer full" in r.getMessage()]
    assert len(warned) == 8 + 6  # at totals 1, 2, 4, ..., 128 (a) and 1, ..., 32 (b)


def test_sessions_of_a_segment_beyond_the_limit_are_dead_lettered():
    """A producer that puts an id in the agent name makes a segment per session, and each
    holds sketches and detectors: beyond ``max_segments_per_partition`` the sessions of new
    segments go to the DLQ (first come, first served), the tracked ones go on."""
    recs = records(n_sessions=200)
    w = Worker(max_segments_per_partition=1)
    w.run(recs)
    assert set(w.stage2.entries) == {b"a"}  # session 0 is of segment "a" (see shape())
    letters = [orjson.loads(v) for _, v in w.topics.dlq.delivered]
    assert len(letters) == 50 and {d["reason_code"] for d in letters} == {"segment_limit"}
    assert {d["field"] for d in letters} == {"segment"} and "'b'" in letters[0]["reason"]
    assert w.stage2.entries[b"a"].monitor.sessions == 150


@pytest.mark.parametrize("with_headers", [True, False])
def test_a_copy_published_after_a_long_hand_over_is_folded_once(with_headers):
    """Span partition 0's stage 1 dies after publishing session 10 and before checkpointing
    past it; partition 1 goes on (its heartbeats say its durable checkpoints), and over a
    thousand sessions of the segment are released; then 0's new owner publishes session 10
    again. Its ``loadshape-closed-wm`` header makes it a known copy; a record without the
    header is checked against the latest 1,024 released only, and folded again, late."""
    log, n = Log(), 1120
    for i in range(n):
        src, ts = i % 2, 1000.0 + i * 0.01
        log.session(shape(i, agent="a"), ts, closed=(src, i * SEC + 1) if with_headers else None)
        if i == 1110:
            log.session(shape(10, agent="a"), ts, closed=(0, 10 * SEC + 1) if with_headers else None)
        if i % 5 == 4:
            log.beat(0, i * SEC + 1, ts, ck=5 * SEC)  # its checkpoint stays before session 10
            log.beat(1, i * SEC + 1, ts, ck=(i - 40) * SEC)
    for src in (0, 1):
        log.beat(src, END_NS, 1000.0 + n * 0.01)
    w = Worker(Table(), {})
    w.run(log.records)
    entry = w.stage2.entries[b"a"]
    assert entry.monitor.sessions == (n if with_headers else n + 1)
    assert entry.buffer.late == (0 if with_headers else 1)
    copies = w.stage2.metrics.sessions_copies.labels("a")._value.get()
    assert copies == (1 if with_headers else 0)  # loadshape_sessions_copies_dropped_total
    if with_headers:  # partition 1's checkpoints let stage 2 forget; 0's held back
        assert len(entry.may_repeat.get(1, ())) <= 25 and "s10" in entry.may_repeat[0]
