"""Checkpoints of stage 2's source watermarks: as of the acked records, with their offset."""

from __future__ import annotations

import orjson

from app.stream.source_state import PartitionSources, sources_key


class Settings:
    spans_partitions, source_idle_s, source_quiet_s = 2, 300.0, 120.0


def test_the_checkpoint_holds_only_acked_records_and_says_up_to_where():
    sources = PartitionSources({}, Settings())
    for offset, (src, wm) in enumerate([(0, 10), (1, 20), (0, 30)]):
        sources.read(5, offset, 100 + offset)
        sources.beat(5, offset, src, wm)
    sources.acked(5, 0, 100, (0, 10))
    sources.acked(5, 1, 101, (1, 20))
    doc = orjson.loads(sources.dump(5))
    assert doc["at"] == 2 and doc["state"]["wm"] == [[0, 10], [1, 20]]
    assert sources.of(5).to_dict()["wm"] == [[0, 30], [1, 20]]  # the live copy read further


def test_a_restored_partition_skips_what_its_checkpoint_holds_and_reads_on_after_it():
    first = PartitionSources({}, Settings())
    for offset, (src, wm) in enumerate([(0, 10), (1, 20)]):
        first.read(5, offset, 100 + offset)
        first.beat(5, offset, src, wm)
        first.acked(5, offset, 100 + offset, (src, wm))
    table = {sources_key(5): first.dump(5)}
    again = PartitionSources(table, Settings())
    assert again.has_checkpoint(5) and again.resume_at(5) == 2
    for offset, (src, wm) in enumerate([(0, 10), (1, 20), (0, 40)]):  # read again from 0
        again.read(5, offset, 100 + offset)
        again.beat(5, offset, src, wm)
        again.acked(5, offset, 100 + offset, (src, wm))
    assert again.of(5).to_dict() == again.acked_state(5)
    fresh = PartitionSources({}, Settings())  # the same three records, never interrupted
    for offset, (src, wm) in enumerate([(0, 10), (1, 20), (0, 40)]):
        fresh.read(5, offset, 100 + offset)
        fresh.beat(5, offset, src, wm)
    assert again.of(5).to_dict() == fresh.of(5).to_dict()


def test_a_checkpoint_of_the_earlier_format_loads_and_names_no_offset():
    sources = PartitionSources({}, Settings())
    sources.read(5, 0, 100)
    sources.beat(5, 0, 1, 70)
    legacy = orjson.dumps(sources.of(5).to_dict())  # before checkpoints said their offset
    restored = PartitionSources({sources_key(5): legacy}, Settings())
    assert restored.has_checkpoint(5) and restored.resume_at(5) is None
    assert restored.of(5).to_dict() == sources.of(5).to_dict()
    assert not PartitionSources({}, Settings()).has_checkpoint(5)
