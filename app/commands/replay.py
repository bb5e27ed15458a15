"""``loadshape replay FILE``: the streaming core driven from a file, no Kafka.

Exit 0 when it ran (bad records are dead-lettered, not fatal); 2 when it cannot run
(missing file, unreadable assumptions).
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("replay", help="run the core over a SpanEvent (or OTLP/JSON) lines file")
    p.add_argument("file", type=Path)
    p.add_argument("--format", choices=["spans", "otlp-json"], default="spans")
    p.add_argument("--alerts-out", type=Path, help="alert JSON lines (default: stdout)")
    p.add_argument("--dlq-out", type=Path, help="one JSON line per rejected record, with reason")
    p.add_argument("--sessions-out", type=Path, help="SessionShape JSON lines")
    p.add_argument("--assumptions", type=Path, help="workload assumptions YAML to check")
    p.add_argument("--no-flush", action="store_true",
                   help="don't close open sessions or drain buffers at the end "
                        "(= what a live worker has emitted)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(handler=run)


def run(args, settings) -> int:
    from app.replay import build_replayer, feed_file

    if not args.file.is_file():
        print(f"replay: {args.file}: no such file", file=sys.stderr)
        return 2
    if args.assumptions is not None:
        settings = settings.model_copy(update={"assumptions_file": args.assumptions})
    with ExitStack() as stack:
        alerts = stack.enter_context(open(args.alerts_out, "wb")) if args.alerts_out else sys.stdout.buffer
        dlq = stack.enter_context(open(args.dlq_out, "wb")) if args.dlq_out else None
        sessions = stack.enter_context(open(args.sessions_out, "wb")) if args.sessions_out else None
        try:
            replayer = build_replayer(settings, alerts_fh=alerts, dlq_fh=dlq, sessions_fh=sessions)
        except ValueError as err:  # assumptions/policy files name file, entry and field
            print(f"replay: {err}", file=sys.stderr)
            return 2
        progress = _Progress(enabled=sys.stderr.isatty() and not args.quiet)
        feed_file(replayer, args.file, fmt=args.format, progress=progress.tick)
        result = replayer.finish(flush=not args.no_flush)
        progress.done()
    print(f"replay: {result.spans} spans, {result.sessions} sessions, {len(result.alerts)} alerts, "
          f"{result.dead_letters} dead-lettered, {result.late_spans} late", file=sys.stderr)
    return 0


class _Progress:
    """``replay: N lines (R/s)`` on one terminal line, at most every ``every_s`` seconds."""

    def __init__(self, enabled: bool, every_s: float = 0.5, clock=time.monotonic) -> None:
        self.enabled, self.every_s, self.clock = enabled, every_s, clock
        self.t0 = clock()
        self.last = self.t0 - every_s  # the first tick shows

    def tick(self, lines: int) -> None:
        now = self.clock()
        if self.enabled and now - self.last >= self.every_s:
            self.last = now
            took = now - self.t0
            rate = f" ({lines / took:,.0f}/s)" if took > 0 else ""
            print(f"\rreplay: {lines:,} lines{rate}", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.enabled:
            print(file=sys.stderr)
