"""``loadshape topics create``: create the topics of DESIGN.md (idempotent)."""

from __future__ import annotations

import asyncio
import sys


def register(sub) -> None:
    p = sub.add_parser("topics", help="create the project's Kafka topics")
    p.add_argument("action", choices=["create", "list"])
    p.add_argument("--wait", type=float, default=60.0,
                   help="seconds to wait for the broker to answer (compose start-up)")
    p.set_defaults(handler=run)


def run(args, settings) -> int:
    from app.broker.probe import wait_for_metadata
    from app.broker.topics import ensure_topics, topic_specs

    if args.action == "list":
        for spec in topic_specs(settings):
            print(f"{spec.name}\t{spec.partitions}\t{spec.config or ''}")
        return 0
    if not wait_for_metadata(settings.bootstrap_servers, timeout=args.wait, alive=lambda: True):
        print(f"topics: no Kafka broker answered at {settings.bootstrap_servers} "
              f"within {args.wait:.0f}s", file=sys.stderr)
        return 1
    for name, state in asyncio.run(ensure_topics(settings)).items():
        print(f"topic {name}: {state}")
    return 0
