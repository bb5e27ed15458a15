"""Replay speed (``loadshape replay``'s core: decode + stage 1 + stage 2, no output files) vs the
decode-only floors over the same file: orjson.loads per line, decode_span (pydantic), and
decode_span_fast (the compiled msgspec path replay decodes with; pydantic decides the rest)."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from app.replay import build_replayer, feed_file
from app.settings import PROJECT_ROOT, Settings
from bench.common import Row, fmt_rate, spans_file, verdict
from schemas.fastspan import decode_span_fast
from schemas.validation import decode_span


def _lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line]


def floor(path: Path, decode) -> float:
    lines = _lines(path)
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for line in lines:
            decode(line)
        best = max(best, len(lines) / (time.perf_counter() - t0))
    return best


def replay(path: Path, settings: Settings) -> tuple[float, int]:
    replayer = build_replayer(settings)
    t0 = time.perf_counter()
    feed_file(replayer, path)
    result = replayer.finish()
    return result.spans / (time.perf_counter() - t0), len(result.alerts)


def run(workdir: Path, *, sessions: int = 3000) -> tuple[list[Row], dict]:
    path = spans_file(workdir / f"replay-dts-{sessions}.jsonl", sessions=sessions)
    n = len(_lines(path))
    settings = Settings(assumptions_file=PROJECT_ROOT / "examples" / "assumptions.yaml")
    rate, alerts = max((replay(path, settings) for _ in range(2)), key=lambda r: r[0])
    f_json = floor(path, orjson.loads)
    f_valid = floor(path, decode_span)
    f_fast = floor(path, decode_span_fast)
    ratio = f_json / rate
    rows = [
        Row("3 Replay", f"replay dev-to-support ({n:,} spans, {sessions:,} sessions)",
            f"{fmt_rate(rate)} spans/s", ">= 150,000 spans/s or <= 4x the floor",
            verdict(rate >= 150_000 or ratio <= 4), f"{alerts} alerts; examples/assumptions.yaml"),
        Row("3 Replay", "decode-only floor: orjson.loads per line", f"{fmt_rate(f_json)} spans/s",
            note=f"replay is {ratio:.1f}x slower"),
        Row("3 Replay", "decode floor with validation: decode_span (pydantic)",
            f"{fmt_rate(f_valid)} spans/s", note=f"replay is {f_valid / rate:.1f}x slower"),
        Row("3 Replay", "decode floor with validation: decode_span_fast (msgspec, as replay)",
            f"{fmt_rate(f_fast)} spans/s", note=f"replay is {f_fast / rate:.1f}x slower"),
    ]
    return rows, {"rate": rate, "floor_json": f_json, "floor_valid": f_valid, "floor_fast": f_fast}
