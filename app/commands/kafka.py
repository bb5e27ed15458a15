"""``loadshape kafka up | down | status``: the local KRaft broker (no Docker)."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("kafka", help="run a local single-node Kafka broker (KRaft)")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--no-topics", action="store_true", help="with up: don't create the topics")
    p.set_defaults(handler=run)


def run(args, settings) -> int:
    from app.broker import manager

    try:
        if args.action == "up":
            return _up(settings, create_topics=not args.no_topics)
        if args.action == "down":
            pid = manager.down(settings)
            print(f"kafka: stopped broker pid {pid}" if pid else "kafka: no broker was running")
            return 0
        pid, answering = manager.status(settings)
        state = "up" if pid and answering else ("starting or unhealthy" if pid else "down")
        print(f"kafka: {state}" + (f" (pid {pid}, 127.0.0.1:{settings.kafka_port})" if pid else ""))
        return 0 if pid and answering else 1
    except manager.BrokerError as err:
        print(f"kafka: {err}", file=sys.stderr)
        return 1


def _up(settings, *, create_topics: bool) -> int:
    import asyncio

    from app.broker import manager
    from app.broker.topics import ensure_topics

    res = manager.up(settings)
    if res.started:
        print(f"kafka: started pid {res.pid} on 127.0.0.1:{settings.kafka_port} "
              f"in {res.seconds:.1f}s")
    else:
        print(f"kafka: already running (pid {res.pid}, 127.0.0.1:{settings.kafka_port})")
    if create_topics:
        for name, state in asyncio.run(ensure_topics(settings)).items():
            print(f"topic {name}: {state}")
    return 0
