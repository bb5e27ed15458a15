"""Faust skips and *acks* records it does not deliver; the Stage2 shell must not lose them.

Faust's stream iterator (``faust/_cython/streams.pyx`` ``StreamIterator``, and the pure-Python
``Stream._py_aiter``) does not hand a record to the agent while flow control is suspended or
when its ``generation_id`` is not the app's current one (around a rebalance), and acks it
anyway. Before the fix these acks bypassed the shell's in-order acks: with nothing committed
yet (or the unacked record right after the committed offset) Faust's ``Consumer._new_offset``
committed the end of the skipped run, past sessions no checkpoint held; the next owner resumed
after them and never folded them (extra and missing ``assumption_broken`` alerts in
``tests/integration/test_stage1_restore.py``'s group hand-overs), and a record skipped while a
worker read on was never folded by that worker.
"""

from __future__ import annotations

import pytest
from faust.types import TP
from stage2_harness import TOPIC, Stream, Table, Worker, records

from app.core.stage2 import SegmentStep


class SkippingStream(Stream):
    """A record at an offset in ``skip`` is acked as Faust acks a skipped record, not yielded
    (once: read again after a seek, it is delivered)."""

    def __init__(self, *args, skip: set[int], **kw) -> None:
        super().__init__(*args, **kw)
        self.skip = skip

    async def events(self):
        async for event in super().events():
            if event.message.offset in self.skip:
                self.skip.discard(event.message.offset)
                self.committer.ack(event.message)  # Faust: StreamIterator.after(skipped_value)
                continue
            yield event


def folded(state: dict[bytes, bytes]) -> dict[bytes, int]:
    return {seg: SegmentStep.document(b)["monitor"]["sessions"] for seg, b in state.items()}


def test_events_faust_skips_in_a_rebalance_are_folded_by_the_next_owner():
    import asyncio

    recs = records()
    ref = Worker(Table(), {})
    ref.run(recs)

    first = Worker(Table(), {})
    # the first 40 records are handled (none checkpointed yet: CHECKPOINT_EVERY is 200), then a
    # rebalance starts: Faust skips (and acks) the next 60 and the partition moves on.
    stream = SkippingStream(recs, first.committer, 100, skip=set(range(40, 100)))
    asyncio.run(first.stage2.run(stream))
    tp = TP(TOPIC, 0)
    second = Worker(Table(first.app.table), {tp: first.committer.committed(tp)})
    second.run(recs)
    assert first.committer.committed(tp) <= 40  # never past a record the shell did not fold
    assert folded(second.state()) == folded(ref.state())
    assert second.state() == ref.state()
    assert first.alerts() | second.alerts() == ref.alerts()


@pytest.mark.parametrize("skip", [set(range(30)), {7}, {300}, {300, 301, 302}, {555, 917},
                                  set(range(100, 180))])
def test_a_record_faust_skips_while_reading_on_is_read_again(skip):
    """The shell sees the hole (the next record is past it), seeks back and folds it."""
    import asyncio

    recs = records()
    ref = Worker(Table(), {})
    ref.run(recs)
    w = Worker(Table(), {})
    asyncio.run(w.stage2.run(SkippingStream(recs, w.committer, None, skip=set(skip))))
    assert w.state() == ref.state()
    assert w.alerts() == ref.alerts()


def test_a_record_delivered_twice_is_handled_once():
    import asyncio

    recs = records()
    ref = Worker(Table(), {})
    ref.run(recs)
    w = Worker(Table(), {})
    doubled = [e for e in recs[:400] for _ in (0, 1)] + recs[400:]
    asyncio.run(w.stage2.run(Stream(doubled, w.committer, None)))
    assert w.state() == ref.state()
    assert w.alerts() == ref.alerts()
