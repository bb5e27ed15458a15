"""Kafka SASL/SCRAM end to end: a worker configured only through LOADSHAPE_* variables talks
SCRAM-SHA-512 to a broker whose SASL listener refuses anonymous clients, folds the sessions an
emitter sent over SCRAM-SHA-256, and the password appears nowhere: not in the worker's log (info
level, Faust's start-up banner included), not in ``loadshape settings``. (The built client
configs are unit-tested in tests/unit/test_client_config.py.)"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from pipeline_data import keyed_lines, workload_file
from reliability_data import isolated, session_records

from app.settings import Settings
from app.testing import WorkerProcess, produce, read_topic

pytestmark = pytest.mark.integration


def sasl_env(settings: Settings, mechanism: str) -> dict[str, str]:
    return {"LOADSHAPE_SECURITY_PROTOCOL": settings.security_protocol,
            "LOADSHAPE_SASL_MECHANISM": mechanism,
            "LOADSHAPE_SASL_USERNAME": settings.sasl_username,
            "LOADSHAPE_SASL_PASSWORD": settings.sasl_password.get_secret_value()}


def test_anonymous_client_is_refused_by_the_sasl_listener(kafka_sasl_settings):
    from aiokafka.admin import AIOKafkaAdminClient

    async def connect():
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_sasl_settings.bootstrap_servers,
                                    request_timeout_ms=3000)
        try:
            await admin.start()
            return await asyncio.wait_for(admin.list_topics(), 5)
        finally:
            await admin.close()

    with pytest.raises(Exception):  # noqa: B017 - any refusal will do; a topic list will not
        asyncio.run(connect())


def test_worker_over_scram_and_no_secret_in_logs_or_dumps(kafka_sasl_settings, tmp_path, monkeypatch):
    secret = kafka_sasl_settings.sasl_password.get_secret_value()
    settings = isolated(kafka_sasl_settings, tmp_path)
    data = workload_file(tmp_path / "spans.jsonl", scenario="steady", seed=3, sessions=60,
                         partitions=settings.spans_partitions)
    produce(settings, settings.topic_spans, keyed_lines(data))  # SCRAM-SHA-256
    for name, value in sasl_env(settings, "SCRAM-SHA-512").items():
        monkeypatch.setenv(name, value)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        out = read_topic(settings, settings.topic_sessions, timeout=60,
                         until=lambda recs: len(session_records(recs)) >= 60)
        assert len({s["session_id"] for s in session_records(out)}) >= 60
        assert worker.proc.poll() is None
    finally:
        worker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert "Worker]: Ready" in log and secret not in log
    dump = subprocess.run([sys.executable, "-m", "app", "settings"], capture_output=True, text=True,
                          timeout=60)
    assert dump.returncode == 0 and '"sasl_password": "**********"' in dump.stdout
    assert secret not in dump.stdout + dump.stderr
