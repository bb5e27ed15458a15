"""Input for the pipeline tests: a simulated workload, keyed records, and sentinel sessions.

Sentinels are one-span sessions far in the future, one on every span partition, so every
partition's event time passes the end of the real data: the worker then releases every
buffered session, exactly as a replay of the same file does.
"""

from __future__ import annotations

import io
from pathlib import Path

import orjson
from aiokafka.partitioner import DefaultPartitioner

from app.replay import build_replayer, feed_file
from app.settings import Settings
from app.simulate import iter_records

SENTINEL_AGENT = "zz-sentinel"


def sentinel_records(partitions: int, after_ns: int) -> list[dict]:
    part, out, i = DefaultPartitioner(), {}, 0
    while len(out) < partitions:
        sid = f"sentinel-{i}"
        p = part(sid.encode(), list(range(partitions)), list(range(partitions)))
        out.setdefault(p, sid)
        i += 1
    t = after_ns + 3600 * 10**9
    return [{"trace_id": sid, "span_id": "root", "session_id": sid, "agent": SENTINEL_AGENT,
             "operation": "invoke_agent", "session_end": True,
             "start_time_unix_nano": t, "end_time_unix_nano": t + 1} for sid in out.values()]


def workload_file(path: Path, *, scenario: str, seed: int, sessions: int, partitions: int) -> Path:
    records = list(iter_records(scenario, seed=seed, sessions=sessions))
    last = max(r["end_time_unix_nano"] for r in records)
    with open(path, "wb") as fh:
        for rec in records + sentinel_records(partitions, last):
            fh.write(orjson.dumps(rec) + b"\n")
    return path


def keyed_lines(path: Path) -> list[tuple[bytes | None, bytes]]:
    """(key, value) per line: the session id when the line parses, else no key."""
    out = []
    for line in path.read_bytes().splitlines():
        try:
            key = str(orjson.loads(line)["session_id"]).encode()
        except (orjson.JSONDecodeError, KeyError, TypeError):
            key = None
        out.append((key, line))
    return out


def replay_alerts(settings: Settings, path: Path, *, flush: bool = False) -> list[dict]:
    """Alerts of an offline replay of ``path`` with the worker's settings."""
    buf = io.BytesIO()
    replayer = build_replayer(settings, alerts_fh=buf)
    feed_file(replayer, path)
    replayer.finish(flush=flush)
    return [orjson.loads(line) for line in buf.getvalue().splitlines()]
