"""SpanEmitter / SyncSpanEmitter without a broker: validation, accounting, never blocking."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import orjson
import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    NotLeaderForPartitionError,
    ProducerClosed,
)

from app.emitter import InvalidSpanError, SpanEmitter, SyncSpanEmitter
from app.emitter.buffer import SpanBuffer
from app.settings import Settings
from schemas.span import SpanEvent

CLOSED = Settings(bootstrap_servers="127.0.0.1:1")  # nothing listens on port 1


def span(i: int = 0, **over) -> dict:
    base = {"trace_id": f"t{i}", "span_id": f"s{i}", "session_id": f"sess-{i % 7}",
            "agent": "dev", "operation": "chat", "input_tokens": 10, "output_tokens": 2,
            "start_time_unix_nano": 1_000 + i, "end_time_unix_nano": 2_000 + i}
    return base | over


def balanced(stats) -> bool:
    """Every accepted span is in exactly one place."""
    return stats.queued == (stats.sent + stats.dropped_buffer_full + stats.dropped_send_failed
                            + stats.buffered + stats.in_flight)


class FakeKafka:
    """Producer factory; ``mode`` per send: ok | fail (after 'retries') | hang | refuse_once."""

    def __init__(self, mode: str = "ok", start_failures: int = 0, hang_stop: bool = False):
        self.mode, self.start_failures, self.hang_stop = mode, start_failures, hang_stop
        self.records: list[tuple[str, bytes, bytes]] = []
        self.kwargs: list[dict] = []
        self.starts = 0

    def __call__(self, **kwargs):
        self.kwargs.append(kwargs)
        return _FakeProducer(self)


class _FakeProducer:
    def __init__(self, kafka: FakeKafka):
        self.kafka = kafka
        self.pending: list[asyncio.Future] = []

    async def start(self):
        self.kafka.starts += 1
        if self.kafka.starts <= self.kafka.start_failures:
            raise KafkaConnectionError("broker down")

    async def send(self, topic, value, key=None):
        fut = asyncio.get_running_loop().create_future()
        mode = self.kafka.mode
        if mode.endswith("_once"):
            self.kafka.mode = "ok"
            raise {"refuse_once": KafkaTimeoutError(), "closed_once": ProducerClosed(),
                   "poison_once": TypeError("unserialisable")}[mode]
        if mode == "ok":
            self.kafka.records.append((topic, key, value))
            fut.set_result(None)
        elif mode == "fail":
            fut.set_exception(NotLeaderForPartitionError())
        else:
            self.pending.append(fut)
        return fut

    async def stop(self):
        if self.kafka.hang_stop:
            await asyncio.sleep(3600)


# --- validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"input_tokens": -5}, "input_tokens"),
        ({"session_id": ""}, "session_id"),
        ({"attempt": 0}, "attempt"),
        ({"end_time_unix_nano": 1}, "end_time_unix_nano"),
        ({"status": "maybe"}, "status"),
        ({"complexity": float("nan")}, "complexity"),
    ],
)
def test_malformed_span_is_refused_naming_the_field(bad, field):
    emitter = SpanEmitter(CLOSED)
    with pytest.raises(InvalidSpanError) as info:
        emitter.emit(span(**bad))
    assert info.value.field == field
    assert str(info.value).startswith(field)
    assert isinstance(info.value, ValueError)
    assert emitter.stats.invalid == 1 and emitter.stats.queued == 0


def test_missing_field_and_non_mapping_are_refused():
    emitter = SpanEmitter(CLOSED)
    incomplete = span()
    del incomplete["session_id"]
    with pytest.raises(InvalidSpanError, match="session_id: Field required"):
        emitter.emit(incomplete)
    with pytest.raises(InvalidSpanError, match="expected a SpanEvent or a mapping"):
        emitter.emit(["not", "a", "span"])
    assert emitter.stats.invalid == 2


def test_record_is_keyed_by_session_and_keeps_extras():
    emitter = SpanEmitter(CLOSED)
    assert emitter.emit(span(3, custom={"a": 1}))
    assert emitter.emit(SpanEvent.model_validate(span(4)))
    records = emitter._buffer.take(10)
    assert [k for k, _ in records] == [b"sess-3", b"sess-4"]
    value = orjson.loads(records[0][1])
    assert value["custom"] == {"a": 1} and value["attempt"] == 1 and value["model"] is None
    assert SpanEvent.model_validate_json(records[0][1]).span_id == "s3"


# --- buffer accounting ------------------------------------------------------------------


def test_full_buffer_drops_the_oldest_and_counts():
    emitter = SpanEmitter(CLOSED, buffer_size=100)
    assert all(emitter.emit(span(i)) for i in range(1000))  # not started: all buffered
    s = emitter.stats
    assert (s.queued, s.dropped_buffer_full, s.buffered) == (1000, 900, 100)
    kept = [orjson.loads(v)["span_id"] for _, v in emitter._buffer.take(1000)]
    assert kept == [f"s{i}" for i in range(900, 1000)]  # the newest survive


def test_given_back_records_go_first_and_overflow_drops_oldest():
    buf = SpanBuffer(capacity=3)
    for i in range(3):
        buf.push((b"k", b"%d" % i))
    taken = buf.take(2)  # 0, 1 in flight
    buf.push((b"k", b"3"))
    buf.push((b"k", b"4"))  # buffer 2, 3, 4: full
    buf.give_back(taken)  # no room: both dropped as the oldest
    assert [v for _, v in buf.take(10)] == [b"2", b"3", b"4"]
    s = buf.stats()
    assert (s.dropped_buffer_full, s.in_flight) == (2, 3) and balanced(s)


def test_emit_is_constant_work_whatever_the_buffer_holds():
    """Same Python call trace for emit() into an empty buffer and into a full 100k one."""

    def trace_of_one_emit(emitter, i):
        calls: list[str] = []

        def note(frame, event, arg):
            if event == "call":
                calls.append(frame.f_code.co_name)
            elif event == "c_call":
                calls.append(arg.__name__)

        sys.setprofile(note)
        try:
            emitter.emit(span(i))
        finally:
            sys.setprofile(None)
        return calls

    small, full = SpanEmitter(CLOSED, buffer_size=100_000), SpanEmitter(CLOSED, buffer_size=100_000)
    trace_of_one_emit(small, 0)  # warm up lazy imports / caches
    for i in range(100_000):
        full.emit(span(i))
    empty_trace, full_trace = trace_of_one_emit(small, 1), trace_of_one_emit(full, 1)
    # the only extra step when full: dropping the oldest record
    assert [c for c in full_trace if c != "popleft"] == empty_trace
    assert full_trace.count("popleft") == 1 and len(full_trace) < 60
    assert full.stats.dropped_buffer_full == 1


def test_emit_never_touches_the_producer():
    assert not inspect.iscoroutinefunction(SpanEmitter.emit)
    kafka = FakeKafka(mode="hang")

    async def run():
        emitter = SpanEmitter(CLOSED, producer_factory=kafka)
        await emitter.start()
        await asyncio.sleep(0.05)
        sent_before = len(kafka.records)
        for i in range(100):
            assert emitter.emit(span(i))
        assert len(kafka.records) == sent_before  # emit only appended to the buffer
        await emitter.close(timeout=0.2)

    asyncio.run(run())


# --- sending, failures and close -----------------------------------------------------------


def run_emitter(kafka: FakeKafka, n: int, close_timeout: float = 2.0, **options):
    async def run():
        emitter = SpanEmitter(CLOSED, producer_factory=kafka, **options)
        await emitter.start()
        for i in range(n):
            emitter.emit(span(i))
        flushed = await emitter.flush(timeout=close_timeout)
        await emitter.close(timeout=close_timeout)
        return emitter, flushed

    return asyncio.run(run())


def test_sends_everything_keyed_by_session():
    kafka = FakeKafka()
    emitter, flushed = run_emitter(kafka, 2000)
    assert flushed
    s = emitter.stats
    assert (s.sent, s.dropped, s.buffered, s.in_flight) == (2000, 0, 0, 0)
    assert {t for t, _, _ in kafka.records} == {"agent.spans"}
    assert all(k == f"sess-{i % 7}".encode() for i, (_, k, _) in enumerate(kafka.records))
    producer_config = kafka.kwargs[0]
    assert (producer_config["compression_type"], producer_config["linger_ms"]) == ("gzip", 20)


def test_delivery_failures_are_counted_not_silent():
    emitter, flushed = run_emitter(FakeKafka(mode="fail"), 300)
    s = emitter.stats
    assert flushed and (s.sent, s.dropped_send_failed) == (0, 300) and balanced(s)


def test_reconnects_after_failed_starts_and_resends_refused_records():
    kafka = FakeKafka(mode="refuse_once", start_failures=2)
    emitter, flushed = run_emitter(kafka, 50, close_timeout=5.0)
    assert kafka.starts == 3 and flushed
    assert emitter.stats.sent == 50 and emitter.stats.dropped == 0


def test_a_record_the_producer_refuses_is_counted_and_skipped():
    emitter, flushed = run_emitter(FakeKafka(mode="poison_once"), 100)
    s = emitter.stats
    assert flushed and (s.sent, s.dropped_send_failed) == (99, 1) and balanced(s)


def test_a_closed_producer_is_replaced_without_losing_records():
    kafka = FakeKafka(mode="closed_once")
    emitter, flushed = run_emitter(kafka, 100, close_timeout=5.0)
    assert flushed and kafka.starts == 2 and emitter.stats.sent == 100


def test_oversized_span_is_refused_at_emit():
    emitter = SpanEmitter(CLOSED)
    with pytest.raises(InvalidSpanError, match="over the .*-byte limit"):
        emitter.emit(span(blob="x" * 2_000_000))
    assert emitter.stats.invalid == 1


@pytest.mark.parametrize("kafka", [FakeKafka(mode="hang", hang_stop=True), None])
def test_close_returns_within_timeout_and_counts_the_rest(kafka):
    """Hung producer (fake), or an unreachable broker (real aiokafka, closed port)."""
    options = {"producer_factory": kafka} if kafka else {}

    async def run():
        emitter = SpanEmitter(CLOSED, buffer_size=1000, **options)
        await emitter.start()
        for i in range(1500):
            emitter.emit(span(i))
        await asyncio.sleep(0.1)
        began = time.monotonic()
        await emitter.close(timeout=0.5)
        return emitter.stats, time.monotonic() - began

    stats, took = asyncio.run(run())
    assert took < 1.5  # the timeout (0.5 s) plus scheduling slack on a busy machine
    assert (stats.queued, stats.sent, stats.dropped_buffer_full) == (1500, 0, 500)
    assert stats.dropped_send_failed == 1000 and stats.buffered == stats.in_flight == 0


def test_emit_after_close_is_refused_and_counted():
    async def run():
        emitter = SpanEmitter(CLOSED, producer_factory=FakeKafka())
        await emitter.start()
        await emitter.close(timeout=0.5)
        return emitter.emit(span()), emitter.stats

    queued, stats = asyncio.run(run())
    assert not queued and stats.dropped_closed == 1 and stats.queued == 0


def test_unknown_compression_fails_fast():
    with pytest.raises(ValueError, match="compression"):
        SpanEmitter(CLOSED, compression="brotli")


# --- sync form ---------------------------------------------------------------------------


def test_sync_emitter_is_thread_safe():
    kafka = FakeKafka()
    with SyncSpanEmitter(CLOSED, producer_factory=kafka) as emitter:
        threads = [threading.Thread(target=lambda k=k: [emitter.emit(span(k * 1000 + i))
                                                        for i in range(1000)])
                   for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert emitter.flush(timeout=5.0)
    s = emitter.stats
    assert s.sent == 4000 and len({v for _, _, v in kafka.records}) == 4000 and balanced(s)
    assert not emitter._thread.is_alive()


def test_sync_emitter_with_broker_down_closes_in_time_and_refuses_bad_spans():
    emitter = SyncSpanEmitter(CLOSED, buffer_size=10)
    with pytest.raises(InvalidSpanError, match="^input_tokens"):
        emitter.emit(span(input_tokens=-1))
    assert all(emitter.emit(span(i)) for i in range(25))
    assert emitter.flush(timeout=0.1) is False
    began = time.monotonic()
    emitter.close(timeout=0.5)
    assert time.monotonic() - began < 1.5
    s = emitter.stats
    assert (s.invalid, s.queued, s.dropped_buffer_full, s.dropped_send_failed) == (1, 25, 15, 10)
    emitter.close()  # idempotent


def test_sync_emitter_left_open_is_closed_at_exit():
    script = textwrap.dedent("""
        import atexit, sys
        sys.path.insert(0, "tests/unit")
        from test_emitter import CLOSED, span
        from app.emitter import SyncSpanEmitter
        emitter = None
        atexit.register(lambda: print("stats", emitter.stats.queued, emitter.stats.dropped_send_failed))
        emitter = SyncSpanEmitter(CLOSED, close_timeout=0.3)
        for i in range(5):
            emitter.emit(span(i))
        # no close(): the interpreter exits with the emitter open
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=30, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert "stats 5 5" in done.stdout


def test_drops_are_exported_to_prometheus_as_the_emitter_counts_them():
    from prometheus_client import CollectorRegistry

    from app.emitter.metrics import register_emitter_metrics

    failing, _ = run_emitter(FakeKafka(mode="fail"), 120)
    ok, _ = run_emitter(FakeKafka(), 30)
    registry = CollectorRegistry()
    register_emitter_metrics(registry, lambda: [failing.stats, ok.stats])

    def sample(name: str, **labels) -> float:
        return registry.get_sample_value(name, labels)

    assert sample("loadshape_emitter_dropped_spans_total", reason="send_failed") == 120
    assert sample("loadshape_emitter_dropped_spans_total", reason="buffer_full") == 0
    assert sample("loadshape_emitter_spans_sent_total") == 30
    assert sample("loadshape_emitter_spans_queued_total") == 150
    assert sample("loadshape_emitter_buffered_spans") == 0
