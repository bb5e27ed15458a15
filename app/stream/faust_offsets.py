"""Where stage 2 reaches into Faust's consumer for offsets (faust-streaming 0.15, aiokafka 0.14).

Stage 2 handles each sessions partition strictly in offset order and acks only what a
checkpoint holds (see ``app.stream.stage2``). Faust's public API cannot express that, so its
private pieces are used, all here: its committed offsets (where a partition resumed), its
commit rule (``Consumer._new_offset``, capped at what stage 2 acked), a seek run on its
consumer thread, a guard for one of its rebalance races (an empty commit), and its fetch wait
(``shorten_fetch_wait``: not an offset, but the same private consumer). The unit tests
drive the commit rule through Faust's real ``_new_offset`` (``tests/unit/stage2_harness.py``)
and the rest through stand-ins of its consumer thread (``tests/unit/test_faust_offsets.py``).
"""

from __future__ import annotations


def committed_offset(consumer, tp) -> int | None:
    """The offset Faust resumed ``tp`` at (its committed offset), None if unknown or 0."""
    committed = getattr(consumer, "_committed_offset", None)
    return None if committed is None else committed.get(tp)


def guard_commits(consumer, topic: str, acked_upto: dict[int, int]) -> None:
    """Let Faust commit a partition of ``topic`` only up to ``acked_upto[partition]`` (the
    offset after the last record the shell acked; nothing while it has none)."""
    if consumer is None or getattr(consumer, "_loadshape_guarded", False):
        return
    new_offset = consumer._new_offset

    def guarded(tp):
        offset = new_offset(tp)
        if offset is None or tp.topic != topic:
            return offset
        limit = acked_upto.get(tp.partition)
        return None if limit is None else min(offset, limit)

    consumer._new_offset = guarded
    consumer._loadshape_guarded = True


def skip_empty_commits(consumer) -> None:
    """Faust's consumer thread commits only the offsets of partitions still assigned; when a
    rebalance has just taken every one of them it hands aiokafka an empty dict, which raises
    ``ValueError({})`` and crashes the worker (seen in the group tests). Such a commit is
    skipped instead (on the consumer's thread, where the assignment cannot change meanwhile)."""
    thread = getattr(consumer, "_thread", None)
    commit = getattr(thread, "_commit", None)
    if commit is None or getattr(thread, "_loadshape_skips_empty", False):
        return

    async def commit_if_assigned(offsets) -> bool:
        assigned = thread.assignment()
        if not any(tp in assigned for tp in offsets):
            return False  # what Faust's own commit returns when it did not commit
        return await commit(offsets)

    thread._commit = commit_if_assigned
    thread._loadshape_skips_empty = True


async def seek_if_assigned(consumer, tp, offset: int) -> bool:
    """Seek ``tp`` to ``offset`` if this worker still reads it (False if it does not).

    Faust's threaded consumer runs aiokafka on a thread of its own, but its ``seek`` calls
    aiokafka's from the agent's thread, racing the fetcher there: a group hand-over then
    ended in aiokafka's fetch task raising ``KeyError(TopicPartition(...))`` and the worker
    stopped. So the seek runs on the consumer's thread (as Faust's own ``seek_to_committed``
    does), after checking the assignment there; then Faust's read offset moves with it, as in
    ``Consumer.seek``. A consumer without that thread is simply asked to seek."""
    thread = getattr(consumer, "_thread", None)
    if thread is None or not hasattr(thread, "call_thread"):
        await consumer.seek(tp, offset)
        return True
    if not await thread.call_thread(_seek_on_consumer_thread, thread, tp, offset):
        return False
    consumer._read_offset[tp] = offset if offset else None
    return True


async def _seek_on_consumer_thread(thread, tp, offset: int) -> bool:
    client = thread._ensure_consumer()  # the aiokafka consumer; this runs on its loop
    if tp not in client.assignment():
        return False
    client.seek(tp, offset)
    return True


def shorten_fetch_wait(consumer, max_wait_ms: int) -> bool:
    """Let the fetches of Faust's aiokafka consumer wait at most ``max_wait_ms`` for data
    (True if set; False while that consumer does not exist yet).

    Faust creates it with ``fetch_max_wait_ms=1500``, fixed. aiokafka leaves a partition whose
    fetched records are not consumed yet out of the next fetch; when the partitions in that
    fetch have nothing new, it waits the full 1.5 s, and a drained partition waits behind it.
    Stage 2 working off a backlog sat idle ~1.3 s of 6.5 s that way (a worker's CPU flat while
    sessions waited in Kafka). The value goes to the running fetcher, read for every fetch,
    and to the consumer, which hands it to a fetcher it creates again."""
    client = getattr(getattr(consumer, "_thread", None), "_consumer", None)
    fetcher = getattr(client, "_fetcher", None)
    if fetcher is None or not hasattr(fetcher, "_fetch_max_wait_ms"):
        return False
    fetcher._fetch_max_wait_ms = client._fetch_max_wait_ms = max_wait_ms
    return True
