"""``loadshape simulate``: a seedable synthetic agent workload, to a file or to Kafka.

Writes SpanEvent v1 JSON lines (``--out``, default stdout) or emits them to the spans topic
(``--kafka``, paced by ``--speed`` event-time seconds per wall second; 0 = flat out), and
optionally the ground-truth sidecar (``--truth``) and per-session truth (``--session-truth``).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack

import orjson

from app.simulate.scenarios import DEFAULT_RATE, SCENARIOS


def register(sub) -> None:
    p = sub.add_parser("simulate", help="generate a synthetic agent workload with ground truth")
    p.add_argument("--scenario", required=True, choices=SCENARIOS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sessions", type=int, default=5000)
    p.add_argument("--rate", type=float, default=DEFAULT_RATE,
                   help="session arrivals per event-time second (Poisson)")
    p.add_argument("--change-at", type=int, default=None, metavar="N",
                   help="index of the first changed session (default: sessions // 2)")
    dest = p.add_mutually_exclusive_group()
    dest.add_argument("--out", default="-", metavar="FILE", help="JSON-lines file; - = stdout")
    dest.add_argument("--kafka", action="store_true", help="emit to the spans topic instead")
    p.add_argument("--truth", metavar="FILE", help="write the ground-truth sidecar (JSON)")
    p.add_argument("--session-truth", metavar="FILE", help="write per-session truth (JSON lines)")
    p.add_argument("--order", choices=("time", "session"), default="time",
                   help="spans merged by end time (default) or session by session")
    p.add_argument("--speed", type=float, default=0.0,
                   help="with --kafka: event-time seconds per wall second (0 = flat out)")
    p.add_argument("--buffer-size", type=int, default=100_000, help="with --kafka: emitter buffer")
    p.set_defaults(handler=run)


def run(args, settings) -> int:
    from app.simulate.generator import iter_sessions, ordered, write_jsonl
    from app.simulate.scenarios import build
    from app.simulate.truth import TruthTally, sidecar

    try:
        sc = build(args.scenario, sessions=args.sessions, change_at=args.change_at, rate=args.rate)
    except ValueError as err:
        print(f"loadshape simulate: {err}", file=sys.stderr)
        return 2
    if args.speed < 0 or args.change_at is not None and args.change_at < 0:
        print("loadshape simulate: --speed and --change-at must be >= 0", file=sys.stderr)
        return 2
    tally = TruthTally()
    with ExitStack() as stack:
        sessions = tally.tap(iter_sessions(sc, args.seed))
        if args.session_truth:
            sessions = _log_truth(sessions, stack.enter_context(open(args.session_truth, "wb")))
        records = ordered(sessions, args.order)
        if args.kafka:
            sent, dropped = asyncio.run(emit_kafka(records, settings, speed=args.speed,
                                                   buffer_size=args.buffer_size))
            where = f"{settings.topic_spans} ({dropped} dropped)"
        else:
            out = (sys.stdout.buffer if args.out == "-"
                   else stack.enter_context(open(args.out, "wb")))
            sent, where = write_jsonl(records, out), args.out
    if args.truth:
        with open(args.truth, "wb") as fh:
            fh.write(orjson.dumps(sidecar(sc, args.seed, tally), option=orjson.OPT_INDENT_2))
    print(f"loadshape simulate: {sc.name} seed={args.seed}: {sc.sessions} sessions, "
          f"{sent} spans -> {where}", file=sys.stderr)
    return 0


def _log_truth(sessions: Iterable, fh) -> Iterator:
    for s in sessions:
        fh.write(orjson.dumps(s.truth.to_dict()) + b"\n")
        yield s


async def emit_kafka(records: Iterable[dict], settings, *, speed: float = 0.0,
                     buffer_size: int = 100_000) -> tuple[int, int]:
    """Emit records through ``SpanEmitter``; pace by their end times. -> (emitted, dropped)."""
    from app.emitter import SpanEmitter  # lazy: only --kafka needs aiokafka and a broker

    emitter = SpanEmitter(settings, buffer_size=buffer_size)
    await emitter.start()
    emitted = refused = 0
    wall0 = time.monotonic()
    event0 = None
    try:
        for rec in records:
            end = rec["end_time_unix_nano"]
            event0 = end if event0 is None else event0
            if speed > 0:
                delay = wall0 + (end - event0) / 1e9 / speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if emitter.emit(rec):
                emitted += 1
            else:
                refused += 1
            if (emitted + refused) % 512 == 0:
                await _backpressure(emitter, buffer_size // 2)
    finally:
        await emitter.close()
    stats = getattr(emitter, "stats", None)
    return emitted, refused + getattr(stats, "dropped", 0)


async def _backpressure(emitter, high_water: int, patience_s: float = 10.0) -> None:
    """Let the sender run; while the emitter's buffer is over ``high_water`` (the generator
    outpaces Kafka), wait for it to drain -- but not for ever: a dead broker must show up as
    dropped spans, not as a hang."""
    await asyncio.sleep(0)
    give_up = time.monotonic() + patience_s
    while getattr(getattr(emitter, "stats", None), "buffered", 0) > high_water:
        if time.monotonic() > give_up:
            return
        await asyncio.sleep(0.005)
