"""Golden fingerprints of the sketch, window and session-fold read paths.

Those paths were sped up (exact running sum, counted min/max copies, memoised bucket
values, bisected quantile ranks, a flattened fold, a cycle-free tree-depth walk); what they
return must not change by a bit. Each case replays a seeded random history and hashes
everything read along the way (floats by their bits, so -0.0 is not 0.0; errors by type).
``golden_core.json`` holds the hashes the code gave before the speed-ups (generated with
the modules of commit 546d497 via ``fingerprints(modules)``). A mismatch names the case;
re-run it with ``transcript`` to see where the two diverge.

The window hashes were regenerated once, when the window's running sum was dropped (the
sum is now ``math.fsum`` on read): ``to_dict`` no longer raises OverflowError for windows
whose sum exceeds the float range. Before regenerating, every one of the cases gave the
same transcript as the 546d497-era code with only that ``to_dict`` difference taken out.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from app.core import session, sketch, windows
from schemas.fastspan import SpanRecord
from schemas.span import SpanEvent

GOLDEN = Path(__file__).with_name("golden_core.json")
CASES = 60
SPECIAL = [0.0, -0.0, 1.0, 2.0, 3.0, 1e-10, 5e-324, 1e-9, 0.5, 1e300]
OPS = ("chat", "execute_tool", "invoke_agent", "embeddings", "retrieval")


def bits(v):
    if isinstance(v, float):
        return struct.pack("<d", v).hex()
    if isinstance(v, dict):
        return {k: bits(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [bits(x) for x in v]
    return v


def outcome(fn, *args):
    try:
        return fn(*args)
    except (OverflowError, ValueError) as exc:
        return type(exc).__name__


def value(rng: random.Random) -> float:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.choice(SPECIAL)
    if kind == 1:
        return float(rng.randint(0, 12))
    if kind == 2:
        return float(rng.randint(0, 200_000))
    return rng.uniform(0, (1.0, 1e6, 1e308)[kind - 3])


def stats(obj):
    got = outcome(obj.stats)
    if got is None or isinstance(got, str):  # an empty window has no stats
        return got
    return bits([got.n, got.mean, got.p50, got.p90, got.p95,
                                                  got.p99, got.max])


def window_transcript(mods, seed: int) -> list:
    rng = random.Random(seed)
    size, rel_acc, max_buckets = rng.randint(1, 40), rng.choice([0.01, 0.05]), rng.choice([2048, 8])
    w, out = mods.windows.RollingWindow(size, rel_acc, max_buckets), []
    for _ in range(rng.randint(1, 400)):
        op = rng.choice(["add"] * 6 + ["stats", "dict", "last", "sketch", "reload"])
        if op == "add":
            w.add(value(rng))
        elif op == "reload":
            got = outcome(reload, mods, w)
            if isinstance(got, str):
                out.append(got)
            else:
                w = got
        elif op == "stats":
            out.append(stats(w))
        elif op == "dict":
            got = outcome(w.to_dict)
            out.append(got if isinstance(got, str) else orjson.dumps(got).decode())
        elif op == "last":
            out.append(bits(w.last(size)))
        elif w.n:
            sk = outcome(w.to_sketch)
            out.append(sk if isinstance(sk, str) else [orjson.dumps(sk.to_dict()).decode(),
                                                        bits(outcome(sk.quantiles, (0.0, 0.1, 0.5, 1.0)))])
    return out + [stats(w)]


def reload(mods, w):
    """A worker's checkpoint: the derived bookkeeping is rebuilt from the stored form."""
    return mods.windows.RollingWindow.from_dict(orjson.loads(orjson.dumps(w.to_dict())))


def sketch_transcript(mods, seed: int) -> list:
    rng = random.Random(seed)
    max_buckets = rng.choice([2048, 16])
    s = mods.sketch.Sketch(0.01, max_buckets)
    for _ in range(rng.randint(1, 300)):
        s.add(value(rng))
    s.merge(mods.sketch.Sketch.of([value(rng) for _ in range(rng.randint(0, 50))], max_buckets=max_buckets))
    qs = [rng.random() for _ in range(rng.randint(1, 6))]
    values = [bits(outcome(s.value_of, k)) for k in [*sorted(s.bins), -(2**31)]]
    return [stats(s), bits(outcome(s.quantiles, qs)), s.quantile_keys(qs),
            s.quantile_keys(mods.sketch.SUMMARY_QS), values, orjson.dumps(s.to_dict()).decode()]


def random_spans(rng: random.Random) -> list[dict]:
    n, acyclic, spans = rng.randint(1, 18), rng.random() < 0.5, []
    for i in range(n):
        pick = rng.randint(-2, (i if acyclic else n) - 1)
        start = rng.randint(0, 1000)
        spans.append({
            "trace_id": "t", "span_id": f"s{i}", "session_id": "sess",
            "parent_span_id": None if pick == -2 else "ghost" if pick == -1 else f"s{pick}",
            "operation": rng.choice(OPS), "agent": rng.choice("ab"),
            "task_type": rng.choice([None, "x"]), "model": rng.choice([None, "m1", "m2"]),
            "route": rng.choice([None, "r1", "r2"]), "input_tokens": rng.randint(0, 40_000),
            "context_limit": rng.choice([None, 8_000, 16_000, 32_000]),
            "tool_name": rng.choice([None, "t1", "t2", "t3"]), "attempt": rng.randint(1, 3),
            "reflection": rng.random() < 0.5, "status": rng.choice(["ok", "error"]),
            "cache_hit": rng.choice([None, True, False]),
            "cache_age_s": rng.choice([None, rng.uniform(0, 1e4)]),
            "complexity": rng.choice([None, rng.random()]), "session_end": rng.random() < 0.5,
            "start_time_unix_nano": start, "end_time_unix_nano": start + rng.randint(0, 1000)})
    spans += [rng.choice(spans) for _ in range(rng.randint(0, 4))]  # replays
    rng.shuffle(spans)
    return spans


def _stored(state) -> bytes:
    """The state's bytes without ``check_at`` (added after the golden: a derived field for the
    size guard, not something the fold reads; ``fold`` leaves it at its default 0)."""
    doc = orjson.loads(state.to_bytes())
    assert doc.pop("check_at", 0) == 0
    return orjson.dumps(doc)  # in the order read (the stored bytes sort only nested keys)


def session_transcript(mods, seed: int) -> list:
    rng = random.Random(seed)
    spans = random_spans(rng)
    out = []
    for make in (SpanEvent.model_validate, mods.record):
        state = None
        for sp in spans:
            state = mods.session.fold(state, make(sp))
        out += [_stored(state).hex(), mods.session.close(state, "idle").model_dump_json()]
    parents = {f"s{rng.randrange(12)}": rng.choice(["", "ghost", *(f"s{i}" for i in range(12))])
               for _ in range(rng.randint(0, 12))}
    return out + [mods.session.tree_depth(parents)]


TRANSCRIPTS = {"window": window_transcript, "sketch": sketch_transcript, "session": session_transcript}


def fingerprint(kind: str, mods, seed: int) -> str:
    text = json.dumps(TRANSCRIPTS[kind](mods, seed), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprints(mods) -> dict[str, list[str]]:
    """What ``golden_core.json`` holds, for the modules in ``mods`` (sketch, windows, session)."""
    return {kind: [fingerprint(kind, mods, seed) for seed in range(CASES)] for kind in TRANSCRIPTS}


# the second pass folds the compiled decoder's records (before it existed: SpanEvents again)
LIVE = SimpleNamespace(sketch=sketch, windows=windows, session=session, record=lambda d: SpanRecord(**d))


@pytest.mark.parametrize("kind", sorted(TRANSCRIPTS))
def test_read_paths_match_the_golden_fingerprints(kind):
    golden = json.loads(GOLDEN.read_text())[kind]
    got = [fingerprint(kind, LIVE, seed) for seed in range(CASES)]
    differ = [seed for seed in range(CASES) if got[seed] != golden[seed]]
    assert not differ, f"{kind}: seeds {differ} differ from the golden transcripts"


def test_incremental_sorted_keys_stay_sorted():
    rng = random.Random(5)
    w = windows.RollingWindow(30, 0.01, 16)
    for _ in range(2000):
        w.add(value(rng))
        assert w.sketch.sorted_keys() == sorted(w.sketch.bins)
