"""``loadshape demo``: the README's main job, end to end on this machine.

Starts the local Kafka broker (if not running), creates a fresh set of topics for this run,
starts a worker, runs the simulated agents of the reference scenario (dev-to-support) into
Kafka, and prints alerts as they arrive on the alerts topic. Ctrl-C stops it early.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import orjson


def register(sub) -> None:
    p = sub.add_parser("demo", help="broker + worker + simulated agents; print alerts as they arrive")
    p.add_argument("--scenario", default="dev-to-support")
    p.add_argument("--sessions", type=int, default=3000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--settle", type=float, default=20.0,
                   help="seconds to keep listening after the simulator finished")
    p.set_defaults(handler=run)


def run(args, settings) -> int:
    from app.broker import manager
    from app.broker.topics import ensure_topics

    res = manager.up(settings)
    print(f"demo: kafka {'started' if res.started else 'already running'} "
          f"(pid {res.pid}, 127.0.0.1:{settings.kafka_port})", flush=True)
    run_id = time.strftime("%Y%m%d%H%M%S")
    settings = _per_run(settings, run_id)
    asyncio.run(ensure_topics(settings))
    env = {**os.environ, **_env(settings)}
    worker = subprocess.Popen([sys.executable, "-m", "app", "worker", "--metrics-port", "0"],
                              env=env, start_new_session=True)
    try:
        sim = subprocess.Popen([sys.executable, "-m", "app", "simulate", "--scenario", args.scenario,
                                "--sessions", str(args.sessions), "--seed", str(args.seed), "--kafka"],
                               env=env)
        print(f"demo: worker pid {worker.pid}, simulator pid {sim.pid}; alerts on "
              f"{settings.topic_alerts}:", flush=True)
        n = asyncio.run(_print_alerts(settings, sim, args.settle))
        print(f"demo: done, {n} alerts", flush=True)
        return 0 if sim.returncode == 0 else 1
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()


def _per_run(settings, run_id: str):
    names = ("topic_spans", "topic_dlq", "topic_otlp", "topic_sessions", "topic_alerts",
             "topic_recalibrations")
    update = {n: f"{getattr(settings, n)}.demo-{run_id}" for n in names}
    return settings.model_copy(update={**update, "app_id": f"loadshape-demo-{run_id}"})


def _env(settings) -> dict[str, str]:
    keys = ("topic_spans", "topic_dlq", "topic_otlp", "topic_sessions", "topic_alerts",
            "topic_recalibrations", "app_id", "bootstrap_servers", "kafka_port")
    return {f"LOADSHAPE_{k.upper()}": str(getattr(settings, k)) for k in keys}


async def _print_alerts(settings, sim: subprocess.Popen, settle: float) -> int:
    from aiokafka import AIOKafkaConsumer

    from app.broker.client_config import aiokafka_kwargs

    consumer = AIOKafkaConsumer(settings.topic_alerts, auto_offset_reset="earliest",
                                **aiokafka_kwargs(settings))
    await consumer.start()
    n, quiet_until = 0, None
    try:
        while quiet_until is None or time.monotonic() < quiet_until:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    n += 1
                    print(_render(orjson.loads(rec.value)), flush=True)
            if quiet_until is None and sim.poll() is not None:
                quiet_until = time.monotonic() + settle
    finally:
        await consumer.stop()
    return n


def _render(alert: dict) -> str:
    seg = alert["segment"]["agent"] + (f"/{alert['segment']['task_type']}"
                                       if alert["segment"].get("task_type") else "")
    return f"[{alert['kind']:<17}] {alert['severity']:<7} {seg:<14} {alert['metric']:<20} {alert['message']}"
