"""``loadshape envelope``: what if usage grows, tasks get harder, or a capability is added?

Folds a recorded span file into sessions, projects them through the envelope
(``app.envelope``), and checks every declared assumption and the routing policy on the
result. Prints a table (or ``--json``). Exit 0 when every assumption holds under the
envelope, 1 when one breaks (a release gate), 2 on bad input. Model: docs/ENVELOPE.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MAX_WARNINGS = 20  # rejected lines listed one by one; the rest are counted


def register(sub) -> None:
    p = sub.add_parser("envelope", help="what-if: evaluate assumptions and routing under a "
                                        "projected workload envelope")
    p.add_argument("--spans", type=Path, required=True, metavar="FILE",
                   help="recorded spans: SpanEvent JSON lines, or OTLP/JSON lines with --format")
    p.add_argument("--format", choices=["spans", "otlp-json"], default="spans")
    p.add_argument("--assumptions", type=Path, default=None, metavar="FILE",
                   help="assumptions YAML (default: LOADSHAPE_ASSUMPTIONS_FILE)")
    p.add_argument("--policy", type=Path, default=None, metavar="FILE",
                   help="routing policy: caps, misroute risk, OTLP context windows "
                        "(without it: the recorded context limits)")
    p.add_argument("--usage", type=float, default=1.0, metavar="X",
                   help="scale arrival rate (sessions/s, spans/s, tokens/s) by X")
    p.add_argument("--complexity", type=float, default=1.0, metavar="X",
                   help="scale per-session work (fan-out, LLM calls, context demand) by X")
    p.add_argument("--add-capability", action="append", default=[],
                   metavar="NAME=LIKE_SEGMENT[:SHARE]",
                   help="add segment NAME shaped like LIKE_SEGMENT with SHARE of total traffic "
                        "(default: as much traffic as LIKE_SEGMENT); repeatable")
    p.add_argument("--seed", type=int, default=0, help="seed of the stochastic rounding")
    p.add_argument("--json", action="store_true", help="one JSON document instead of tables")
    p.set_defaults(handler=run)


def fail(message: str) -> int:
    print(f"loadshape envelope: {message}", file=sys.stderr)
    return 2


def run(args, settings) -> int:
    from app.envelope import Envelope, parse_capability
    from app.loop.fileload import LoadError

    path = args.assumptions or settings.assumptions_file
    if path is None:
        return fail("no assumptions file (--assumptions or LOADSHAPE_ASSUMPTIONS_FILE)")
    try:
        envelope = Envelope(usage=args.usage, complexity=args.complexity, seed=args.seed,
                            add=tuple(parse_capability(t) for t in args.add_capability))
    except ValueError as err:
        return fail(str(err))
    try:
        assumptions, policy = _configs(path, args.policy)
    except LoadError as err:
        return fail(str(err))
    return _run(args, envelope, assumptions, policy)


def _configs(assumptions_path: Path, policy_path: Path | None):
    from app.loop.assumptions import load_assumptions
    from app.loop.policy import load_policy

    policy = None if policy_path is None else load_policy(policy_path)
    return load_assumptions(assumptions_path), policy


def _run(args, envelope, assumptions, policy) -> int:
    from app.envelope import Intake, evaluate, record, render_text, to_json
    from app.envelope.capability import check_capabilities

    windows = {} if policy is None else {m.name: m.context_window for m in policy.models}
    intake = Intake()
    try:
        with args.spans.open("rb") as fh:
            recording = record(intake.spans(fh, args.format, windows))
    except OSError as err:
        return fail(f"{args.spans}: cannot read: {err.strerror or err}")
    notes = _warn(args.spans, intake)
    if not recording.sessions:
        return fail(f"{args.spans}: no valid spans ({len(intake.rejected)} rejected line(s))")
    try:
        check_capabilities(envelope.add, recording.segment_sizes())
    except ValueError as err:
        return fail(str(err))
    report = evaluate(recording, envelope, assumptions, policy)
    if args.json:
        counts = {"rejected_lines": len({r.line for r in intake.rejected}),
                  "rejected_records": len(intake.rejected),
                  "skipped_non_genai": intake.skipped_non_genai}
        print(json.dumps(to_json(report, counts), indent=2))
    else:
        print(render_text(report, notes), end="")
    return 1 if report.breaks else 0


def _warn(path: Path, intake) -> list[str]:
    """Warn on stderr for each rejected line (they are skipped); return summary notes."""
    for r in intake.rejected[:MAX_WARNINGS]:
        print(f"loadshape envelope: warning: {path}:{r.line}: skipped: {r.reason}", file=sys.stderr)
    extra = len(intake.rejected) - MAX_WARNINGS
    if extra > 0:
        print(f"loadshape envelope: warning: ... and {extra} more rejected record(s)", file=sys.stderr)
    notes = []
    if intake.rejected:
        notes.append(f"skipped {len(intake.rejected)} rejected record(s) (see warnings)")
    if intake.skipped_non_genai:
        notes.append(f"skipped {intake.skipped_non_genai} non-GenAI OTLP span(s)")
    return notes
