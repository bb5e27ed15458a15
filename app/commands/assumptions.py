"""``loadshape assumptions check``: evaluate declared workload assumptions against a file.

Input is a span file (JSON lines of SpanEvent, folded into sessions by the stage-1 core) or a
session file (JSON lines of SessionShape). Prints one JSON line per assumption with its
observed value; exit 0 when every assumption holds (or has no data), 1 when one is broken,
2 on a bad file.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

from app.loop.fileload import LoadError


def register(sub) -> None:
    p = sub.add_parser("assumptions", help="declared workload assumptions")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    c = verbs.add_parser("check", help="report each assumption's observed value over a file")
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--spans", type=Path, help="JSON lines of SpanEvent")
    src.add_argument("--sessions", type=Path, help="JSON lines of SessionShape")
    c.add_argument("--assumptions", type=Path, default=None,
                   help="assumptions YAML (default: LOADSHAPE_ASSUMPTIONS_FILE)")
    c.set_defaults(handler=run)


def run(args, settings) -> int:
    from app.loop.assumptions import check, load_assumptions
    from app.loop.observe import matching_stats

    path = args.assumptions or settings.assumptions_file
    if path is None:
        print("loadshape: no assumptions file (--assumptions or LOADSHAPE_ASSUMPTIONS_FILE)",
              file=sys.stderr)
        return 2
    try:
        assumptions = load_assumptions(path)
        sessions = list(_sessions(args))
    except (LoadError, OSError) as exc:
        print(f"loadshape: {exc}", file=sys.stderr)
        return 2
    broken = False
    for a in assumptions:
        res = check(a, matching_stats(sessions, a.segment, a.metric))
        broken |= res.holds is False
        print(json.dumps({
            "id": a.id, "assumption": a.sentence, "holds": res.holds,
            "observed": res.observed, "n": res.n, "why": a.why,
        }))
    return 1 if broken else 0


def _sessions(args) -> Iterator:
    if args.sessions is not None:
        return _read_sessions(args.sessions)
    return sessions_from_spans(args.spans)


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as f:
        for no, line in enumerate(f, start=1):
            if line.strip():
                yield no, line


def _read_sessions(path: Path) -> Iterator:
    from schemas.session import SessionShape
    from schemas.validation import decode

    for no, line in _lines(path):
        decoded = decode(SessionShape, line)
        if not decoded.ok:
            raise LoadError(f"{path}:{no}: not a SessionShape: {decoded.reason}")
        yield decoded.value


def sessions_from_spans(path: Path) -> Iterator:
    """Fold a span file into closed sessions with the stage-1 core; bad lines are skipped
    (and counted on stderr), as a worker would dead-letter them."""
    from app.core.session import close, fold
    from schemas.validation import decode_span

    states, bad = {}, 0
    for _, line in _lines(path):
        decoded = decode_span(line)
        if not decoded.ok:
            bad += 1
            continue
        span = decoded.value
        states[span.session_id] = fold(states.get(span.session_id), span)
    if bad:
        print(f"loadshape: skipped {bad} invalid span line(s) in {path}", file=sys.stderr)
    for sid in sorted(states):
        st = states[sid]
        yield close(st, "session_end" if st.closed else "flush")
