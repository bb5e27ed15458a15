"""Batch stage 1 against a real broker: its state topic, and kill -9 after checkpoints.

* the state topic is compacted, has one partition per span partition, and after a run holds,
  per partition, a meta record whose offset is the committed offset - 1;
* a worker killed (kill -9) while spans keep arriving, after it wrote checkpoints: the next
  worker restores the sessions half folded at the kill from the state topic, reads on after
  the meta offset, and what is published equals the offline replay (identical duplicates
  allowed, nothing missing, no session published with other content);
* hand-overs in a group while spans arrive in parts (a + b, a alone after b's kill -9,
  a + b2): the sessions and the alerts published equal the replay's (stage 2's segment
  partitions move too: Faust skips, and acks, records around a rebalance; see
  app/stream/stage2.py and tests/unit/test_stage2_skipped_events.py).
"""

from __future__ import annotations

import asyncio
import re
import time

import orjson
import pytest
from pipeline_data import keyed_lines, workload_file
from reliability_data import compare, describe, isolated, reference, session_records, wait_for

from app.broker.client_config import aiokafka_kwargs
from app.stream.session_store import META_KEY, PartitionMeta
from app.testing import WorkerProcess, free_port, produce, read_topic, scrape_metrics

pytestmark = pytest.mark.integration

RESTORED = re.compile(r"stage 1: partition (\d+) restored: (\d+) sessions, meta (\S+)")
FAST_GROUP = {"BROKER_SESSION_TIMEOUT": "6", "BROKER_HEARTBEAT_INTERVAL": "1",
              "BROKER_REBALANCE_TIMEOUT": "20"}  # a killed member leaves the group after 6 s


def processed(port: int) -> float:
    return scrape_metrics(port).get("loadshape_spans_processed_total", 0.0)


async def _state_records(settings) -> dict[int, list[tuple[bytes, bytes | None]]]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(enable_auto_commit=False, **aiokafka_kwargs(settings))
    await consumer.start()
    try:
        topic = settings.stage1_state_topic
        tps = [TopicPartition(topic, p) for p in range(settings.spans_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: dict[int, list] = {tp.partition: [] for tp in tps}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
                [await consumer.position(tp) < ends[tp] for tp in tps]):
            for tp, msgs in (await consumer.getmany(timeout_ms=300)).items():
                out[tp.partition].extend((m.key, m.value) for m in msgs)
        return out
    finally:
        await consumer.stop()


async def _committed(settings) -> dict[int, int | None]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(group_id=f"{settings.app_id}-stage1", enable_auto_commit=False,
                                **aiokafka_kwargs(settings))
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(settings.topic_spans, p))
                for p in range(settings.spans_partitions)}
    finally:
        await consumer.stop()


def test_state_topic_holds_meta_records_that_match_the_committed_offsets(kafka_settings, tmp_path):
    settings = isolated(kafka_settings, tmp_path)
    data = workload_file(tmp_path / "spans.jsonl", scenario="steady", seed=4, sessions=200,
                         partitions=settings.spans_partitions)
    records = keyed_lines(data)
    port = free_port()
    worker = WorkerProcess(settings, tmp_path / "worker.log", metrics_port=port).start()
    try:
        worker.wait_ready()
        produce(settings, settings.topic_spans, records)
        wait_for(lambda: processed(port) >= len(records), 120, "every span folded")
        # the time-based checkpoint follows within stage1_checkpoint_s
        wait_for(lambda: all(c is not None for c in asyncio.run(_committed(settings)).values()),
                 60, "offsets committed on every partition", poll=1.0)
    finally:
        worker.stop()  # a clean stop checkpoints and commits everything
    committed = asyncio.run(_committed(settings))
    state = asyncio.run(_state_records(settings))
    assert sorted(state) == list(range(settings.spans_partitions))
    per_partition = {}
    for p, recs in state.items():
        metas = [PartitionMeta.from_bytes(v) for k, v in recs if k == META_KEY]
        assert metas, f"partition {p} has no meta record"
        per_partition[p] = metas[-1]
        assert committed[p] == metas[-1].offset + 1
        for key, value in recs:
            if key != META_KEY:
                key.decode()  # a session id
                assert value is None or b"session_id" in value
    on_topic = sum(m.offset + 1 for m in per_partition.values())
    assert on_topic == len(records)  # every span's offset is covered by a checkpoint


def dev_to_support(settings, tmp_path, *, seed: int, sessions: int):
    """The dev-to-support workload as keyed span records, and what replay makes of it."""
    path = workload_file(tmp_path / "spans.jsonl", scenario="dev-to-support", seed=seed,
                         sessions=sessions, partitions=settings.spans_partitions)
    return keyed_lines(path), reference(settings, path)


def test_kill9_after_checkpoints_restores_half_folded_sessions(kafka_settings, tmp_path,
                                                               monkeypatch):
    monkeypatch.setenv("LOADSHAPE_STAGE1_CHECKPOINT_SPANS", "300")
    settings = isolated(kafka_settings, tmp_path)
    records, ref = dev_to_support(settings, tmp_path, seed=21, sessions=1200)
    half = len(records) // 2
    first = WorkerProcess(settings, tmp_path / "worker-1.log", metrics_port=free_port()).start()
    second = None
    try:
        first.wait_ready()
        produce(settings, settings.topic_spans, records[:half])
        wait_for(lambda: processed(first.metrics_port) >= half, 120, "the first half folded")
        first.kill9()  # whatever came after its last checkpoint is lost
        produce(settings, settings.topic_spans, records[half:])
        second = WorkerProcess(settings, tmp_path / "worker-2.log", metrics_port=free_port()).start()
        second.wait_ready()
        want = {s["session_id"] for s in ref.sessions}
        got = read_topic(settings, settings.topic_sessions, timeout=150,
                         until=lambda recs: want <= {r["value"].get("session_id") for r in recs})
        sessions = session_records(got)
        cmp = compare(sessions, ref.sessions, "session_id")
        print(f"\nkill -9 after checkpoints: {len(ref.sessions)} sessions expected, "
              f"{len(sessions)} published ({cmp.duplicates} identical duplicates)")
        assert cmp.equal, describe(cmp, "sessions") + "\n" + second.log_tail()
        found = RESTORED.findall(second.log_path.read_text(errors="replace"))
        assert found and all(meta.startswith("PartitionMeta") for _, _, meta in found), found
        assert sum(int(n) for _, n, _ in found) > 0  # open sessions came back from the topic
        assert second.proc.poll() is None
        assert b"Traceback" not in second.log_path.read_bytes(), second.log_tail(80)
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_state_values_are_stored_entries(kafka_settings, tmp_path):
    """A session's record on the state topic decodes as the core's stored entry."""
    from app.core import session as core

    settings = isolated(kafka_settings, tmp_path)
    span = {"trace_id": "t", "span_id": "a", "session_id": "open-1", "agent": "support",
            "operation": "chat", "start_time_unix_nano": 1, "end_time_unix_nano": 2}
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        produce(settings, settings.topic_spans, [(b"open-1", orjson.dumps(span))])

        def stored():
            recs = asyncio.run(_state_records(settings))
            return [v for part in recs.values() for k, v in part if k == b"open-1"]

        values = wait_for(stored, 60, "the open session checkpointed", poll=1.0)
    finally:
        worker.stop()
    entry = core.load(values[-1])
    assert isinstance(entry, core.SessionState) and entry.spans == 1 and entry.agent == "support"


def restored(log, since: int = 0) -> dict[int, str]:
    """Stage-1 partitions a worker restored (after byte ``since`` of its log) -> their meta."""
    text = log.read_bytes()[since:].decode(errors="replace")
    return {int(p): meta for p, _, meta in RESTORED.findall(text)}


def test_group_hand_overs_mid_stream_publish_the_replayed_sessions(kafka_settings, tmp_path,
                                                                  monkeypatch):
    """The spans arrive in three parts: with a and b, with a alone (it restores b's
    partitions from b's last checkpoints), with a and b2 (a checkpoints the partitions it
    gives up when b2 joins; b2 restores them). Sessions straddle every hand-over; stage 2's
    partitions move as well, and its alerts must equal the replay's too."""
    for name, value in FAST_GROUP.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LOADSHAPE_STAGE1_CHECKPOINT_SPANS", "250")  # many checkpoints mid-run
    settings = isolated(kafka_settings, tmp_path)
    records, ref = dev_to_support(settings, tmp_path, seed=11, sessions=1500)
    third = len(records) // 3
    parts = records[:third], records[third:2 * third], records[2 * third:]
    ports = [free_port(), free_port()]
    a = WorkerProcess(settings, tmp_path / "worker-a.log", metrics_port=ports[0]).start()
    b = WorkerProcess(settings, tmp_path / "worker-b.log", metrics_port=ports[1]).start()
    b2 = None
    everything = set(range(settings.spans_partitions))
    try:
        a.wait_ready()
        b.wait_ready()
        produce(settings, settings.topic_spans, parts[0])
        wait_for(lambda: sum(processed(p) for p in ports) >= len(parts[0]), 120, "the first third")
        mark = a.log_path.stat().st_size
        b.kill9()  # a takes every partition once b's session times out
        wait_for(lambda: set(restored(a.log_path, mark)) == everything, 120, "a owning everything")
        assert "PartitionMeta" in "".join(restored(a.log_path, mark).values())  # b's checkpoints
        before = processed(ports[0])
        produce(settings, settings.topic_spans, parts[1])
        wait_for(lambda: processed(ports[0]) >= before + len(parts[1]), 120, "a folding")
        b2 = WorkerProcess(settings, tmp_path / "worker-b2.log", metrics_port=ports[1]).start()
        b2.wait_ready()
        wait_for(lambda: restored(b2.log_path), 120, "b2 owning partitions")
        assert "PartitionMeta" in "".join(restored(b2.log_path).values())  # a's checkpoints
        produce(settings, settings.topic_spans, parts[2])
        want = {s["session_id"] for s in ref.sessions}
        got = read_topic(settings, settings.topic_sessions, timeout=150,
                         until=lambda recs: want <= {r["value"].get("session_id") for r in recs})
        cmp = compare(session_records(got), ref.sessions, "session_id")
        print(f"\ngroup hand-overs: {len(ref.sessions)} sessions expected, "
              f"{len(session_records(got))} published ({cmp.duplicates} identical duplicates)")
        assert cmp.equal, describe(cmp, "sessions")
        want_alerts = {x["alert_id"] for x in ref.alerts}
        alerts = [r["value"] for r in read_topic(
            settings, settings.topic_alerts, timeout=30,
            until=lambda recs: want_alerts <= {r["value"]["alert_id"] for r in recs})]
        a_cmp = compare(alerts, ref.alerts, "alert_id")
        scraped = [scrape_metrics(p) for p in ports]
        late = sum(m.get("loadshape_sessions_late_total", 0.0) for m in scraped)
        copies = sum(m.get("loadshape_sessions_copies_dropped_total", 0.0) for m in scraped)
        print(f"group hand-overs: {len(ref.alerts)} alerts expected, {len(alerts)} published "
              f"({a_cmp.duplicates} identical duplicates); by a and b2, sessions folded late: "
              f"{late:.0f}, copies dropped: {copies:.0f}")
        assert a_cmp.equal, describe(a_cmp, "alerts") + "".join(
            f"\n{what} {x['kind']} {x.get('assumption_id')} {x['segment']} at {x['detected_at']} "
            f"({x.get('session_id')})" for what, recs in (("extra", a_cmp.unexpected),
                                                        ("missing", a_cmp.missing)) for x in recs)
        assert a.proc.poll() is None and b2.proc.poll() is None
    finally:
        for w in (a, b, b2):
            if w is not None:
                w.stop()
