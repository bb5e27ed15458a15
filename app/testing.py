"""Helpers to drive a real ``loadshape worker`` subprocess and Kafka topics, for the integration
tests and the benchmarks only (nothing in the product imports this module).

* :class:`WorkerProcess`: the worker as a subprocess configured through ``LOADSHAPE_*``
  variables (:func:`settings_env`), its log in a file, its ``/metrics`` on a port of its own;
* :func:`isolated_settings`: topics and app id unique to one run, the topics created;
* :func:`produce` / :func:`read_topic`: write (key, value) records, read records back;
* :func:`scrape_metrics` / :func:`parse_metrics`: a ``/metrics`` page as {name: value}.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from app.settings import TOPIC_FIELDS, Settings

# The settings a worker subprocess gets from its parent's Settings (every other field: its
# default or the parent's environment, e.g. the SASL variables a test sets itself).
ENV_FIELDS = ("bootstrap_servers", "kafka_port", "app_id", "state_dir", *TOPIC_FIELDS,
              "spans_partitions", "sessions_partitions", "reorder_lateness_s",
              "session_idle_timeout_s", "source_idle_s", "baseline_sessions", "otlp_encoding",
              "assumptions_file", "policy_file", "recalibration_key", "recalibration_mode")

READY_LINE = b"Worker]: Ready"  # Faust logs it once assignment and recovery are done


def settings_env(settings: Settings) -> dict[str, str]:
    """``LOADSHAPE_*`` variables for the :data:`ENV_FIELDS` of ``settings`` (secrets unmasked).

    >>> env = settings_env(Settings(kafka_port=19092, recalibration_key="k"))
    >>> env["LOADSHAPE_BOOTSTRAP_SERVERS"], env["LOADSHAPE_RECALIBRATION_KEY"]
    ('127.0.0.1:19092', 'k')
    >>> "LOADSHAPE_POLICY_FILE" in env  # None: not set
    False
    """
    env = {}
    for name in ENV_FIELDS:
        value = getattr(settings, name)
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"LOADSHAPE_{name.upper()}"] = str(value)
    return env


def isolated_settings(base: Settings, app_prefix: str, **update) -> Settings:
    """``base`` with topics and app id unique to one run, the topics created."""
    from app.broker.topics import ensure_topics

    settings = base.isolated(uuid.uuid4().hex[:8], app_prefix, **update)
    asyncio.run(ensure_topics(settings))
    return settings


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- /metrics ----------------------------------------------------------------------------------

def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {name: value summed over label sets}.

    >>> parse_metrics('# HELP x\\nx_total{a="1"} 2.0\\nx_total{a="2"} 3.0\\ny 1e3\\n')
    {'x_total': 5.0, 'y': 1000.0}
    """
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out


def scrape_metrics(port: int) -> dict[str, float]:
    """The /metrics of 127.0.0.1:``port`` as :func:`parse_metrics` reads it; {} if it does not
    answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    return parse_metrics(text)


# --- the worker process ------------------------------------------------------------------------

@dataclass
class WorkerProcess:
    """``loadshape worker`` as a subprocess (own process group); its log goes to ``log_path``,
    its /metrics to ``metrics_port`` (a free port by default; 0 serves none)."""

    settings: Settings
    log_path: Path
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        env = {**os.environ, **settings_env(self.settings)}
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "worker", "--loglevel", "info",
             "--metrics-port", str(self.metrics_port)],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def ready(self) -> bool:
        """Faust has reported 'Ready' in the log (assignment done, recovery finished)."""
        return READY_LINE in self.log_path.read_bytes()

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited {self.proc.returncode}:\n{self.log_tail()}")
            if self.ready():
                return
            time.sleep(0.1)
        raise TimeoutError(f"worker not ready in {timeout}s:\n{self.log_tail()}")

    def metrics(self) -> dict[str, float]:
        """Its /metrics summed over labels; {} while it does not answer."""
        return scrape_metrics(self.metrics_port)

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` s; nothing if it is not running."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


# --- topics ------------------------------------------------------------------------------------

Record = tuple[bytes | None, bytes]  # (key, value)


async def _produce(settings: Settings, topic: str, records: Iterable[Record]) -> None:
    from aiokafka import AIOKafkaProducer

    from app.broker.client_config import aiokafka_kwargs

    producer = AIOKafkaProducer(linger_ms=20, max_batch_size=1 << 20, max_request_size=8 << 20,
                                acks=1, **aiokafka_kwargs(settings))
    await producer.start()
    try:
        acks = []
        for i, (key, value) in enumerate(records):
            acks.append(await producer.send(topic, key=key, value=value))
            if i % 20_000 == 0:  # bounds the pending futures on large workloads
                await asyncio.gather(*acks)
                acks = []
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


def produce(settings: Settings, topic: str, records: Iterable[Record]) -> float:
    """Send every (key, value) and wait until each is acknowledged; returns seconds taken."""
    t0 = time.perf_counter()
    asyncio.run(_produce(settings, topic, records))
    return time.perf_counter() - t0


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


def read_topic(settings: Settings, topic: str, *,
               until: Callable[[list[dict]], bool] = lambda records: False,
               timeout: float = 30.0) -> list[dict]:
    """Records of ``topic`` from the beginning as {key, value (JSON-decoded), partition}, until
    ``until(records)`` holds or ``timeout`` s have passed."""
    return asyncio.run(_read_topic(settings, topic, until=until, timeout=timeout))
