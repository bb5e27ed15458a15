"""An in-memory stand-in for the Faust pieces ``app.stream.stage2.Stage2`` touches (app, table,
stream, topics), so the real shell runs in a unit test.

Acks go through Faust's own commit rule (``Consumer._new_offset``: acked offsets -> the offset
Kafka is told to resume from), with a commit after every record (the worst case). A "kill -9"
keeps what a real one keeps: the segment table (its changelog) and the committed offset.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass

import orjson
from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree
from prometheus_client import CollectorRegistry

from app.core.segment import MonitorConfig, SegmentMonitor
from app.core.stage2 import SegmentStep
from app.metrics import LoadshapeMetrics
from app.settings import Settings
from app.stream.stage2 import WATERMARK_KEY, Stage2
from schemas import closed_wm
from schemas.common import Segment
from schemas.session import SessionShape

TOPIC = "sessions"
SEC = 10**9


# --- a minimal stand-in for the Faust pieces Stage2 touches ----------------------------------
@dataclass
class Msg:
    partition: int
    offset: int
    timestamp: float | None
    topic: str = TOPIC
    headers: list[tuple[str, bytes]] | None = None

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


@dataclass
class Event:
    key: bytes | None
    value: bytes
    message: Msg


class Table(dict):
    @property
    def data(self):
        return self


class Sink:
    """A Faust topic: ``send`` buffers the record and returns a future that resolves once it is
    delivered. Delivered at once, or with ``lagging`` on the event loop's next turn, as
    Faust's producer does in the background: a record still buffered when the run ends
    (a kill -9) is lost and never reaches ``delivered``."""

    def __init__(self, lagging: bool = False) -> None:
        self.sent: list[tuple[bytes | None, bytes]] = []
        self.delivered: list[tuple[bytes | None, bytes]] = []
        self.lagging, self.killed = lagging, False

    async def send(self, key=None, value=None, **kw):
        self.sent.append((key, value))
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self.lagging:
            loop.call_soon(self._deliver, fut, (key, value))
        else:
            self._deliver(fut, (key, value))
        return fut

    def _deliver(self, fut, record) -> None:
        if self.killed:  # the process is gone: its producer's buffer with it
            return
        self.delivered.append(record)
        fut.set_result(None)


class Topics:
    def __init__(self, lagging: bool = False) -> None:
        self.alerts, self.dlq, self.sessions = Sink(lagging), Sink(lagging), Sink(lagging)

    def kill(self) -> None:
        self.alerts.killed = self.dlq.killed = self.sessions.killed = True


class Signal:
    def connect(self, fn):
        return fn


class App:
    def __init__(self, table: Table, consumer=None) -> None:
        self.table = table
        self.consumer = consumer  # the _Committer: Faust's commit bookkeeping, seek
        self.agents = []
        self.on_partitions_revoked = Signal()

    def Table(self, name, **kw):  # noqa: N802 - Faust's spelling
        return self.table

    def agent(self, topic, name=None):
        def register(fn):
            self.agents.append(fn)
            return fn
        return register


class _Committer:
    """Faust's bookkeeping of acked offsets, with its real ``_new_offset`` commit rule."""

    _new_offset = Consumer._new_offset

    def __init__(self, committed: dict[TP, int]) -> None:
        self._acked = defaultdict(list)
        self._acked_index = defaultdict(set)
        self._gap = defaultdict(IntervalTree)
        # Faust keeps None for "nothing committed" and for a committed offset of 0
        self._committed_offset = defaultdict(lambda: None, {tp: o or None for tp, o in committed.items()})
        self.sought: int | None = None  # offset a seek asked the stream to read from next

    async def seek(self, tp: TP, offset: int) -> None:  # Consumer.seek
        self.sought = offset

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:  # Consumer.earliest_offsets
        return {tp: 0 for tp in tps}

    def ack(self, msg: Msg) -> None:  # Consumer.ack
        committed = self._committed_offset[msg.tp]
        if committed is None or msg.offset >= committed:
            if msg.offset not in self._acked_index[msg.tp]:
                self._acked_index[msg.tp].add(msg.offset)
                self._acked[msg.tp].append(msg.offset)

    def commit(self) -> None:  # Consumer._commit_tps, minus Kafka
        for tp in list(self._acked):
            offset = self._new_offset(tp)
            committed = self._committed_offset[tp]
            if offset is not None and (committed is None or offset > committed):
                self._committed_offset[tp] = offset

    def committed(self, tp: TP) -> int:
        return self._committed_offset[tp] or 0


class Stream:
    def __init__(self, records: list[Event], committer: _Committer, stop_after: int | None,
                 on_commit=None, start: int = 0) -> None:
        """``records``: the whole partition; it is read from offset ``start`` (the committed
        one), and a seek may move back before it, as Kafka's would."""
        self.records, self.committer, self.stop_after = records, committer, stop_after
        self.start = start
        self.on_commit = on_commit or (lambda: None)
        self.acked: list[Event] = []

    def noack(self):
        return self

    async def events(self):
        i, n = self.start, 0
        while i < len(self.records):
            if self.stop_after is not None and n >= self.stop_after:
                return  # kill -9
            event = self.records[i]
            i, n = i + 1, n + 1
            yield event
            self.committer.commit()  # the worst case: a commit after every record
            self.on_commit()
            if self.committer.sought is not None:  # Consumer.seek: read on from there
                i = self.committer.sought
                self.committer.sought = None

    async def ack(self, event: Event) -> bool:
        self.acked.append(event)
        self.committer.ack(event.message)
        return True


# --- the run ---------------------------------------------------------------------------------
def settings(**over) -> Settings:
    return Settings(**{"spans_partitions": 2, "sessions_partitions": 1, "topic_sessions": TOPIC,
                       **over})


def step() -> SegmentStep:
    return SegmentStep(SegmentMonitor(MonitorConfig(baseline_n=200, rebaseline_n=200)),
                       lateness_ns=0)


def shape(i: int, end_ns: int | None = None, agent: str | None = None) -> SessionShape:
    """Session ``i``: segment "b" one time in four, else "a", whose fan-out shifts at 450."""
    agent = agent or ("b" if i % 4 == 3 else "a")
    fanout = (11 + i % 3) if (agent == "a" and i >= 450) else 3 + i % 3
    end = i * SEC + 1 if end_ns is None else end_ns
    return SessionShape(session_id=f"s{i}", segment=Segment(agent=agent),
                        start_time_unix_nano=end - 1, end_time_unix_nano=end,
                        closed_by="session_end", spans=5, fanout=fanout)


class Log:
    """The records of one stage-2 partition, with their Kafka timestamps (seconds)."""

    def __init__(self) -> None:
        self.records: list[Event] = []

    def session(self, s: SessionShape, ts: float, closed: tuple[int, int] | None = None) -> None:
        """``closed``: (span partition, watermark) for the ``loadshape-closed-wm`` header."""
        headers = None if closed is None else [(closed_wm.HEADER, closed_wm.encode(*closed))]
        self._add(s.segment.key.encode(), s.model_dump_json().encode(), ts, headers)

    def beat(self, src: int, wm_ns: int, ts: float, ck: int | None = None) -> None:
        beat = {"src": src, "wm": wm_ns} if ck is None else {"src": src, "wm": wm_ns, "ck": ck}
        self._add(WATERMARK_KEY, orjson.dumps(beat), ts)

    def _add(self, key: bytes, value: bytes, ts: float, headers=None) -> None:
        self.records.append(Event(key, value, Msg(0, len(self.records), ts, headers=headers)))


END_NS = 10**6 * SEC  # a watermark past every session of these tests


def records(n_sessions: int = 900, beat_every: int = 5) -> list[Event]:
    """Sessions of two segments (3:1) and heartbeats of two span partitions, in step."""
    log = Log()
    for i in range(n_sessions):
        ts = 1000.0 + i * 0.01
        log.session(shape(i), ts)
        if i % beat_every == beat_every - 1:
            for src in (0, 1):
                log.beat(src, i * SEC + 1, ts)
    for src in (0, 1):  # every source passes the end: release everything
        log.beat(src, END_NS, 1000.0 + n_sessions * 0.01)
    return log.records


def records_out_of_order(n_sessions: int = 900, lag: int = 6) -> list[Event]:
    """Span partition 0 closes the even sessions, partition 1 the odd ones, read ``lag``
    sessions late: a segment's sessions arrive out of event-time order and only the
    watermarks put them back in order. Segment "b" (one in three) mixes both partitions.
    Sessions carry their ``loadshape-closed-wm`` header, heartbeats a checkpoint watermark.
    One malformed record, to be dead-lettered once."""
    order = []
    for i in range(n_sessions):
        if i % 2 == 0:
            order.append(i)
        if i >= lag and (i - lag) % 2 == 1:
            order.append(i - lag)
    order += [j for j in range(n_sessions - lag, n_sessions) if j % 2 == 1]
    log, top = Log(), {0: None, 1: None}
    for k, i in enumerate(order):
        ts = 1000.0 + k * 0.01
        log.session(shape(i, agent="b" if i % 3 == 1 else "a"), ts, closed=(i % 2, i * SEC + 1))
        top[i % 2] = i
        if k == 333:
            log._add(b"a", b'{"session_id": "broken"', ts)
        if k % 5 == 4:
            for src, last in top.items():
                if last is not None:  # durable checkpoints lag 20 sessions behind
                    log.beat(src, last * SEC + 1, ts, ck=max(0, last - 20) * SEC)
    for src in (0, 1):
        log.beat(src, END_NS, 1000.0 + n_sessions * 0.01)
    return log.records


class Worker:
    """One worker process: a Stage2 shell over its table and the committed offsets."""

    def __init__(self, table: Table | None = None, committed: dict[TP, int] | None = None,
                 clock=lambda: 0.0, lagging: bool = False, **settings_over) -> None:
        self.committer = _Committer(committed or {})
        self.app = App(Table() if table is None else table, self.committer)
        self.topics = Topics(lagging)
        metrics = LoadshapeMetrics.create(CollectorRegistry(), max_segments=20)
        self.stage2 = Stage2(self.app, settings(**settings_over), self.topics, metrics, step(),
                             clock=clock)

    def run(self, recs: list[Event], stop_after: int | None = None, on_commit=None) -> Stream:
        start = self.committer.committed(TP(TOPIC, 0))
        stream = Stream(recs, self.committer, stop_after, on_commit, start=start)

        async def run() -> None:
            await self.stage2.run(stream)
            if stop_after is not None:
                self.topics.kill()  # kill -9: what is still buffered is lost
            await asyncio.sleep(0)  # else: the producer delivers what is buffered

        asyncio.run(run())
        return stream

    def alerts(self) -> set[bytes]:
        """The alerts Kafka has (after a kill -9: only those delivered before it)."""
        return {v for k, v in self.topics.alerts.delivered}

    def state(self) -> dict[bytes, bytes]:
        return {seg: SegmentStep.dump(e) for seg, e in sorted(self.stage2.entries.items())}
