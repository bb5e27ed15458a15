"""``loadshape simulate``: a seedable synthetic agent workload, to a file or to Kafka.

Writes SpanEvent v1 JSON lines (``--out``, default stdout) or emits them to the spans topic
(``--kafka``, paced by ``--speed`` event-time seconds per wall second; 0 = flat out), and
optionally the ground-truth sidecar (``--truth``) and per-session truth (``--session-truth``).

``--closed-loop`` runs the agents behind a gateway that the worker's core recalibrates
(``app.loop.closed_loop``; offline, no Kafka) and writes the report (``--report``, default
stdout), the signed recalibrations (``--recalibrations-out``) and, with ``--out FILE``, the
spans as they were routed.
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
    dest.add_argument("--out", default=None, metavar="FILE",
                      help="JSON-lines file; - = stdout (the default, except with --closed-loop)")
    dest.add_argument("--kafka", action="store_true", help="emit to the spans topic instead")
    p.add_argument("--truth", metavar="FILE", help="write the ground-truth sidecar (JSON)")
    p.add_argument("--session-truth", metavar="FILE", help="write per-session truth (JSON lines)")
    p.add_argument("--order", choices=("time", "session"), default="time",
                   help="spans merged by end time (default) or session by session")
    p.add_argument("--speed", type=float, default=0.0,
                   help="with --kafka: event-time seconds per wall second (0 = flat out)")
    p.add_argument("--buffer-size", type=int, default=100_000, help="with --kafka: emitter buffer")
    p.add_argument("--metrics-port", type=int, default=0,
                   help="with --kafka: serve the emitter's /metrics (sent, dropped) here (0: off)")
    p.add_argument("--metrics-addr", default="127.0.0.1", help="address for /metrics")
    loop = p.add_argument_group("closed loop (docs/CLOSED_LOOP.md)")
    loop.add_argument("--closed-loop", action="store_true",
                      help="route through a gateway that recalibrations from the core update")
    loop.add_argument("--report", metavar="FILE", help="closed-loop report (JSON); default stdout")
    loop.add_argument("--recalibrations-out", metavar="FILE",
                      help="the signed recalibration messages (JSON lines)")
    loop.add_argument("--mode", choices=("auto", "propose"), default=None,
                      help="recalibration mode (default: settings.recalibration_mode)")
    loop.add_argument("--policy", metavar="FILE", help="initial policy (default examples/policy.yaml)")
    loop.add_argument("--assumptions", metavar="FILE",
                      help="assumptions (default: settings.assumptions_file, else examples/)")
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
    if args.closed_loop:
        return run_closed_loop_cli(args, settings, sc)
    tally = TruthTally()
    with ExitStack() as stack:
        sessions = tally.tap(iter_sessions(sc, args.seed))
        if args.session_truth:
            sessions = _log_truth(sessions, stack.enter_context(open(args.session_truth, "wb")))
        records = ordered(sessions, args.order)
        if args.kafka:
            sent, dropped = asyncio.run(emit_kafka(records, settings, speed=args.speed,
                                                   buffer_size=args.buffer_size,
                                                   registry=_metrics_registry(args)))
            where = f"{settings.topic_spans} ({dropped} dropped)"
        else:
            where = args.out or "-"
            out = sys.stdout.buffer if where == "-" else stack.enter_context(open(where, "wb"))
            sent = write_jsonl(records, out)
    if args.truth:
        with open(args.truth, "wb") as fh:
            fh.write(orjson.dumps(sidecar(sc, args.seed, tally), option=orjson.OPT_INDENT_2))
    print(f"loadshape simulate: {sc.name} seed={args.seed}: {sc.sessions} sessions, "
          f"{sent} spans -> {where}", file=sys.stderr)
    return 0


def run_closed_loop_cli(args, settings, sc) -> int:
    from app.loop.closed_loop import LoopConfig, run_closed_loop
    from app.loop.loop_report import loop_report

    if args.kafka or args.out == "-" and not args.report:
        print("loadshape simulate: --closed-loop runs offline (no --kafka), and --out - needs "
              "--report FILE", file=sys.stderr)
        return 2
    key = None if settings.recalibration_key is None else settings.recalibration_key.get_secret_value()
    cfg = LoopConfig(mode=args.mode or settings.recalibration_mode,
                     idle_timeout_s=settings.session_idle_timeout_s,
                     lateness_s=settings.reorder_lateness_s)
    from app.loop.fileload import LoadError

    try:
        policy, assumptions = _loop_inputs(args, settings)
    except LoadError as err:
        print(f"loadshape simulate: {err}", file=sys.stderr)
        return 2
    with ExitStack() as stack:
        spans = None if args.out is None else (
            sys.stdout.buffer if args.out == "-" else stack.enter_context(open(args.out, "wb")))
        res = run_closed_loop(sc, args.seed, policy=policy, assumptions=assumptions, key=key,
                              config=cfg, span_sink=None if spans is None else _span_writer(spans))
    report = loop_report(res)
    report["signing_key"] = ("settings.recalibration_key (LOADSHAPE_RECALIBRATION_KEY)" if key
                             else "fixed demo key: LOADSHAPE_RECALIBRATION_KEY is unset")
    _write_loop_outputs(args, sc, res, report)
    rate = report["misroute_rate"]
    print(f"loadshape simulate: {sc.name} seed={args.seed} closed loop: {len(res.sessions)} "
          f"sessions, {report['recalibrations_applied']} recalibrations applied; misroute rate "
          f"{_pct(rate['before_change'])} before the change, "
          f"{_pct(rate['after_change_before_recalibration'])} after it, "
          f"{_pct(rate['after_recalibration'])} after recalibration", file=sys.stderr)
    return 0


def _loop_inputs(args, settings):
    from app.loop.assumptions import load_assumptions
    from app.loop.closed_loop import EXAMPLE_ASSUMPTIONS
    from app.loop.policy import EXAMPLE_POLICY, load_policy

    assumptions = args.assumptions or settings.assumptions_file or EXAMPLE_ASSUMPTIONS
    return load_policy(args.policy or EXAMPLE_POLICY), load_assumptions(assumptions)


def _span_writer(fh):
    return lambda rec: fh.write(orjson.dumps(rec) + b"\n")


def _write_loop_outputs(args, sc, res, report: dict) -> None:
    from app.simulate.truth import TruthTally, sidecar

    blob = orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n"
    if args.report:
        with open(args.report, "wb") as fh:
            fh.write(blob)
    else:
        sys.stdout.buffer.write(blob)
    if args.recalibrations_out:
        with open(args.recalibrations_out, "wb") as fh:
            fh.writelines(o.message.encode() + b"\n" for o in res.offers)
    if args.session_truth:
        with open(args.session_truth, "wb") as fh:
            fh.writelines(orjson.dumps({**s.truth.to_dict(), "served_version": s.served_version})
                          + b"\n" for s in res.sessions)
    if args.truth:
        tally = TruthTally()
        for s in res.sessions:
            tally.add(s.truth)
        with open(args.truth, "wb") as fh:
            fh.write(orjson.dumps(sidecar(sc, args.seed, tally), option=orjson.OPT_INDENT_2))


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _log_truth(sessions: Iterable, fh) -> Iterator:
    for s in sessions:
        fh.write(orjson.dumps(s.truth.to_dict()) + b"\n")
        yield s


def _metrics_registry(args):
    """A served registry for the emitter's metrics, or None without ``--metrics-port``."""
    if not args.metrics_port:
        return None
    from prometheus_client import CollectorRegistry

    from app.metrics import serve

    registry = CollectorRegistry()
    serve(registry, args.metrics_port, addr=args.metrics_addr)
    return registry


async def emit_kafka(records: Iterable[dict], settings, *, speed: float = 0.0,
                     buffer_size: int = 100_000, registry=None) -> tuple[int, int]:
    """Emit records through ``SpanEmitter``; pace by their end times. -> (emitted, dropped).

    With a ``registry``, the emitter's counters (sent, dropped by reason) are exported on it."""
    from app.emitter import SpanEmitter  # lazy: only --kafka needs aiokafka and a broker
    from app.emitter.metrics import register_emitter_metrics

    emitter = SpanEmitter(settings, buffer_size=buffer_size)
    if registry is not None:
        register_emitter_metrics(registry, lambda: [emitter.stats])
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
