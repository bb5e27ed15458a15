"""Shared pieces of the benchmarks: machine facts, a private broker, workloads, worker progress.

The worker process itself and producing to Kafka are ``app.testing`` (shared with the tests).

Every benchmark that needs Kafka uses its own broker instance on ``LOADSHAPE_BENCH_KAFKA_PORT``
(default 28800, 127.0.0.1 only), wiped before and stopped after, so it never touches a
developer's or the test suite's broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import orjson

from app.settings import PROJECT_ROOT, Settings
from app.testing import WorkerProcess

# Below the Linux ephemeral range (32768-60999), where a reconnecting client can hold the port.
BENCH_PORT = int(os.environ.get("LOADSHAPE_BENCH_KAFKA_PORT", "28800"))


# --- machine ---------------------------------------------------------------------------------

def _cmd(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.rstrip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def kafka_version() -> str:
    pom = (PROJECT_ROOT / "tools" / "kafka" / "pom.xml").read_text()
    found = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom) or re.search(
        r"<artifactId>kafka_[\d.]+</artifactId>\s*<version>([^<$]+)</version>", pom)
    return found.group(1) if found else "?"


def machine() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = _cmd(["free", "-h"]).splitlines()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": _cmd(["nproc"]),
        "cpu": cpu,
        "memory": mem[1].split()[1] if len(mem) > 1 else "?",
        "free -h": "\n".join(mem),
        "os": platform.platform(),
        "python": platform.python_version(),
        "faust-streaming": _version("faust-streaming"),
        "aiokafka": _version("aiokafka"),
        "river": _version("river"),
        "pydantic": _version("pydantic"),
        "orjson": _version("orjson"),
        "kafka": kafka_version(),
        "java": (_cmd_err(["java", "-version"]).splitlines() or ["?"])[0],
    }


def _cmd_err(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stderr.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


# --- broker ----------------------------------------------------------------------------------

def broker_settings(port: int = BENCH_PORT, **over) -> Settings:
    return Settings(kafka_port=port, bootstrap_servers=f"127.0.0.1:{port}", **over)


@contextlib.contextmanager
def broker(port: int = BENCH_PORT, **over) -> Iterator[Settings]:
    """A fresh single-node broker on ``port`` for the duration of the block."""
    from app.broker import manager
    from app.broker.topics import ensure_topics

    settings = broker_settings(port, **over)
    manager.wipe(settings)
    manager.up(settings)
    try:
        asyncio.run(ensure_topics(settings))
        yield settings
    finally:
        manager.wipe(settings)


def fresh(settings: Settings, tag: str, workdir: Path, **over) -> Settings:
    """Settings with topics, app id and state dir unique to one measurement (topics created)."""
    from app.broker.topics import ensure_topics

    suffix = f"{tag}-{uuid.uuid4().hex[:6]}"
    out = settings.isolated(suffix, "bench", state_dir=workdir / f"state-{suffix}", **over)
    asyncio.run(ensure_topics(out))
    return out


# --- workloads -------------------------------------------------------------------------------

def spans_file(path: Path, *, scenario: str = "dev-to-support", sessions: int, seed: int = 7,
               sentinels: int = 0) -> Path:
    """A simulated workload as SpanEvent JSON lines (cached: same arguments, same file).

    ``sentinels`` > 0 appends one far-future single-span session per span partition so a
    worker releases everything it buffered (as in the pipeline tests)."""
    if path.exists():
        return path
    from app.simulate import iter_records

    last = 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        for rec in iter_records(scenario, seed=seed, sessions=sessions):
            last = max(last, rec["end_time_unix_nano"])
            fh.write(orjson.dumps(rec) + b"\n")
        if sentinels:
            for rec in sentinel_records(sentinels, last):
                fh.write(orjson.dumps(rec) + b"\n")
    tmp.rename(path)
    return path


def sentinel_records(partitions: int, after_ns: int) -> list[dict]:
    from aiokafka.partitioner import DefaultPartitioner

    part, out, i = DefaultPartitioner(), {}, 0
    while len(out) < partitions:
        sid = f"sentinel-{i}"
        out.setdefault(part(sid.encode(), list(range(partitions)), list(range(partitions))), sid)
        i += 1
    t = after_ns + 3600 * 10**9
    return [{"trace_id": sid, "span_id": "root", "session_id": sid, "agent": "zz-sentinel",
             "operation": "invoke_agent", "session_end": True,
             "start_time_unix_nano": t, "end_time_unix_nano": t + 1} for sid in out.values()]


def keyed_records(path: Path) -> list[tuple[bytes, bytes]]:
    out = []
    for line in path.read_bytes().splitlines():
        if line:
            out.append((orjson.loads(line)["session_id"].encode(), line))
    return out


# --- worker process --------------------------------------------------------------------------

def spans_done(m: dict[str, float]) -> float:
    return m.get("loadshape_spans_processed_total", 0.0)


def sessions_released(m: dict[str, float]) -> float:
    """Sessions stage 2 has folded (every session has a fan-out value)."""
    return m.get("loadshape_session_fanout_count", 0.0)


def wait_counts(workers: list[WorkerProcess], *, spans: int, timeout: float, settle: float = 3.0,
                poll: float = 0.1) -> dict[str, float]:
    """Poll until the workers together processed ``spans`` and stage 2, having released
    sessions, stopped releasing.

    Returns perf_counter times of the first processed span, of the last span and of the last
    stage-2 release, with the counts. (Sessions still waiting for a watermark stay buffered.)"""
    first = last_span = last_release = None
    first_spans, first_wall = 0.0, 0.0
    q_prev = -1.0
    deadline = time.monotonic() + timeout
    s = q = 0.0
    while time.monotonic() < deadline:
        ms = [w.metrics() for w in workers]
        s = sum(spans_done(m) for m in ms)
        q = sum(sessions_released(m) for m in ms)
        now = time.perf_counter()
        if first is None and s > 0:
            first, first_spans, first_wall = now, s, time.time()
        if last_span is None and s >= spans:
            last_span = now
        if q != q_prev:
            q_prev, last_release = q, now
        # done: every span folded, and stage 2 released something and then nothing for
        # ``settle`` s (a stage 2 that has not started yet is not done)
        if last_span is not None and q > 0 and now - last_release >= settle:
            return {"first": first, "first_spans": first_spans, "first_wall": first_wall,
                    "last_span": last_span, "done": max(last_span, last_release),
                    "spans": s, "sessions": q}
        for w in workers:
            if w.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {w.log_tail()}")
        time.sleep(poll)
    raise TimeoutError(f"not done in {timeout}s: spans {s}/{spans}, sessions {q}")


def cpu_seconds(pid: int) -> float:
    """user+system CPU seconds of a process (and its reaped children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick


def broker_pid(settings: Settings) -> int | None:
    from app.broker import manager

    return manager.read_pid(manager.BrokerPaths(Path(settings.kafka_home), settings.kafka_port))


# --- reporting -------------------------------------------------------------------------------

@dataclass
class Row:
    bench: str
    measure: str
    value: str
    goal: str = ""
    verdict: str = ""
    note: str = ""


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "MISSED")


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}"
