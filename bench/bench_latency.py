"""End-to-end latency: from ``emit()`` of the span that completes a triggering session to the
arrival of the alert it causes on ``loadshape.alerts``, at a steady background load.

Background: the SpanEmitter sends 4-span ``bg`` sessions at ``rate`` spans/s, stamped with the
wall clock (event time = now, so watermarks advance in real time). Each trial k uses a fresh
segment ``lat-k`` with the declared assumption "lat-k: fanout p50 >= 1"; the tracker judges a
segment from its 30th session, so 29 one-span sessions (fan-out 0) go first, and the 30th's
session_end span is the trigger. Stage 2 releases a session once every span partition's
watermark has passed it by ``reorder_lateness_s``; the bench sets that to 0.25 s (the default,
30 s, is a latency floor of 30 s by design), and stage 1's heartbeats (every 128 spans of a
partition, and 0.1 s after the last while it has spans to tell of) are part of the figure.
At the low rate, a partition's watermark moves only when one of its sessions arrives (a
4-span session every ~0.4 s per partition): most of that figure is waiting for every
partition to see an event time past the trigger's plus the lateness.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import orjson

from app.testing import WorkerProcess
from bench.common import Row, fresh, verdict

LATENESS_S = 0.25


def assumptions_yaml(trials: int) -> str:
    lines = ["assumptions:"]
    for k in range(trials):
        lines.append(f"  - {{id: lat-{k}, segment: {{agent: lat-{k}}}, metric: fanout, stat: p50, "
                     f"op: '>=', bound: 1, why: latency probe}}")
    return "\n".join(lines) + "\n"


def span(sid: str, span_id: str, agent: str, *, parent=None, end: bool = False, op="chat") -> dict:
    now = time.time_ns()
    return {"trace_id": sid, "span_id": span_id, "parent_span_id": parent, "session_id": sid,
            "agent": agent, "operation": op, "session_end": end, "input_tokens": 100,
            "start_time_unix_nano": now - 1000, "end_time_unix_nano": now}


async def _measure(settings, rate: int, trials: int) -> list[float]:
    from aiokafka import AIOKafkaConsumer

    from app.broker.client_config import aiokafka_kwargs
    from app.emitter import SpanEmitter

    emitter = SpanEmitter(settings, linger_ms=5)
    await emitter.start()
    arrived: dict[str, float] = {}
    consumer = AIOKafkaConsumer(settings.topic_alerts, auto_offset_reset="earliest",
                                enable_auto_commit=False, **aiokafka_kwargs(settings))
    await consumer.start()
    stop = asyncio.Event()

    async def listen():
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=50)
            now = time.perf_counter()
            for records in batch.values():
                for r in records:
                    agent = orjson.loads(r.value)["segment"]["agent"]
                    arrived.setdefault(agent, now)

    async def background():
        i, t0 = 0, time.perf_counter()
        while not stop.is_set():
            sid = f"bg-{i}"
            for j in range(3):
                emitter.emit(span(sid, f"c{j}", "bg", parent="root"))
            emitter.emit(span(sid, "root", "bg", end=True, op="invoke_agent"))
            i += 1
            ahead = (4 * i) / rate - (time.perf_counter() - t0)
            await asyncio.sleep(max(ahead, 0))

    tasks = [asyncio.create_task(listen()), asyncio.create_task(background())]
    await asyncio.sleep(5)  # warm-up: watermarks of every partition are moving
    latencies = []
    for k in range(trials):
        agent = f"lat-{k}"
        for j in range(29):
            emitter.emit(span(f"{agent}-{j}", "root", agent, end=True, op="invoke_agent"))
        await asyncio.sleep(1.5)  # the 29 are folded; no alert yet (not judged below 30)
        emitter.emit(span(f"{agent}-29", "root", agent, end=True, op="invoke_agent"))
        sent = time.perf_counter()
        deadline = sent + 20
        while agent not in arrived and time.perf_counter() < deadline:
            await asyncio.sleep(0.005)
        if agent in arrived:
            latencies.append(arrived[agent] - sent)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    await consumer.stop()
    await emitter.close(timeout=5)
    return latencies


def run(base, workdir: Path, *, rate: int = 2000, low_rate: int = 40,
        trials: int = 25) -> tuple[list[Row], dict]:
    """At ``rate`` (the goal's steady load) and at ``low_rate`` (a quiet pipeline: every span
    partition's watermark moves only when one of its few sessions arrives)."""
    path = workdir / "latency-assumptions.yaml"
    path.write_text(assumptions_yaml(trials))
    rows, facts = [], {}
    for r, goal in ((rate, True), (low_rate, False)):
        settings = fresh(base, f"lat{r}", workdir, assumptions_file=path,
                         reorder_lateness_s=LATENESS_S)
        worker = WorkerProcess(settings, workdir / f"latency-worker-{r}.log").start()
        try:
            worker.wait_ready()
            lat = sorted(asyncio.run(_measure(settings, r, trials)))
        finally:
            worker.stop()
        rows += _rows(lat, r, trials, goal)
        facts[f"latencies_{r}"] = lat
    return rows, facts


def _rows(lat: list[float], rate: int, trials: int, goal: bool) -> list[Row]:
    load = f"background {rate:,} spans/s"
    if not lat:
        return [Row("2 Latency", f"span send -> alert ({load})", "no alert arrived",
                    "p99 <= 1 s" if goal else "", "MISSED" if goal else "")]
    p50 = statistics.median(lat)
    p99 = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]
    note = (f"{len(lat)}/{trials} trials, {load}, reorder_lateness_s={LATENESS_S}; "
            f"min {lat[0]:.3f} s, max {lat[-1]:.3f} s")
    what = "span send -> alert on loadshape.alerts" + ("" if goal else f" at {rate} spans/s")
    return [Row("2 Latency", f"{what}, p50", f"{p50:.3f} s", note=note),
            Row("2 Latency", f"{what}, p99", f"{p99:.3f} s", "<= 1 s" if goal else "",
                verdict(p99 <= 1.0 and len(lat) == trials) if goal else "")]
