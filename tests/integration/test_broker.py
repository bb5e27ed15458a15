"""`loadshape kafka up` twice then `down`: one broker, then none, no stray process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.broker import manager
from app.settings import Settings

PORT = int(os.environ.get("LOADSHAPE_TEST_KAFKA_PORT2", "39192"))


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOADSHAPE_KAFKA_PORT": str(PORT), "LOADSHAPE_BOOTSTRAP_SERVERS": ""}
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True,
                          env=env, timeout=180)


def _brokers_on_port() -> list[str]:
    out = subprocess.run(["pgrep", "-af", "kafka.Kafka"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if f"instances/{PORT}/" in line]


@pytest.fixture
def clean_port():
    settings = Settings(kafka_port=PORT)
    manager.wipe(settings)
    yield
    manager.wipe(settings)


def test_up_twice_then_down_leaves_no_process(clean_port):
    first = _cli("kafka", "up")
    assert first.returncode == 0, first.stderr
    assert "started pid" in first.stdout
    assert "topic routing.recalibrations: created" in first.stdout
    second = _cli("kafka", "up")
    assert second.returncode == 0, second.stderr
    assert "already running" in second.stdout
    assert "topic agent.spans: exists" in second.stdout
    assert len(_brokers_on_port()) == 1
    assert _cli("kafka", "status").returncode == 0
    down = _cli("kafka", "down")
    assert down.returncode == 0 and "stopped broker pid" in down.stdout
    assert _brokers_on_port() == []
    assert _cli("kafka", "status").returncode == 1
    assert "no broker was running" in _cli("kafka", "down").stdout


def test_missing_java_is_one_clear_sentence(clean_port, tmp_path: Path):
    env = {**os.environ, "PATH": str(tmp_path), "LOADSHAPE_KAFKA_PORT": str(PORT)}
    proc = subprocess.run([sys.executable, "-m", "app", "kafka", "up"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("kafka: Java 17 or newer is required")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
