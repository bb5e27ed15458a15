"""``loadshape demo``: the README's main job, end to end on this machine.

Starts the local Kafka broker (if not running), creates a fresh set of topics for this run,
starts a worker with the reference policy and assumptions (examples/), and runs the
simulated agents of the reference scenario (dev-to-support) *behind the gateway client*:
their spans go to Kafka, the worker's alerts and signed recalibrations come back, the
gateway applies them, and the misroute rate of the changed segment is reported before the
change, between change and recalibration, and after it. Ctrl-C stops it early.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import orjson
from pydantic import SecretStr

from app.settings import PROJECT_ROOT, TOPIC_FIELDS

EXAMPLES = PROJECT_ROOT / "examples"


def register(sub) -> None:
    p = sub.add_parser("demo", help="broker + worker + simulated agents behind the gateway; "
                                    "prints alerts and recalibrations as they arrive")
    p.add_argument("--scenario", default="dev-to-support")
    p.add_argument("--sessions", type=int, default=4000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--rate", type=float, default=150.0, help="simulated sessions per wall second")
    p.add_argument("--settle", type=float, default=10.0,
                   help="seconds to keep listening after the agents finished")
    p.add_argument("--report", help="write the closed-loop report (JSON) here")
    p.set_defaults(handler=run)


def run(args, settings) -> int:
    from app.broker import manager
    from app.broker.topics import ensure_topics

    res = manager.up(settings)
    print(f"demo: kafka {'started' if res.started else 'already running'} "
          f"(pid {res.pid}, 127.0.0.1:{settings.kafka_port})", flush=True)
    settings = _per_run(settings, time.strftime("%Y%m%d%H%M%S"))
    asyncio.run(ensure_topics(settings))
    worker = subprocess.Popen([sys.executable, "-m", "app", "worker", "--metrics-port", "0"],
                              env={**os.environ, **_env(settings)}, start_new_session=True)
    print(f"demo: worker pid {worker.pid}; agents: {args.sessions} sessions of {args.scenario!r} "
          f"behind the gateway; alerts and recalibrations as they arrive:", flush=True)
    try:
        report = asyncio.run(_main(settings, args))
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
        if res.started:  # leave a broker that was already running as it was
            manager.down(settings)
    print("demo: closed-loop report " + json.dumps(report, indent=2), flush=True)
    if args.report:
        with open(args.report, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0


def _per_run(settings, run_id: str):
    return settings.isolated(
        f"demo-{run_id}", "loadshape",
        state_dir=settings.state_dir / f"demo-{run_id}",
        policy_file=settings.policy_file or EXAMPLES / "policy.yaml",
        assumptions_file=settings.assumptions_file or EXAMPLES / "assumptions.yaml",
        recalibration_key=settings.recalibration_key or SecretStr(f"demo-{run_id}"),
        # a demo-sized baseline: drift needs this many sessions of a segment before the change
        baseline_sessions=min(settings.baseline_sessions, 500))


def _env(settings) -> dict[str, str]:
    keys = (*TOPIC_FIELDS, "app_id", "bootstrap_servers", "kafka_port", "state_dir", "policy_file",
            "assumptions_file", "baseline_sessions")
    env = {f"LOADSHAPE_{k.upper()}": str(getattr(settings, k)) for k in keys}
    env["LOADSHAPE_RECALIBRATION_KEY"] = settings.recalibration_key.get_secret_value()
    return env


async def _main(settings, args) -> dict:
    from app.live_loop import run_live_loop

    stop = asyncio.Event()
    printer = asyncio.create_task(_print_topics(settings, stop))
    try:
        report = await run_live_loop(settings, scenario=args.scenario, sessions=args.sessions,
                                     seed=args.seed, rate=args.rate,
                                     say=lambda line: print(line, flush=True))
        await asyncio.sleep(args.settle)
    finally:
        stop.set()
        await printer
    return report.to_dict()


async def _print_topics(settings, stop: asyncio.Event) -> None:
    from aiokafka import AIOKafkaConsumer

    from app.broker.client_config import aiokafka_kwargs

    consumer = AIOKafkaConsumer(settings.topic_alerts, settings.topic_recalibrations,
                                auto_offset_reset="earliest", **aiokafka_kwargs(settings))
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    print(_render(rec.topic == settings.topic_alerts, orjson.loads(rec.value)), flush=True)
    finally:
        await consumer.stop()


def _render(is_alert: bool, msg: dict) -> str:
    if not is_alert:
        changes = ", ".join(f"{c['segment']['agent']}.{c['field']}: {c['old']} -> {c['new']}"
                            for c in msg["changes"])
        signed = bool(msg.get("signature"))
        return f"[recalibration v{msg['version']} {msg['mode']}] {changes} (signed: {signed})"
    task = msg["segment"].get("task_type")
    seg = msg["segment"]["agent"] + (f"/{task}" if task else "")
    return f"[{msg['kind']:<17}] {msg['severity']:<7} {seg:<14} {msg['metric']:<20} {msg['message']}"
