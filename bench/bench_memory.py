"""Memory: bytes of state per (segment, metric) and per open session, and RSS over 10M spans.

* per (segment, metric): a segment entry after 12,000 sessions (baselines frozen, windows
  full), serialised (what the Faust table / changelog stores) and live in memory (tracemalloc
  of ``SegmentStep.load``), divided by its metrics;
* per open session: stage 1's stored bytes of the sessions open mid-run, plus the live
  ``SessionState`` object (tracemalloc of ``core.load``);
* RSS: the replay path (stage 1 + stage 2, the worker's core) over ``--spans`` simulated
  ``steady`` spans in a fresh process, sampled every 250,000 spans; growth is measured from
  the end of warm-up (the first 20%) to the largest later sample.

``python -m bench.bench_memory --rss 10000000`` prints the RSS series as JSON (bench.run runs it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import orjson

from app.core import session as core
from app.core.stage2 import SegmentStep
from app.replay import build_replayer
from app.settings import Settings
from app.simulate import iter_spans
from bench.common import Row, verdict

SAMPLE_EVERY = 250_000


def rss_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")


def state_sizes(sessions: int = 12_000) -> dict:
    replayer = build_replayer(Settings())
    mid_open: list[bytes] = []
    for i, span in enumerate(iter_spans("steady", seed=3, sessions=sessions)):
        replayer.feed(span)
        if i == 60_000:
            mid_open = [v.to_bytes() for v in replayer.live.entries.values()
                        if isinstance(v, core.SessionState)]
    seg_key, entry = max(replayer.segments.items(), key=lambda kv: kv[1].monitor.sessions)
    stored = SegmentStep.dump(entry)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    live = SegmentStep.load(stored)
    entry_live = tracemalloc.get_traced_memory()[0] - before
    objs = []
    before = tracemalloc.get_traced_memory()[0]
    for raw in mid_open:
        objs.append(core.load(raw))
    session_live = (tracemalloc.get_traced_memory()[0] - before) / max(1, len(mid_open))
    tracemalloc.stop()
    metrics = len(live.monitor.metrics or {})
    per_metric = [len(orjson.dumps(ms.to_dict())) for ms in (live.monitor.metrics or {}).values()]
    return {"segment": seg_key, "sessions": entry.monitor.sessions, "entry_bytes": len(stored),
            "entry_live": entry_live, "metrics": metrics,
            "per_metric_serialised": sum(per_metric) / max(1, metrics),
            "per_metric_max": max(per_metric, default=0),
            "per_metric_live": entry_live / max(1, metrics),
            "open_sessions": len(mid_open),
            "session_bytes": sum(map(len, mid_open)) / max(1, len(mid_open)),
            "session_live": session_live}


def rss_series(spans: int) -> dict:
    """Replay ``spans`` simulated steady spans; RSS every SAMPLE_EVERY spans."""
    replayer = build_replayer(Settings())
    sessions = spans // 9 + 1000  # steady sessions average about 9.6 spans
    series, began = [], time.perf_counter()
    n = 0
    for span in iter_spans("steady", seed=5, sessions=sessions):
        replayer.feed(span)
        n += 1
        if n % SAMPLE_EVERY == 0:
            series.append((n, rss_bytes(), len(replayer.live)))
        if n >= spans:
            break
    return {"spans": n, "seconds": time.perf_counter() - began, "series": series}


def run(*, spans: int = 10_000_000) -> tuple[list[Row], dict]:
    sizes = state_sizes()
    out = subprocess.run([sys.executable, "-m", "bench.bench_memory", "--rss", str(spans)],
                         capture_output=True, text=True, timeout=3600,
                         cwd=Path(__file__).resolve().parents[1])
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    rss = json.loads(out.stdout.strip().splitlines()[-1])
    series = rss["series"]
    warm = series[max(0, len(series) // 5 - 1)]
    later = [s[1] for s in series if s[0] > warm[0]]
    growth = (max(later) - warm[1]) / warm[1] if later else 0.0
    mb = 1 / 2**20
    rows = [
        Row("5 Memory", "state per (segment, metric), serialised (table/changelog)",
            f"{sizes['per_metric_serialised'] / 1024:.1f} KiB",
            note=f"largest metric {sizes['per_metric_max'] / 1024:.1f} KiB; whole segment entry "
                 f"{sizes['entry_bytes'] / 1024:.0f} KiB ({sizes['metrics']} metrics, "
                 f"{sizes['sessions']:,} sessions, '{sizes['segment']}')"),
        Row("5 Memory", "state per (segment, metric), live objects",
            f"{sizes['per_metric_live'] / 1024:.1f} KiB",
            note=f"whole entry {sizes['entry_live'] / 1024:.0f} KiB (tracemalloc)"),
        Row("5 Memory", "state per open session, stored bytes", f"{sizes['session_bytes']:.0f} B",
            note=f"live SessionState {sizes['session_live']:.0f} B; mean over "
                 f"{sizes['open_sessions']} sessions open mid-run"),
        Row("5 Memory", f"RSS over {rss['spans'] / 1e6:.0f}M spans (replay path)",
            f"{warm[1] * mb:.0f} -> {max(later or [warm[1]]) * mb:.0f} MiB",
            "growth < 5% after warm-up", verdict(growth < 0.05),
            f"growth {growth:+.1%} from {warm[0] / 1e6:.1f}M spans; final "
            f"{series[-1][1] * mb:.0f} MiB; {rss['spans'] / rss['seconds']:,.0f} spans/s "
            f"(simulator + replay, {rss['seconds']:.0f} s)"),
    ]
    return rows, {"sizes": sizes, "rss": rss, "growth": growth}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rss", type=int, required=True)
    args = parser.parse_args()
    print(json.dumps(rss_series(args.rss)))
