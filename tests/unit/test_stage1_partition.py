"""Batch stage 1 without Kafka: per-partition folds (app.stream.stage1_partition) and their
checkpoints (app.stream.session_store).

* one partition publishes exactly the sessions an offline replay closes;
* heartbeats: the current wire format, every HEARTBEAT_EVERY spans, to every stage-2 partition;
  a flushed one (the shell's processing-time schedule) only when spans were folded since;
* bad records are dead-lettered with partition/offset, mis-keyed ones re-published;
* a crash anywhere -- also in the middle of writing a checkpoint -- followed by a restore from
  the state records and a re-read from the meta offset publishes the same sessions as an
  uninterrupted run (identical duplicates allowed), and never loses a closed session.
"""

from __future__ import annotations

import orjson
import pytest
from prometheus_client import CollectorRegistry

from app.broker.partitioner import partition_of
from app.core.stage1 import SessionStep
from app.core.stage2 import SegmentStep
from app.metrics import LoadshapeMetrics
from app.replay import Replayer, ReplaySinks
from app.settings import Settings
from app.simulate import iter_records
from app.stream.session_store import META_KEY, restore_records
from app.stream.stage1_partition import HEARTBEAT_EVERY, WATERMARK_KEY, PartitionFold
from schemas import closed_wm

SETTINGS = Settings(session_idle_timeout_s=60.0)


def metrics() -> LoadshapeMetrics:
    return LoadshapeMetrics.create(CollectorRegistry(), max_segments=5)


def workload(sessions: int = 120, seed: int = 3) -> list[tuple[bytes, bytes]]:
    recs = iter_records("dev-to-support", seed=seed, sessions=sessions)
    return [(r["session_id"].encode(), orjson.dumps(r)) for r in recs]


def by_partition(records, n: int) -> dict[int, list[tuple[int, bytes, bytes]]]:
    """(offset, key, value) per partition, as the default partitioner would place them."""
    out: dict[int, list] = {p: [] for p in range(n)}
    for key, value in records:
        part = out[partition_of(key, n)]
        part.append((len(part), key, value))
    return out


def fold_all(fold: PartitionFold, records, out: list) -> None:
    for offset, key, value in records:
        fold.handle(key, value, offset, out)


def sessions_of(out) -> list[bytes]:
    return [v for topic, k, v, _, _ in out if topic == SETTINGS.topic_sessions and k != WATERMARK_KEY]


def canonical(blobs) -> set[bytes]:
    return {orjson.dumps(orjson.loads(b), option=orjson.OPT_SORT_KEYS) for b in blobs}


def test_one_partition_publishes_what_replay_closes():
    settings = SETTINGS.model_copy(update={"spans_partitions": 1})
    records = workload()
    replayed = []
    replayer = Replayer(SessionStep.from_settings(settings), SegmentStep.from_settings(settings),
                        sinks=ReplaySinks(session=lambda s: replayed.append(s.model_dump_json())))
    for _, value in records:
        replayer.feed_raw(value, source="t", line=0)
    replayer.finish(flush=False)

    fold, out = PartitionFold(0, settings, SessionStep.from_settings(settings), metrics()), []
    fold_all(fold, by_partition(records, 1)[0], out)
    published = sessions_of(out)
    assert len(published) == len(replayed) > 50
    assert canonical(published) == canonical(replayed)


def test_heartbeats_keep_the_wire_format_and_follow_the_sessions_they_cover():
    fold, out = PartitionFold(2, SETTINGS, SessionStep.from_settings(SETTINGS), metrics()), []
    fold_all(fold, by_partition(workload(), 4)[2], out)
    beats = [(i, v, part) for i, (t, k, v, part, _) in enumerate(out) if k == WATERMARK_KEY]
    spans = fold.offset + 1
    assert len(beats) == (spans // HEARTBEAT_EVERY) * SETTINGS.sessions_partitions
    first = [b for b in beats[:SETTINGS.sessions_partitions]]
    assert [part for _, _, part in first] == list(range(SETTINGS.sessions_partitions))
    body = orjson.loads(first[0][1])
    assert first[0][1] == orjson.dumps({"src": 2, "wm": body["wm"]}) and set(body) == {"src", "wm"}
    # every session sent before a heartbeat ended at or before that heartbeat's watermark
    for i, value, _ in beats:
        wm = orjson.loads(value)["wm"]
        for topic, key, v, _, _ in out[:i]:
            if topic == SETTINGS.topic_sessions and key != WATERMARK_KEY:
                assert orjson.loads(v)["end_time_unix_nano"] <= wm


def test_a_flushed_heartbeat_carries_the_watermark_of_every_span_folded_so_far():
    fold = PartitionFold(2, SETTINGS, SessionStep.from_settings(SETTINGS), metrics())
    records = by_partition(workload(), 4)[2][:HEARTBEAT_EVERY + 5]
    out: list = []
    fold.flush_heartbeat(out)
    assert out == []  # nothing folded yet: nothing to tell
    fold_all(fold, records[:7], out)
    assert not [k for _, k, _, _, _ in out if k == WATERMARK_KEY]
    fold.flush_heartbeat(out)
    beats = [(v, part) for _, k, v, part, _ in out if k == WATERMARK_KEY]
    assert [part for _, part in beats] == list(range(SETTINGS.sessions_partitions))
    assert {orjson.loads(v)["wm"] for v, _ in beats} == {fold.live.watermark} and fold.live.watermark
    assert fold.since_heartbeat == 0
    again: list = []
    fold.flush_heartbeat(again)
    assert again == []  # no span since: no repeat
    # the regular heartbeat counts from the flush: 128 spans after it, not after the start
    fold_all(fold, records[7:], again)
    assert len([k for _, k, _, _, _ in again if k == WATERMARK_KEY]) == 0
    assert fold.since_heartbeat == HEARTBEAT_EVERY - 2


def test_bad_records_are_dead_lettered_and_miskeyed_ones_rekeyed():
    m = metrics()
    fold, out = PartitionFold(1, SETTINGS, SessionStep.from_settings(SETTINGS), m), []
    good = {"trace_id": "t", "span_id": "s", "session_id": "sess", "agent": "a",
            "operation": "chat", "start_time_unix_nano": 1, "end_time_unix_nano": 2}
    fold.handle(b"k", b'{"trace_id": "t"', 10, out)
    fold.handle(b"wrong", orjson.dumps(good), 11, out)
    fold.handle(b"sess", orjson.dumps(good), 12, out)
    fold.handle(b"sess", orjson.dumps(good), 12, out)  # redelivered offset: skipped
    (dlq_topic, dlq_key, dl, _, _), (re_topic, re_key, re_value, re_part, _) = out
    assert (dlq_topic, dlq_key) == (SETTINGS.topic_dlq, b"k")
    dl = orjson.loads(dl)
    assert (dl["partition"], dl["offset"], dl["reason_code"]) == (1, 10, "invalid_json")
    assert (re_topic, re_key, re_value, re_part) == (SETTINGS.topic_spans, b"sess",
                                                     orjson.dumps(good), None)
    assert "sess" in fold.live.entries and fold.offset == 12
    assert m.spans_processed._value.get() == 1


class FakeStateTopic:
    """One state-topic partition: records land when 'acked'."""

    def __init__(self) -> None:
        self.records: list = []

    def restore(self):
        return restore_records(self.records)


def run_with_crash(records, partition: int, *, crash_at: int, every: int,
                   partial: int | None = None):
    """Fold ``records`` checkpointing every ``every`` records; at ``crash_at`` the worker dies
    (``partial``: after writing that many records of a checkpoint), restores and goes on."""
    step, m, topic = SessionStep.from_settings(SETTINGS), metrics(), FakeStateTopic()
    published: list = []
    fold = PartitionFold(partition, SETTINGS, step, m)
    pos = 0
    crashed = False
    while pos < len(records):
        offset, key, value = records[pos]
        out: list = []
        fold.handle(key, value, offset, out)
        published += out  # sent; "acked" before the next checkpoint is written
        pos += 1
        if pos % every == 0 or (not crashed and pos == crash_at):
            recs = fold.checkpoint_records()
            if not crashed and pos == crash_at:
                crashed = True
                topic.records += recs[:partial] if partial is not None else []
                restored = topic.restore()
                fold = PartitionFold(partition, SETTINGS, step, m, restored)
                start = restored.meta.offset + 1 if restored.meta else 0
                pos = next((i for i, r in enumerate(records) if r[0] >= start), len(records))
                continue
            topic.records += recs
    return published, topic


@pytest.mark.parametrize("crash_at,every,partial", [
    (150, 50, None),   # just after a checkpoint was taken but not written
    (333, 100, None),  # between checkpoints: 33 records folded again
    (333, 100, 0),     # mid-checkpoint: nothing of it landed
    (333, 100, 3),     # mid-checkpoint: a prefix of its records landed, no meta record
    (700, 64, 1),
])
def test_crash_and_restore_publishes_what_an_uninterrupted_run_does(crash_at, every, partial):
    parts = by_partition(workload(sessions=300, seed=5), 2)
    records = parts[0]
    assert len(records) > crash_at
    reference = []
    fold_all(PartitionFold(0, SETTINGS, SessionStep.from_settings(SETTINGS), metrics()), records,
             reference)
    published, topic = run_with_crash(records, 0, crash_at=crash_at, every=every, partial=partial)
    want, got = sessions_of(reference), sessions_of(published)
    assert canonical(got) == canonical(want)
    by_id: dict[str, set[bytes]] = {}
    for blob in canonical(got):
        by_id.setdefault(orjson.loads(blob)["session_id"], set()).add(blob)
    assert all(len(v) == 1 for v in by_id.values())  # a duplicate is identical
    assert any(key == META_KEY for key, _ in topic.records)


@pytest.mark.parametrize("crash_at,every,partial", [(333, 100, None), (333, 100, 3), (700, 64, 1)])
def test_a_session_published_again_carries_the_same_closed_wm_header(crash_at, every, partial):
    """Stage 2 forgets a session only once a durable checkpoint passed the watermark it closed
    at, and drops a copy it still remembers: a copy must say the same watermark, also after a
    crash mid-checkpoint (entries newer than the meta record)."""
    records = by_partition(workload(sessions=300, seed=5), 2)[0]
    published, _ = run_with_crash(records, 0, crash_at=crash_at, every=every, partial=partial)
    sessions = [(v, closed_wm.decode(headers, spans_partitions=2))
                for topic, k, v, _, headers in published
                if topic == SETTINGS.topic_sessions and k != WATERMARK_KEY]
    seen: dict[bytes, set] = {}
    for value, where in sessions:
        seen.setdefault(value, set()).add(where)
    assert len(seen) < len(sessions)  # some were published twice
    assert all(len(h) == 1 and None not in h for h in seen.values())


def without_ck(out: list) -> list:
    """``out`` with the checkpoint watermark left out of its heartbeats."""
    return [(t, k, orjson.dumps({f: x for f, x in orjson.loads(v).items() if f != "ck"})
             if k == WATERMARK_KEY else v, p, h) for t, k, v, p, h in out]


def test_restored_partition_resumes_exactly_where_the_checkpoint_ends():
    records = by_partition(workload(sessions=200, seed=9), 1)[0]
    step = SessionStep.from_settings(SETTINGS)
    whole, out_whole = PartitionFold(0, SETTINGS, step, metrics()), []
    fold_all(whole, records, out_whole)

    first, out = PartitionFold(0, SETTINGS, step, metrics()), []
    fold_all(first, records[:500], out)
    restored = restore_records(first.checkpoint_records())
    assert restored.meta.offset == 499 and restored.meta.watermark == first.live.watermark
    second = PartitionFold(0, SETTINGS, step, metrics(), restored)
    first_out = len(out)
    fold_all(second, records, out)  # offsets 0..499 are skipped
    # the same sessions (with their headers) and heartbeats, in the same order; the restored
    # fold's heartbeats also say its checkpoint's watermark (the uninterrupted one had none)
    assert without_ck(out) == without_ck(out_whole)
    later = [orjson.loads(v) for _, k, v, _, _ in out[first_out:] if k == WATERMARK_KEY]
    assert later and all(b["ck"] == restored.meta.watermark for b in later)
    assert {k: v.to_bytes() for k, v in second.live.entries.items()} == \
        {k: v.to_bytes() for k, v in whole.live.entries.items()}


def span(session: str, span_id: str, t: int, end: bool = False) -> tuple[bytes, bytes]:
    rec = {"trace_id": session, "span_id": span_id, "session_id": session, "agent": "a",
           "operation": "execute_tool", "tool_name": "x", "start_time_unix_nano": t,
           "end_time_unix_nano": t + 1, "session_end": end}
    return session.encode(), orjson.dumps(rec)


@pytest.mark.parametrize("partial", [0, 1, 2, 3])
def test_a_crash_mid_checkpoint_never_forgets_a_session_whose_spans_are_read_again(partial):
    """A's first span is in the last complete checkpoint; A then closes and its tombstone
    expires before the next checkpoint, which the crash cuts short. Were the deletion written
    before the meta record, A's second span, read again, would open and publish a partial A."""
    far = 10**15
    spans = [span("A", "a1", 1), span("C", "c1", 2), span("A", "root", 3, end=True),
             span("B", "b1", far)]
    records = [(i, k, v) for i, (k, v) in enumerate(spans)]
    reference: list = []
    fold_all(PartitionFold(0, SETTINGS, SessionStep.from_settings(SETTINGS), metrics()), records,
             reference)
    published, _ = run_with_crash(records, 0, crash_at=4, every=2, partial=partial)
    assert canonical(sessions_of(published)) == canonical(sessions_of(reference))
    assert {orjson.loads(s)["session_id"] for s in sessions_of(reference)} == {"A", "C"}


def test_past_session_max_open_the_oldest_session_is_published_early(caplog):
    """Every span a new session (a producer bug): stage 1 keeps at most session_max_open
    entries, publishing the least recently active as idle; counted as closed_by="evicted"."""
    settings = SETTINGS.model_copy(update={"spans_partitions": 1, "session_max_open": 10})
    registry = CollectorRegistry()
    fold = PartitionFold(0, settings, SessionStep.from_settings(settings),
                         LoadshapeMetrics.create(registry, max_segments=5))
    spans = [{"trace_id": "t", "span_id": "x", "session_id": f"one-{i}", "agent": "a",
              "operation": "chat", "start_time_unix_nano": 10 + i, "end_time_unix_nano": 11 + i}
             for i in range(50)]
    out = []
    with caplog.at_level("WARNING", logger="app.stream.stage1_partition"):
        for offset, sp in enumerate(spans):
            fold.handle(sp["session_id"].encode(), orjson.dumps(sp), offset, out)
    published = [orjson.loads(v)["session_id"] for v in sessions_of(out)]
    assert published == [f"one-{i}" for i in range(40)]  # oldest first, as they fall out
    assert len(fold.live.entries) == 10
    assert registry.get_sample_value("loadshape_sessions_closed_total",
                                     {"closed_by": "evicted"}) == 40.0
    assert len([r for r in caplog.records if "session_max_open" in r.getMessage()]) == 6  # 1..32
    restored = restore_records(fold.checkpoint_records())
    assert sorted(restored.entries) == sorted(fold.live.entries)  # evicted ones deleted
