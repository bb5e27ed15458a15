"""Stage 2's seek-back runs on Faust's consumer thread, and only for a partition still assigned;
its commits skip partitions no longer assigned; its fetches wait less than Faust's 1.5 s."""

from __future__ import annotations

import asyncio
import inspect
from types import SimpleNamespace

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer.fetcher import Fetcher
from faust.types import TP

from app.stream.faust_offsets import seek_if_assigned, shorten_fetch_wait, skip_empty_commits


class Client:
    """aiokafka's consumer: assignment and seek."""

    def __init__(self, assigned) -> None:
        self.assigned, self.sought = set(assigned), []

    def assignment(self):
        return self.assigned

    def seek(self, tp, offset):
        self.sought.append((tp, offset))


class ConsumerThread:
    """Faust's AIOKafkaConsumerThread: runs what it is given on its own loop."""

    def __init__(self, client: Client) -> None:
        self.client, self.calls = client, 0

    def _ensure_consumer(self) -> Client:
        return self.client

    async def call_thread(self, fun, *args):
        self.calls += 1
        return await fun(*args)


class ThreadedConsumer:
    """Faust's ThreadDelegateConsumer; its own ``seek`` must not be used (wrong thread)."""

    def __init__(self, thread: ConsumerThread) -> None:
        self._thread, self._read_offset = thread, {}

    async def seek(self, tp, offset):
        raise AssertionError("seek from the agent's thread")


def test_seek_goes_through_the_consumer_thread_and_moves_fausts_read_offset():
    tp = TP("loadshape.sessions", 3)
    client = Client([TopicPartition("loadshape.sessions", 3)])
    consumer = ThreadedConsumer(ConsumerThread(client))
    assert asyncio.run(seek_if_assigned(consumer, tp, 17)) is True
    assert client.sought == [(tp, 17)] and consumer._thread.calls == 1
    assert consumer._read_offset == {tp: 17}


def test_a_partition_no_longer_assigned_is_left_alone():
    tp = TP("loadshape.sessions", 3)
    client = Client([TopicPartition("loadshape.sessions", 1)])  # revoked meanwhile
    consumer = ThreadedConsumer(ConsumerThread(client))
    assert asyncio.run(seek_if_assigned(consumer, tp, 17)) is False
    assert client.sought == [] and consumer._read_offset == {}


def test_a_consumer_without_a_thread_is_asked_to_seek():
    class Plain:
        sought = None

        async def seek(self, tp, offset):
            self.sought = (tp, offset)

    plain = Plain()
    assert asyncio.run(seek_if_assigned(plain, TP("t", 0), 5)) is True
    assert plain.sought == (TP("t", 0), 5)


class CommittingThread(ConsumerThread):
    """The consumer thread's ``_commit``: records what it was asked to commit."""

    def __init__(self, client: Client) -> None:
        super().__init__(client)
        self.committed = []

    def assignment(self):
        return self.client.assignment()

    async def _commit(self, offsets) -> bool:
        self.committed.append(dict(offsets))
        return True


def test_a_commit_of_partitions_no_longer_assigned_is_skipped_not_crashed():
    kept, gone = TP("loadshape.sessions", 2), TP("loadshape.sessions", 0)
    thread = CommittingThread(Client([TopicPartition("loadshape.sessions", 2)]))
    consumer = ThreadedConsumer(thread)
    skip_empty_commits(consumer)
    skip_empty_commits(consumer)  # idempotent: the agent may restart
    assert asyncio.run(thread._commit({gone: 10})) is False  # Faust would hand aiokafka {}
    assert asyncio.run(thread._commit({gone: 10, kept: 7})) is True
    assert thread.committed == [{gone: 10, kept: 7}]  # Faust's own commit filters the rest


def test_the_fetch_wait_goes_to_the_running_fetcher_and_its_consumer():
    fetcher = SimpleNamespace(_fetch_max_wait_ms=1500)
    client = Client([])
    client._fetcher, client._fetch_max_wait_ms = fetcher, 1500
    thread = ConsumerThread(client)
    thread._consumer = client
    assert shorten_fetch_wait(ThreadedConsumer(thread), 100)
    assert (fetcher._fetch_max_wait_ms, client._fetch_max_wait_ms) == (100, 100)


def test_no_fetch_wait_is_set_before_faust_created_its_consumer():
    thread = ConsumerThread(Client([]))
    thread._consumer = None
    assert not shorten_fetch_wait(ThreadedConsumer(thread), 100)
    assert not shorten_fetch_wait(None, 100)


def test_aiokafka_reads_the_fetch_wait_where_it_is_set():
    """The private attributes ``shorten_fetch_wait`` sets are the ones aiokafka reads: the
    fetcher for every fetch request, the consumer when it creates a fetcher."""
    fetcher = inspect.getsource(Fetcher)
    assert "self._fetch_max_wait_ms = fetch_max_wait_ms" in fetcher
    assert fetcher.count("self._fetch_max_wait_ms") >= 2
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(AIOKafkaConsumer)
