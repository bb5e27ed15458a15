"""Run `loadshape worker` as a real subprocess against the test broker, and read topics."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson

from app.settings import Settings

ENV_FIELDS = ("bootstrap_servers", "kafka_port", "app_id", "state_dir", "topic_spans", "topic_dlq",
              "topic_otlp", "topic_sessions", "topic_alerts", "topic_recalibrations",
              "spans_partitions", "sessions_partitions", "reorder_lateness_s",
              "session_idle_timeout_s", "baseline_sessions", "otlp_encoding", "assumptions_file",
              "policy_file", "recalibration_key", "recalibration_mode")


def isolated_settings(base: Settings, app_prefix: str, **update) -> Settings:
    """``base`` with topics and app id unique to one test, the topics created."""
    from app.broker.topics import ensure_topics

    settings = base.isolated(uuid.uuid4().hex[:8], app_prefix, **update)
    asyncio.run(ensure_topics(settings))
    return settings


def settings_env(settings: Settings) -> dict[str, str]:
    env = {}
    for name in ENV_FIELDS:
        value = getattr(settings, name)
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"LOADSHAPE_{name.upper()}"] = str(value)
    return env


class WorkerProcess:
    """A `loadshape worker` subprocess; logs go to ``log_path``."""

    def __init__(self, settings: Settings, log_path: Path, metrics_port: int = 0) -> None:
        self.settings, self.log_path, self.metrics_port = settings, log_path, metrics_port
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        env = {**os.environ, **settings_env(self.settings)}
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "worker", "--loglevel", "info",
             "--metrics-port", str(self.metrics_port)],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until Faust reports 'Ready' in the log (assignment done, recovery finished)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited {self.proc.returncode}:\n{self.log_tail()}")
            if b"Worker]: Ready" in self.log_path.read_bytes():
                return
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready in {timeout}s:\n{self.log_tail()}")

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


async def _read_topic(settings: Settings, topic: str, *, until, timeout: float) -> list[dict]:
    from aiokafka import AIOKafkaConsumer

    from app.broker.client_config import aiokafka_kwargs

    consumer = AIOKafkaConsumer(topic, auto_offset_reset="earliest", enable_auto_commit=False,
                                **aiokafka_kwargs(settings))
    await consumer.start()
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until(out):
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                out.extend({"key": r.key, "value": orjson.loads(r.value), "partition": r.partition}
                           for r in records)
    finally:
        await consumer.stop()
    return out


def read_topic(settings: Settings, topic: str, *, until=lambda recs: False, timeout: float = 30.0):
    """Records of ``topic`` from the beginning, until ``until(records)`` or the timeout."""
    return asyncio.run(_read_topic(settings, topic, until=until, timeout=timeout))


async def _produce(settings: Settings, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    from app.broker.client_config import aiokafka_kwargs

    producer = AIOKafkaProducer(linger_ms=5, max_batch_size=262144, **aiokafka_kwargs(settings))
    await producer.start()
    try:
        futures = [await producer.send(topic, key=k, value=v) for k, v in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def produce(settings: Settings, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    """Send raw records and wait until every one is acknowledged."""
    asyncio.run(_produce(settings, topic, records))
